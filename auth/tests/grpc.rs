//! Auth as its callers see it: the real service on port 0 over a fresh SQLite database,
//! driven through the generated gRPC client, one service per test.

use auth::keys::SigningKey;
use clap::Parser;
use platform::{
    grpc::TracedChannel,
    shutdown::Shutdown,
    token::{AUDIENCE, Claims, ISSUER, TokenVerifier},
};
use proto::auth::v1::{self as pb, auth_client::AuthClient};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";

/// Auth's settings, read the way its binary reads them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    auth: auth::Config,
}

/// The service keys of the test's installation (its data directory's).
fn service_keys(data_dir: &std::path::Path) -> platform::service_auth::ServiceKeys {
    platform::testing::service_keys(&data_dir.join("service-keys"))
}

/// A client calling auth at `addr` as the broker does.
fn broker_client(
    keys: &platform::service_auth::ServiceKeys,
    addr: SocketAddr,
) -> AuthClient<TracedChannel> {
    use platform::service_auth::Service;
    AuthClient::new(platform::testing::channel_as(
        keys,
        Service::Broker,
        Service::Auth,
        &format!("http://{addr}"),
    ))
}

/// A running auth service with a client connected to it.
struct TestAuth {
    client: AuthClient<TracedChannel>,
    addr: SocketAddr,
    shutdown: Shutdown,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    data_dir: PathBuf,
}

impl TestAuth {
    /// Starts auth with its defaults.
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts auth with extra command-line settings, on port 0 and its own data directory.
    async fn start_with(settings: &[&str]) -> Self {
        let data_dir =
            std::env::temp_dir().join(format!("microchat-auth-grpc-{}", Uuid::new_v4().simple()));
        Self::start_in(data_dir, settings).await
    }

    /// Starts another replica of this auth: same database, same signing key.
    async fn replica(&self) -> Self {
        Self::start_in(self.data_dir.clone(), &[]).await
    }

    async fn start_in(data_dir: PathBuf, settings: &[&str]) -> Self {
        let url = platform::settings::sqlite_url(&data_dir, "auth.db");
        let args = [
            "test",
            "--auth-listen",
            "127.0.0.1:0",
            "--auth-database-url",
            &url,
        ];
        let cli =
            Cli::try_parse_from(args.iter().chain(settings)).expect("test settings are valid");
        let keys = service_keys(&data_dir);
        let auth = auth::AuthService::build(&cli.auth, &data_dir, &keys)
            .await
            .expect("auth starts");
        let addr = auth.local_addr();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(auth.run(shutdown.clone()));
        let client = broker_client(&keys, addr);
        Self {
            client,
            addr,
            shutdown,
            server: Some(server),
            data_dir,
        }
    }

    /// A second, independent connection.
    fn another_client(&self) -> AuthClient<TracedChannel> {
        broker_client(&service_keys(&self.data_dir), self.addr)
    }

    async fn register(&self, username: &str) -> pb::User {
        let request = pb::RegisterRequest {
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            password: PASSWORD.to_owned(),
        };
        let response = self
            .client
            .clone()
            .register(request)
            .await
            .expect("registration succeeds");
        response
            .into_inner()
            .user
            .expect("a registered user comes back")
    }

