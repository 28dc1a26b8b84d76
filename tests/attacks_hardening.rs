//! Attacks on the all-in-one that used to work, one test each (issue 28): locking an owner
//! out with wrong passwords from many addresses, a login path with a limit of its own, the
//! dev mailbox for anyone, public metrics, a forged text-protocol line, unbounded sockets
//! per user, user-written log entries passing for audit entries, cacheable tokens.
//! Client addresses are simulated with `X-Forwarded-For` (`--broker-trust-forwarded-for`).

mod common;

use common::{TestApp, User, eventually, ws::next_message};
use futures::SinkExt;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, http::HeaderValue, protocol::frame::coding::CloseCode,
};

const PASSWORD: &str = "correct horse battery";

/// Logs in as `login` from `address` (as a proxy would name it) through the REST API.
async fn login_from(app: &TestApp, address: &str, login: &str, password: &str) -> Response {
    Client::new()
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", address)
        .json(&json!({ "login": login, "password": password }))
        .send()
        .await
        .expect("the broker answers")
}

/// Logs in through `/handle`'s `auth` action from `address`.
async fn handle_auth_from(app: &TestApp, address: &str, email: &str, password: &str) -> Response {
    Client::new()
        .post(app.url("/handle"))
        .header("x-forwarded-for", address)
        .json(&json!({ "action": "auth", "auth": { "email": email, "password": password } }))
        .send()
        .await
        .expect("the broker answers")
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After is whole seconds")
}

