//! Services behind the broker fail and come back; the broker answers clearly meanwhile
//! and recovers without a restart.

mod common;

use common::{
    auth_gate::{AuthGate, VERIFY_TOKEN, WATCH_REVOCATIONS},
    eventually, expect_error, temp_dir,
};
use platform::shutdown::Shutdown;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;

type Running = (Shutdown, JoinHandle<anyhow::Result<()>>);

/// auth and a broker in this process, auth stoppable and startable again on its address,
/// with `ada` signed up.
struct AuthAndBroker {
    dir: PathBuf,
    config: microchat::Config,
    keys: platform::service_auth::ServiceKeys,
    auth_addr: SocketAddr,
    auth: Option<Running>,
    broker: Running,
    base: String,
    client: Client,
}

impl AuthAndBroker {
    async fn start() -> Self {
        let dir = temp_dir();
        let mut config = common::config(&dir, None, &[]);
        let keys = microchat::open_service_keys(&config.service_keys_dir()).unwrap();
        let auth = auth::AuthService::build(&config.auth, &dir, &keys)
            .await
            .unwrap();
        let auth_addr = auth.local_addr();
        let auth_stop = Shutdown::new();
        let auth_task = tokio::spawn(auth.run(auth_stop.clone()));
        config.auth.listen = auth_addr;
        config.broker.auth_url = format!("http://{auth_addr}");
        let broker = broker::BrokerService::build(
            config.broker.clone(),
            &keys,
            &platform::grpc::Dialer::network(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", broker.local_addr());
        let broker_stop = Shutdown::new();
        let broker_task = tokio::spawn(broker.run(broker_stop.clone()));
        let client = Client::new();
        let registered = client
            .post(format!("{base}/api/auth/register"))
            .json(
                &json!({ "username": "ada", "email": "ada@example.com", "password": "correct horse" }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), StatusCode::CREATED);
        Self {
            dir,
            config,
            keys,
            auth_addr,
            auth: Some((auth_stop, auth_task)),
            broker: (broker_stop, broker_task),
            base,
            client,
        }
    }

    async fn stop_auth(&mut self) {
        let (stop, task) = self.auth.take().expect("auth is running");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    /// Starts auth again on the same address and data directory.
    async fn start_auth(&mut self) {
        let auth = auth::AuthService::build(&self.config.auth, &self.dir, &self.keys)
            .await
            .unwrap();
        assert_eq!(auth.local_addr(), self.auth_addr);
        let stop = Shutdown::new();
        self.auth = Some((stop.clone(), tokio::spawn(auth.run(stop))));
    }

    async fn login(&self) -> reqwest::Response {
        self.client
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({ "login": "ada", "password": "correct horse" }))
            .send()
            .await
            .expect("the broker answers even when auth does not")
    }

    /// ada's token from one login.
    async fn token(&self) -> String {
        let response = self.login().await;
        assert_eq!(response.status(), StatusCode::OK);
        let session: Value = response.json().await.unwrap();
        session["token"].as_str().unwrap().to_owned()
    }

    /// ada's token from a login, retried until auth answers again.
    async fn token_once_auth_answers(&self) -> String {
        let started = Instant::now();
        loop {
            let response = self.login().await;
            if response.status() == StatusCode::OK {
                let session: Value = response.json().await.unwrap();
                return session["token"].as_str().unwrap().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "login works again once auth is back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn me(&self, token: &str) -> StatusCode {
        self.me_at(&self.base, token).await
    }

    /// `GET /api/auth/me` with `token` at the broker at `base`.
    async fn me_at(&self, base: &str, token: &str) -> StatusCode {
        self.client
            .get(format!("{base}/api/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the broker answers")
            .status()
    }

    /// Logs `token`'s session out through this broker.
    async fn logout(&self, token: &str) {
        let logout = self
            .client
            .post(format!("{}/api/auth/logout", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("the broker answers");
        assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    }

    /// Starts another broker that reaches auth only through `gate`: its URL and its task.
    async fn broker_behind(&self, gate: &AuthGate) -> (String, Running) {
        let mut config = self.config.broker.clone();
        config.auth_url.clone_from(&gate.url);
        let broker =
            broker::BrokerService::build(config, &self.keys, &platform::grpc::Dialer::network())
                .await
                .unwrap();
        let base = format!("http://{}", broker.local_addr());
        let stop = Shutdown::new();
        (base, (stop.clone(), tokio::spawn(broker.run(stop))))
    }

    /// Whether the broker at `base` follows auth's revocation stream, as `/readyz` says.
    async fn follows_revocations(&self, base: &str) -> bool {
        let ready: Value = self
            .client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("the broker answers")
            .json()
            .await
            .expect("readiness is JSON");
        ready["checks"]["revocation_stream"] == true
    }

    async fn stop(mut self) {
        self.broker.0.cancel();
        (&mut self.broker.1).await.unwrap().unwrap();
        if self.auth.is_some() {
            self.stop_auth().await;
        }
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

#[tokio::test]
async fn auth_down_means_503_for_login_and_back_without_restarting_the_broker() {
    let mut app = AuthAndBroker::start().await;
    let token = app.token().await;

    app.stop_auth().await;
    let refused = app.login().await;
    assert_eq!(
        expect_error(refused, StatusCode::SERVICE_UNAVAILABLE).await,
        "service_unavailable"
    );
    let body: Value = app.login().await.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("auth"),
        "the message names the service: {body}"
    );
    assert_eq!(
        app.me(&token).await,
        StatusCode::OK,
        "a logged-in user keeps working while auth is down"
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    app.start_auth().await;
    let token = app.token_once_auth_answers().await;
    let logout = app
        .client
        .post(format!("{}/api/auth/logout", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&token).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_and_the_old_one_stops_working() {
    let mut app = AuthAndBroker::start().await;
    let old = app.token().await;
    assert_eq!(app.me(&old).await, StatusCode::OK);

    // The operator rotates the key: auth restarts with a new one (the old file removed).
    app.stop_auth().await;
    std::fs::remove_file(app.dir.join("auth-signing-key.pem")).expect("auth keeps its key here");
    app.start_auth().await;

    // A token of the new key: the broker does not know its kid, fetches auth's keys
    // (at most every few seconds) and accepts it.
    let fresh = app.token_once_auth_answers().await;
    let started = Instant::now();
    while app.me(&fresh).await != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the broker never learned the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old key is withdrawn: its token stops working at once, though the broker had
    // it cached and it has not expired.
    assert_eq!(app.me(&old).await, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn without_its_revocation_stream_a_broker_asks_auth_and_refuses_a_session_ended_elsewhere() {
    let app = AuthAndBroker::start().await;
    let gate = AuthGate::start(app.auth_addr, &app.keys);
    let (gated, (stop, task)) = app.broker_behind(&gate).await;
    eventually("the gated broker follows auth's revocations", || {
        app.follows_revocations(&gated)
    })
    .await;
    let (ended, kept) = (app.token().await, app.token().await);
    for token in [&ended, &kept] {
        assert_eq!(app.me_at(&gated, token).await, StatusCode::OK);
    }

    // The gated broker's stream breaks; auth itself still answers it.
    gate.refuse(WATCH_REVOCATIONS);
    eventually("the gated broker notices its stream is gone", || async {
        !app.follows_revocations(&gated).await
    })
    .await;
    let asked = gate.forwarded(VERIFY_TOKEN);
    // Ended through the other broker: nothing tells the gated one.
    app.logout(&ended).await;
    assert_eq!(
        app.me_at(&gated, &ended).await,
        StatusCode::UNAUTHORIZED,
        "a token the broker had verified and cached is refused once its session ended elsewhere"
    );
    assert!(
        gate.forwarded(VERIFY_TOKEN) > asked,
        "the broker asked auth about the request"
    );
    assert_eq!(
        app.me_at(&gated, &kept).await,
        StatusCode::OK,
        "a live session keeps working while every request is checked with auth"
    );
    assert_eq!(app.me_at(&gated, &ended).await, StatusCode::UNAUTHORIZED);

    // The stream comes back: revocations reach the broker through it again.
    gate.admit(WATCH_REVOCATIONS);
    eventually("the gated broker follows auth's revocations again", || {
        app.follows_revocations(&gated)
    })
    .await;
    let asked = gate.forwarded(VERIFY_TOKEN);
    app.logout(&kept).await;
    eventually(
        "the stream tells the gated broker of the logout",
        || async { app.me_at(&gated, &kept).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert_eq!(
        app.me_at(&gated, &ended).await,
        StatusCode::UNAUTHORIZED,
        "the stream's snapshot has the session ended while it was down"
    );
    assert_eq!(
        gate.forwarded(VERIFY_TOKEN),
        asked,
        "with the stream back, requests are not checked with auth"
    );

    stop.cancel();
    task.await.unwrap().unwrap();
    app.stop().await;
}