    async fn login(&self, login: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        let request = pb::LoginRequest {
            login: login.to_owned(),
            password: password.to_owned(),
            client: None,
        };
        self.client
            .clone()
            .login(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers `username` and logs in.
    async fn logged_in(&self, username: &str) -> pb::LoginResponse {
        self.register(username).await;
        self.login(username, PASSWORD)
            .await
            .expect("the right password logs in")
    }

    async fn verify(&self, access_token: &str) -> Result<pb::VerifyTokenResponse, Status> {
        let request = pb::VerifyTokenRequest {
            access_token: access_token.to_owned(),
        };
        self.client
            .clone()
            .verify_token(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<pb::LoginResponse, Status> {
        let request = pb::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
            client: None,
        };
        self.client
            .clone()
            .refresh(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn logout(&self, access_token: &str) -> Result<pb::LogoutResponse, Status> {
        let request = pb::LogoutRequest {
            access_token: access_token.to_owned(),
            client: None,
        };
        self.client
            .clone()
            .logout(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Cancels the shutdown token and waits for the server to finish, at most `limit`.
    async fn stop_within(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let server = self.server.take().expect("the server is stopped once");
        tokio::time::timeout(limit, server)
            .await
            .expect("auth stops in time")
            .expect("auth does not panic")
    }
}

impl Drop for TestAuth {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn session_id(issued: &pb::LoginResponse) -> &str {
    &issued
        .session
        .as_ref()
        .expect("a login names its session")
        .id
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, Status>, code: Code) -> Status {
    let status = result.expect_err("the call is refused");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The next message of a revocation stream, or a failure after a few seconds.
async fn next_batch(stream: &mut tonic::Streaming<pb::RevocationBatch>) -> pb::RevocationBatch {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a batch arrives in time")
        .expect("the stream is healthy")
        .expect("the stream is still open")
}

fn revoked_ids(batch: &pb::RevocationBatch) -> Vec<&str> {
    batch
        .sessions
        .iter()
        .map(|session| session.session_id.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Accounts

#[tokio::test]
async fn registered_user_logs_in_and_the_token_names_them_and_the_session() {
    let auth = TestAuth::start().await;
    let user = auth.register("Ada").await;
    assert_eq!(user.username, "ada");
    assert_eq!(user.email, "ada@example.com");

    let issued = auth.login("ADA", PASSWORD).await.unwrap();
    assert_eq!(issued.user.as_ref(), Some(&user));
    assert!(!issued.refresh_token.is_empty() && !issued.csrf_token.is_empty());

    let verified = auth.verify(&issued.access_token).await.unwrap();
    let verified_user = verified.user.unwrap();
    assert_eq!(
        (verified_user.id, verified_user.username),
        (user.id.clone(), "ada".to_owned())
    );
    let session = verified.session.unwrap();
    assert_eq!(session.id, session_id(&issued));
    assert_eq!(session.user_id, user.id);
}

#[tokio::test]
async fn user_logs_in_with_their_email_in_any_case() {
    let auth = TestAuth::start().await;
    let user = auth.register("ada").await;
    let issued = auth.login("  ADA@Example.com ", PASSWORD).await.unwrap();
    assert_eq!(issued.user.unwrap().id, user.id);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let auth = TestAuth::start().await;
    auth.register("ada").await;
    let wrong_password = assert_refused(
        auth.login("ada", "not the password").await,
        Code::Unauthenticated,
    );
    let unknown_user = assert_refused(auth.login("grace", PASSWORD).await, Code::Unauthenticated);
    let unknown_email = assert_refused(
        auth.login("grace@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
    let not_a_name = assert_refused(auth.login("x", PASSWORD).await, Code::Unauthenticated);
    for other in [&unknown_user, &unknown_email, &not_a_name] {
        assert_eq!(other.message(), wrong_password.message());
    }
}

#[tokio::test]
async fn invalid_usernames_are_refused() {
    let auth = TestAuth::start().await;
    let ten_kilobytes = "a".repeat(10_000);
    for username in [
        ten_kilobytes.as_str(),
        "\u{0430}dmin",
        "ad min",
        "ad\u{200B}min",
        "ab",
        "",
    ] {
        let request = pb::RegisterRequest {
            username: username.to_owned(),
            email: "someone@example.com".to_owned(),
            password: PASSWORD.to_owned(),
        };
        let status = assert_refused(
            auth.client.clone().register(request).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().starts_with("username:"),
            "{username:?}: {status:?}"
        );
    }
    let listed = auth
        .client
        .clone()
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();
    assert!(
        listed.into_inner().users.is_empty(),
        "nothing was registered"
    );
}

#[tokio::test]
async fn username_taken_in_another_case_is_refused() {
    let auth = TestAuth::start().await;
    auth.register("ada").await;
    let request = pb::RegisterRequest {
        username: "ADA".to_owned(),
        email: "another@example.com".to_owned(),
        password: PASSWORD.to_owned(),
    };
    let status = assert_refused(
        auth.client.clone().register(request).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("username"), "{status:?}");
    // The first account still logs in, and no login for the second address exists.
    auth.login("ada", PASSWORD).await.unwrap();
    assert_refused(
        auth.login("another@example.com", PASSWORD).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn users_are_listed_once_each_in_username_order() {
    let auth = TestAuth::start().await;
    let mut names = vec!["mallory", "bob", "alice", "eve", "carol", "dave", "trent"];
    for name in &names {
        auth.register(name).await;
    }
    names.sort_unstable();

    let mut listed = Vec::new();
    let mut page_token = String::new();
    for _ in 0..names.len() {
        let request = pb::ListUsersRequest {
            page_size: 3,
            page_token: page_token.clone(),
        };
        let page = auth
            .client
            .clone()
            .list_users(request)
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 3);
        listed.extend(page.users.into_iter().map(|user| user.username));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, names);
}

// ---------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    let logged_out = auth.logout(&issued.access_token).await.unwrap();
    assert_eq!(logged_out.session.unwrap().id, session_id(&issued));

    let status = assert_refused(
        auth.verify(&issued.access_token).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("ended"), "{status:?}");
    assert_refused(
        auth.logout(&issued.access_token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn logout_ends_every_token_of_the_session() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    let refreshed = auth.refresh(&issued.refresh_token).await.unwrap();
    auth.logout(&refreshed.access_token).await.unwrap();
    assert_refused(
        auth.verify(&issued.access_token).await,
        Code::Unauthenticated,
    );
    assert_refused(
        auth.verify(&refreshed.access_token).await,
        Code::Unauthenticated,
    );
    assert_refused(
        auth.refresh(&refreshed.refresh_token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn logout_on_one_replica_reaches_the_others_promptly() {
    let first = TestAuth::start().await;
    let second = first.replica().await;
    let issued = first.logged_in("ada").await;
    second
        .verify(&issued.access_token)
        .await
        .expect("replicas trust the same key");

    first.logout(&issued.access_token).await.unwrap();
    // The other replica's refresh reads the database, so it is refused at once...
    assert_refused(
        second.refresh(&issued.refresh_token).await,
        Code::Unauthenticated,
    );
    // ...and its memory-only token check learns of the logout from the feed it polls
    // every half second: within the 1 s that docs/ARCHITECTURE.md promises.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_000);
    while second.verify(&issued.access_token).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn logging_out_one_session_keeps_the_others() {
    let auth = TestAuth::start().await;
    let phone = auth.logged_in("ada").await;
    let laptop = auth.login("ada", PASSWORD).await.unwrap();
    auth.logout(&phone.access_token).await.unwrap();
    assert_eq!(
        auth.verify(&laptop.access_token)
            .await
            .unwrap()
            .session
            .unwrap()
            .id,
        session_id(&laptop)
    );
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;

    let refreshed = auth.refresh(&issued.refresh_token).await.unwrap();
    assert_ne!(refreshed.refresh_token, issued.refresh_token);
    assert_eq!(session_id(&refreshed), session_id(&issued));
    assert_eq!(
        refreshed.csrf_token, issued.csrf_token,
        "the CSRF token belongs to the session"
    );
    let verified = auth.verify(&refreshed.access_token).await.unwrap();
    assert_eq!(verified.user.unwrap().username, "ada");

    // The old refresh token is used up (refused, but within the grace period for a
    // concurrent refresh it does not end the session); the new one works once.
    assert_refused(
        auth.refresh(&issued.refresh_token).await,
        Code::Unauthenticated,
    );
    let again = auth.refresh(&refreshed.refresh_token).await.unwrap();
    assert_refused(
        auth.refresh(&refreshed.refresh_token).await,
        Code::Unauthenticated,
    );
    auth.verify(&again.access_token).await.unwrap();
}

#[tokio::test]
async fn refresh_tokens_are_not_stored_in_the_clear() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    let refreshed = auth.refresh(&issued.refresh_token).await.unwrap();
    // Every byte auth keeps on disk (the database, its write-ahead log, the key file):
    // the secret half of neither refresh token is in it, only their hashes.
    let mut at_rest = Vec::new();
    for entry in std::fs::read_dir(&auth.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            at_rest.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        !at_rest.is_empty(),
        "auth keeps its database in its data directory"
    );
    for token in [&issued.refresh_token, &refreshed.refresh_token] {
        let (_, secret) = token.split_once('.').expect("<session>.<secret>");
        assert!(secret.len() >= 40, "a 32-byte secret: {secret}");
        assert!(
            !at_rest
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "a refresh token's secret is stored in the clear"
        );
    }
}

#[tokio::test]
async fn a_replaced_refresh_token_presented_again_ends_the_session() {
    // No grace period: any reuse of the replaced token counts.
    let auth = TestAuth::start_with(&["--auth-refresh-reuse-grace=0s"]).await;
    let stolen = auth.logged_in("ada").await;
    // The thief refreshes first; then the user's client presents the same token.
    let thief = auth.refresh(&stolen.refresh_token).await.unwrap();
    auth.verify(&thief.access_token).await.unwrap();
    assert_refused(
        auth.refresh(&stolen.refresh_token).await,
        Code::Unauthenticated,
    );
    // The session is over for both: the thief's refresh token and access token too.
    assert_refused(
        auth.refresh(&thief.refresh_token).await,
        Code::Unauthenticated,
    );
    assert!(auth.verify(&thief.access_token).await.is_err());
    // A made-up token of the same session changes nothing more (and is refused).
    let session = thief.refresh_token.split_once('.').unwrap().0.to_owned();
    assert_refused(
        auth.refresh(&format!("{session}.not-a-token")).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn refresh_after_logout_fails() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    auth.logout(&issued.access_token).await.unwrap();
    assert_refused(
        auth.refresh(&issued.refresh_token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn made_up_refresh_tokens_are_refused() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    let (session, _) = issued.refresh_token.split_once('.').unwrap();
    for token in [
        "",
        "garbage",
        &format!("{session}.not-the-secret"),
        &format!("{}.x", Uuid::now_v7().simple()),
    ] {
        assert_refused(auth.refresh(token).await, Code::Unauthenticated);
    }
    auth.refresh(&issued.refresh_token)
        .await
        .expect("the real token still works");
}

// ---------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn published_key_verifies_issued_tokens() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;

    let keys = auth
        .client
        .clone()
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].alg, "EdDSA");

    let verifier = TokenVerifier::new(16);
    verifier
        .set_keys([(keys[0].kid.as_str(), keys[0].x.as_str())])
        .expect("the published key is well-formed");
    let claims = verifier
        .verify(&issued.access_token, chrono::Utc::now().timestamp())
        .unwrap();
    assert_eq!(claims.name, "ada");
    assert_eq!(claims.sid.to_string(), session_id(&issued));
    assert_eq!(claims.csrf, issued.csrf_token);
}

#[tokio::test]
async fn token_signed_by_another_key_is_refused() {
    let auth = TestAuth::start().await;
    let issued = auth.logged_in("ada").await;
    let keys = auth
        .client
        .clone()
        .get_public_keys(pb::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let genuine = TokenVerifier::new(16);
    genuine
        .set_keys([(keys[0].kid.as_str(), keys[0].x.as_str())])
        .unwrap();
    let claims = Claims::clone(
        &genuine
            .verify(&issued.access_token, chrono::Utc::now().timestamp())
            .unwrap(),
    );

    // The same claims, signed by a key auth never had: under its own key id...
    let other_pem = SigningKey::generate_pem();
    let forged = SigningKey::from_pem(&other_pem).unwrap().sign(&claims);
    // ...and under auth's key id.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(keys[0].kid.clone());
    let der = pem::parse(&other_pem).unwrap().into_contents();
    let impostor = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap();

    for token in [forged, impostor] {
        assert_refused(auth.verify(&token).await, Code::Unauthenticated);
        assert_refused(auth.logout(&token).await, Code::Unauthenticated);
    }
    auth.verify(&issued.access_token)
        .await
        .expect("the genuine token still verifies, its session untouched");
}

#[tokio::test]
async fn tokens_with_the_wrong_issuer_audience_or_expiry_are_refused() {
    let pem = SigningKey::generate_pem();
    let auth = TestAuth::start_with(&[&format!("--auth-signing-key={pem}")]).await;
    let issued = auth.logged_in("ada").await;
    // Auth's own key signs these, so only the claims are wrong.
    let key = SigningKey::from_pem(&pem).unwrap();
    let now = chrono::Utc::now().timestamp();
    let genuine = Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: Uuid::try_parse(&issued.user.as_ref().unwrap().id).unwrap(),
        sid: Uuid::try_parse(session_id(&issued)).unwrap(),
        name: "ada".to_owned(),
        email: "ada@example.com".to_owned(),
        iat: now,
        exp: now + 60,
        csrf: issued.csrf_token.clone(),
        role: platform::role::Role::Member,
    };
    auth.verify(&key.sign(&genuine))
        .await
        .expect("the claims themselves are fine");
    let wrong = [
        Claims {
            iss: "someone-else".to_owned(),
            ..genuine.clone()
        },
        Claims {
            aud: "another-app".to_owned(),
            ..genuine.clone()
        },
        Claims {
            iat: now - 120,
            exp: now - 60,
            ..genuine.clone()
        },
    ];
    for claims in wrong {
        assert_refused(auth.verify(&key.sign(&claims)).await, Code::Unauthenticated);
    }
}

// ---------------------------------------------------------------------------------------
// Revocation feed

#[tokio::test]
async fn revocation_watchers_get_a_snapshot_then_each_logout() {
    let auth = TestAuth::start().await;
    let earlier = auth.logged_in("ada").await;
    let later = auth.login("ada", PASSWORD).await.unwrap();
    auth.logout(&earlier.access_token).await.unwrap();

    let mut watcher = auth.another_client();
    let mut stream = watcher
        .watch_revocations(pb::WatchRevocationsRequest {})
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_batch(&mut stream).await;
    assert!(snapshot.snapshot);
    assert_eq!(revoked_ids(&snapshot), [session_id(&earlier)]);

    auth.logout(&later.access_token).await.unwrap();
    let update = next_batch(&mut stream).await;
    assert!(!update.snapshot);
    assert_eq!(revoked_ids(&update), [session_id(&later)]);
    let forget_after = update.sessions[0]
        .forget_after
        .expect("each entry says when it can be forgotten");
    assert!(
        forget_after.seconds > chrono::Utc::now().timestamp(),
        "tokens of the session may still be alive"
    );
}

// ---------------------------------------------------------------------------------------
// Throttling

#[tokio::test]
async fn repeated_failed_logins_are_throttled_even_with_the_right_password() {
    let auth = TestAuth::start_with(&["--auth-max-failures-per-account", "3"]).await;
    auth.register("ada").await;
    for _ in 0..3 {
        assert_refused(
            auth.login("ada", "guess-guess").await,
            Code::Unauthenticated,
        );
    }
    let status = assert_refused(auth.login("ADA", PASSWORD).await, Code::ResourceExhausted);
    let retry_after = status
        .metadata()
        .get("retry-after")
        .expect("the caller is told when to retry");
    let seconds: u64 = retry_after
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after is whole seconds");
    assert!(
        (1..=15 * 60).contains(&seconds),
        "within the failure window: {seconds}"
    );

    // Other accounts are not locked out.
    auth.register("grace").await;
    auth.login("grace", PASSWORD)
        .await
        .expect("another account still logs in");
}

#[tokio::test]
async fn failures_under_the_email_count_against_the_same_account() {
    let auth = TestAuth::start_with(&["--auth-max-failures-per-account", "3"]).await;
    auth.register("ada").await;
    for _ in 0..3 {
        assert_refused(
            auth.login("ada", "guess-guess").await,
            Code::Unauthenticated,
        );
    }
    assert_refused(
        auth.login("ada@example.com", PASSWORD).await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn concurrent_failed_logins_cannot_exceed_the_limit() {
    let auth = TestAuth::start_with(&["--auth-max-failures-per-account", "3"]).await;
    auth.register("ada").await;
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut client = auth.client.clone();
        let request = pb::LoginRequest {
            login: "ada".to_owned(),
            password: format!("guess-{i:04}"),
            client: None,
        };
        guesses.spawn(async move { client.login(request).await.map(|_| ()) });
    }
    let codes = guesses
        .join_all()
        .await
        .into_iter()
        .map(|answer| answer.unwrap_err().code())
        .collect::<Vec<_>>();
    let checked = codes
        .iter()
        .filter(|code| **code == Code::Unauthenticated)
        .count();
    let throttled = codes
        .iter()
        .filter(|code| **code == Code::ResourceExhausted)
        .count();
    assert_eq!((checked, throttled), (3, 17), "{codes:?}");
}

#[tokio::test]
async fn successful_logins_do_not_count_against_the_client_address() {
    let auth = TestAuth::start_with(&["--auth-max-failures-per-ip", "2"]).await;
    auth.register("ada").await;
    for _ in 0..5 {
        auth.login("ada", PASSWORD)
            .await
            .expect("a right password is never a failure");
    }
    for _ in 0..2 {
        assert_refused(auth.login("grace", PASSWORD).await, Code::Unauthenticated);
    }
    assert_refused(auth.login("ada", PASSWORD).await, Code::ResourceExhausted);
}

// ---------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn service_stops_promptly_with_a_revocation_stream_open() {
    let mut auth = TestAuth::start().await;
    let mut watcher = auth.another_client();
    let mut stream = watcher
        .watch_revocations(pb::WatchRevocationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(next_batch(&mut stream).await.snapshot);

    auth.stop_within(Duration::from_secs(5))
        .await
        .expect("auth stops cleanly");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends in time");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no batch after shutdown: {end:?}"
    );
}