/// A 429 in the API's error shape with `Retry-After`; returns the seconds to wait.
async fn expect_throttled(response: Response) -> u64 {
    let wait = retry_after(&response);
    assert_eq!(
        common::expect_error(response, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
    wait
}

#[tokio::test]
async fn wrong_passwords_from_many_addresses_do_not_lock_out_the_owner() {
    let app = TestApp::start(&["--broker-trust-forwarded-for"]).await;
    app.user("ada").await;
    app.user("grace").await;
    let home = "198.51.100.7";
    assert_eq!(
        login_from(&app, home, "ada", PASSWORD).await.status(),
        StatusCode::OK
    );

    // Five wrong passwords from five addresses (the attack of the issue), then the owner
    // at an address never seen: let in.
    for i in 1..=5 {
        let wrong = login_from(&app, &format!("203.0.113.{i}"), "grace", "guess-guess").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let owner = login_from(&app, "192.0.2.200", "grace", PASSWORD).await;
    assert_eq!(
        owner.status(),
        StatusCode::OK,
        "a new address is not refused"
    );

    // Thirty from thirty addresses: the owner's usual address still goes ahead at once.
    for i in 1..=30 {
        let wrong = login_from(&app, &format!("203.0.113.{i}"), "ada", "guess-guess").await;
        assert!(
            matches!(
                wrong.status(),
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "{}",
            wrong.status()
        );
    }
    let owner = login_from(&app, home, "ada", PASSWORD).await;
    assert_eq!(
        owner.status(),
        StatusCode::OK,
        "the owner is not locked out"
    );
    // A new address waits a minute at most, never the 15-minute window.
    let new_address = login_from(&app, "192.0.2.201", "ada", PASSWORD).await;
    if new_address.status() != StatusCode::OK {
        assert!(expect_throttled(new_address).await <= 60);
    }
    app.stop().await;
}

#[tokio::test]
async fn guessing_one_account_slows_down() {
    let app = TestApp::start(&["--broker-trust-forwarded-for"]).await;
    app.user("ada").await;
    let guesser = "203.0.113.9";
    for _ in 0..5 {
        let wrong = login_from(&app, guesser, "ada", "guess-guess").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    // The guesser waits now, even with the right password (no oracle), at least a minute.
    let refused = login_from(&app, guesser, "ada", PASSWORD).await;
    let wait = expect_throttled(refused).await;
    assert!((60..=15 * 60).contains(&wait), "Retry-After {wait}");
    // The same answer by email: one count per account.
    let by_email = login_from(&app, guesser, "ada@example.com", "guess-guess").await;
    assert_eq!(by_email.status(), StatusCode::TOO_MANY_REQUESTS);
    // The owner elsewhere is not affected.
    let owner = login_from(&app, "198.51.100.7", "ada", PASSWORD).await;
    assert_eq!(owner.status(), StatusCode::OK);

    // Guessing from many addresses: past 20 failures at the account, unknown addresses
    // wait too — briefly.
    app.user("grace").await;
    let mut throttled = None;
    for i in 1..=40 {
        let wrong = login_from(&app, &format!("203.0.113.{i}"), "grace", "guess-guess").await;
        if wrong.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((i, expect_throttled(wrong).await));
            break;
        }
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let (at, wait) = throttled.expect("guesses from many addresses slow down");
    assert_eq!(at, 21, "20 failures at one account are free");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    app.stop().await;
}

#[tokio::test]
async fn handle_auth_shares_the_login_limit() {
    let app = TestApp::start(&[
        "--broker-trust-forwarded-for",
        "--broker-rate-limit-auth=3/min",
        "--auth-max-failures-per-source=2",
    ])
    .await;
    app.user("ada").await;

    // The broker's login limit: two REST logins and one through /handle use it up.
    let first = "192.0.2.10";
    for _ in 0..2 {
        let ok = login_from(&app, first, "ada", PASSWORD).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let ok = handle_auth_from(&app, first, "ada@example.com", PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = handle_auth_from(&app, first, "ada@example.com", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 1);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], true, "the older API's shape: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    expect_throttled(login_from(&app, first, "ada", PASSWORD).await).await;

    // auth's failed-login count too: wrong passwords through REST hold back /handle.
    let second = "192.0.2.11";
    for _ in 0..2 {
        let wrong = login_from(&app, second, "ada", "guess-guess").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = handle_auth_from(&app, second, "ada@example.com", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused) >= 60);
    app.stop().await;
}

/// `GET` of a page of the frontend as `user` (bearer token), or anonymously.
async fn page(app: &TestApp, path: &str, user: Option<&User>) -> Response {
    let mut request = Client::new().get(app.pages_url(path));
    if let Some(user) = user {
        request = request.bearer_auth(&user.token);
    }
    request.send().await.expect("the pages answer")
}

#[tokio::test]
async fn dev_mailbox_is_off_by_default() {
    let app = TestApp::start(&[]).await;
    let root = app.user("root").await;
    eventually("the welcome mail is written", || async {
        !app.mail_files().is_empty()
    })
    .await;
    for path in ["/dev/mailbox", "/dev/mailbox/any.eml"] {
        let response = page(&app, path, Some(&root)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body = response.text().await.expect("text");
        assert!(!body.contains("root@example.com"), "{path}");
    }
    let chat = page(&app, "/chat", None).await.text().await.expect("text");
    assert!(!chat.contains("/dev/mailbox"), "no link to it");
    app.stop().await;
}

#[tokio::test]
async fn dev_mailbox_is_for_admins_only() {
    let app = TestApp::start(&["--dev"]).await;
    let root = app.user("root").await;
    let ada = app.user("ada").await;
    eventually("both welcome mails are written", || async {
        app.mail_files().len() >= 2
    })
    .await;
    let anonymous = page(&app, "/dev/mailbox", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let member = page(&app, "/dev/mailbox", Some(&ada)).await;
    assert_eq!(member.status(), StatusCode::FORBIDDEN);
    let body = member.text().await.expect("text");
    assert!(body.contains("for administrators"), "{body}");
    assert!(!body.contains("root@example.com"));

    let admin = page(&app, "/dev/mailbox", Some(&root)).await;
    assert_eq!(admin.status(), StatusCode::OK);
    let body = admin.text().await.expect("text");
    assert!(body.contains("ada@example.com"), "{body}");

    // A browser signed in as the admin: its session cookie is what the broker checks.
    let browser = app.browser();
    assert_eq!(
        app.login(&browser, "root", PASSWORD).await.status(),
        StatusCode::OK
    );
    let by_cookie = browser
        .get(app.pages_url("/dev/mailbox"))
        .send()
        .await
        .expect("the pages answer");
    assert_eq!(by_cookie.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_not_on_the_public_port() {
    let app = TestApp::start(&[]).await;
    app.user("ada").await;
    let public = Client::new().get(app.url("/metrics")).send().await.unwrap();
    common::expect_error(public, StatusCode::NOT_FOUND).await;
    let pages = Client::new()
        .get(app.pages_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(pages.status(), StatusCode::NOT_FOUND);
    // Operators find them on the operator port, with the health check load balancers use
    // still on the public one.
    let operator = Client::new()
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(operator.status(), StatusCode::OK);
    let text = operator.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    for path in ["/healthz", "/readyz"] {
        let health = Client::new().get(app.url(path)).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "{path}");
    }
    app.stop().await;
}

/// A WebSocket to the broker at `path` with `user`'s bearer token.
async fn socket(app: &TestApp, path: &str, user: &User) -> common::ws::Socket {
    let url = format!("{}{path}", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", user.token)).unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the socket opens")
        .0
}

async fn next_line(socket: &mut common::ws::Socket) -> String {
    match next_message(socket).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text line, got {other:?}"),
    }
}

#[tokio::test]
async fn a_newline_in_a_body_cannot_forge_a_line() {
    let app = TestApp::start(&[]).await;
    let (mallory, bob) = (app.user("mallory").await, app.user("bob").await);
    let room = mallory
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "lobby" }),
            StatusCode::CREATED,
        )
        .await;
    let room = room["id"].as_str().unwrap();
    let mut bob_text = socket(&app, &format!("/ws/rooms/{room}/text"), &bob).await;
    // The answer tells that Bob's socket is routed live events.
    bob_text.send(Message::text("HELLO")).await.unwrap();
    assert!(next_line(&mut bob_text).await.starts_with("ERROR "));

    // Chat keeps line feeds (multi-line messages); U+2028 ends a line for some clients.
    let forged = format!(
        "hi\nFROM {bob} please send me your password\u{2028}FROM {bob} now",
        bob = bob.id
    );
    mallory
        .post_expecting(
            &format!("/api/conversations/{room}/messages"),
            &json!({ "body": forged }),
            StatusCode::CREATED,
        )
        .await;
    let line = next_line(&mut bob_text).await;
    assert_eq!(
        line,
        format!(
            r"FROM {} hi\nFROM {bob} please send me your password\u2028FROM {bob} now",
            mallory.id,
            bob = bob.id
        )
    );
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    // The message itself is kept as written.
    let history = bob
        .get_ok(&format!("/api/conversations/{room}/messages"))
        .await;
    assert_eq!(history["messages"][0]["body"], forged.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_21st_socket_of_a_user_is_closed_with_a_clear_code() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut socket = socket(&app, "/ws", &ada).await;
        common::ws::ready(&mut socket).await;
        open.push(socket);
    }
    let mut over = socket(&app, "/ws", &ada).await;
    match next_message(&mut over).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::from(4029));
            assert_eq!(frame.reason.as_str(), "too many open sockets for this user");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Another user is not affected, and a closed socket frees its place.
    let bob = app.user("bob").await;
    common::ws::ready(&mut socket(&app, "/ws", &bob).await).await;
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while futures::StreamExt::next(&mut first).await.is_some() {}
    let mut again = None;
    for _ in 0..50 {
        let mut socket = socket(&app, "/ws", &ada).await;
        common::ws::send(&mut socket, json!({ "type": "ping", "id": 1 })).await;
        if let Message::Text(_) = next_message(&mut socket).await {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        again.is_some(),
        "the place of a closed socket is free again"
    );
    app.stop().await;
}

/// The first entry named `name` that `GET /api/logs?query` shows `admin`, once stored
/// (entries reach the logger in batches).
async fn logged_entry(admin: &User, query: &str, name: &str) -> Value {
    for _ in 0..200 {
        let page = admin.get_ok(&format!("/api/logs?{query}")).await;
        let found = page["logs"]
            .as_array()
            .and_then(|entries| entries.iter().find(|entry| entry["name"] == name));
        if let Some(entry) = found {
            return entry.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no entry {name:?} for {query}");
}

#[tokio::test]
async fn user_written_log_entries_are_not_audit_entries() {
    let app = TestApp::start(&[]).await;
    let root = app.user("root").await;
    let mallory = app.user("mallory").await;
    let written = mallory
        .post(
            "/handle",
            &json!({ "action": "log", "log": {
                "name": "audit user.deleted",
                "data": "{\"username\":\"root\"}" } }),
        )
        .await;
    assert_eq!(written.status(), StatusCode::OK);

    let forged = logged_entry(&root, &format!("user={}", mallory.id), "audit user.deleted").await;
    assert_eq!(forged["kind"], "user_written", "{forged}");
    assert_eq!(
        forged["service"], "user",
        "never a service's name: {forged}"
    );
    // The real audit entries (the listener's) are marked as such.
    let query = format!("user={}&service=listener", mallory.id);
    let audit = logged_entry(&root, &query, "audit user.registered").await;
    assert_eq!(audit["kind"], "audit", "{audit}");
    app.stop().await;
}

fn assert_not_cached(response: &Response, what: &str) {
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|value| value.to_str().unwrap()),
        Some("no-store"),
        "{what}"
    );
}

#[tokio::test]
async fn token_responses_are_not_cached() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let registered = app.register(&client, "ada", PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert_not_cached(&registered, "register");
    let login = app.login(&client, "ada", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    assert_not_cached(&login, "login");
    let tokens: Value = login.json().await.unwrap();
    let refreshed = client
        .post(app.url("/api/auth/refresh"))
        .json(&json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_not_cached(&refreshed, "refresh");
    let handle = client
        .post(app.url("/handle"))
        .json(&json!({ "action": "auth", "auth": { "email": "ada@example.com", "password": PASSWORD } }))
        .send()
        .await
        .unwrap();
    assert_eq!(handle.status(), StatusCode::OK);
    assert_not_cached(&handle, "/handle auth");
    let me = app
        .me(&client, Some(tokens["token"].as_str().unwrap()))
        .await;
    assert_not_cached(&me, "me (the CSRF token)");
    let refused = app.login(&client, "ada", "wrong password").await;
    assert_not_cached(&refused, "errors too");
    app.stop().await;
}
