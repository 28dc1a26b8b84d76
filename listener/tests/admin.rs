//! The parked-event admin API, from outside: a listener started on port 0 with its own
//! SQLite file and the embedded bus, asked over HTTP like an operator (or an intruder)
//! would.

use clap::Parser;
use platform::{
    events::{EmbeddedBus, EventBus, Published},
    shutdown::Shutdown,
    testing::TestDatabase,
};
use reqwest::{Client, Method, StatusCode, header};
use serde_json::Value;
use std::{sync::Arc, time::Duration};

const TOKEN: &str = "test-admin-token-0123456789";

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    config: listener::Config,
}

/// A running listener: its health and metrics port, its admin port.
struct TestListener {
    health: String,
    admin: String,
    bus: EmbeddedBus,
    stop: Shutdown,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _databases: [TestDatabase; 2],
}

impl TestListener {
    /// Starts a listener on loopback port 0 (both ports); `extra` are more settings.
    async fn start(extra: &[&str]) -> Self {
        Self::try_start(extra).await.expect("the listener starts")
    }

    async fn try_start(extra: &[&str]) -> anyhow::Result<Self> {
        platform::telemetry::init_tracing_for_tests();
        let database = TestDatabase::sqlite("listener");
        let events = TestDatabase::sqlite("events");
        let args = [
            "listener".to_owned(),
            "--listener-listen=127.0.0.1:0".to_owned(),
            "--listener-admin-listen=127.0.0.1:0".to_owned(),
            format!("--listener-database-url={}", database.url()),
        ];
        let args = args
            .into_iter()
            .chain(extra.iter().map(|&arg| arg.to_owned()));
        let config = Cli::try_parse_from(args)?.config;
        let bus = EmbeddedBus::open(events.url()).await?;
        let source = Arc::new(
            listener::source::EmbeddedSource::bind(&bus, &config.queue, config.prefetch).await?,
        );
        let keys = platform::testing::service_keys(
            &std::env::temp_dir().join(format!("listener-keys-{}", uuid::Uuid::new_v4())),
        );
        let listener = listener::ListenerService::build(
            &config,
            &std::env::temp_dir(),
            source,
            &keys,
            &platform::grpc::Dialer::network(),
        )
        .await?;
        let health = format!("http://{}", listener.local_addr());
        let admin = format!("http://{}", listener.admin_addr());
        let stop = Shutdown::new();
        let running = tokio::spawn(listener.run(stop.clone()));
        Ok(Self {
            health,
            admin,
            bus,
            stop,
            running,
            _databases: [database, events],
        })
    }

    /// Parks an event at once: one that cannot be read.
    async fn park_an_unreadable_event(&self) {
        let event = Published {
            event_id: uuid::Uuid::now_v7(),
            routing_key: "user.registered".to_owned(),
            payload: b"not an envelope".to_vec(),
        };
        self.bus.publish(&[event]).await.expect("the bus takes it");
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running
            .await
            .expect("the listener does not panic")
            .expect("the listener stops cleanly");
    }
}

async fn ask(method: Method, url: String, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = Client::new().request(method, url);
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let response = request.send().await.expect("the listener answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn admin_api_is_not_on_the_metrics_port() {
    let listener = TestListener::start(&[]).await;
    for (method, path) in [
        (Method::GET, "/admin/parked"),
        (Method::POST, "/admin/parked/replay"),
    ] {
        let (status, body) = ask(method, format!("{}{path}", listener.health), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let metrics = reqwest::get(format!("{}/metrics", listener.health))
        .await
        .expect("the listener answers");
    assert_eq!(metrics.status(), StatusCode::OK);
    listener.stop().await;
}

#[tokio::test]
async fn admin_api_without_the_right_token_is_401_json() {
    let listener = TestListener::start(&[&format!("--listener-admin-token={TOKEN}")]).await;
    let wrong = [
        None,
        Some("Bearer test-admin-token-wrong-0123".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for authorization in &wrong {
        // Unknown paths too: without the token, nothing on this port answers.
        for (method, path) in [
            (Method::GET, "/admin/parked"),
            (Method::POST, "/admin/parked/replay"),
            (Method::GET, "/admin/anything"),
        ] {
            let url = format!("{}{path}", listener.admin);
            let request = Client::new().request(method.clone(), url);
            let request = match authorization {
                Some(value) => request.header(header::AUTHORIZATION, value),
                None => request,
            };
            let response = request.send().await.expect("the listener answers");
            let what = format!("{method} {path} with {authorization:?}");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(
                response.headers().get(header::WWW_AUTHENTICATE),
                Some(&header::HeaderValue::from_static("Bearer")),
                "{what}"
            );
            let body: Value = response.json().await.expect("a JSON answer");
            assert_eq!(body["error"]["code"], "unauthenticated", "{what}");
            assert!(body["error"]["message"].is_string(), "{what}: {body}");
        }
    }
    listener.stop().await;
}

#[tokio::test]
async fn admin_api_with_the_right_token_lists_and_replays_parked_events() {
    let listener = TestListener::start(&[&format!("--listener-admin-token={TOKEN}")]).await;
    listener.park_an_unreadable_event().await;
    let bearer = format!("Bearer {TOKEN}");
    let url = format!("{}/admin/parked", listener.admin);
    let mut parked = Value::Null;
    for _ in 0..100 {
        let (status, body) = ask(Method::GET, url.clone(), Some(&bearer)).await;
        assert_eq!(status, StatusCode::OK);
        parked = body;
        if parked["parked"]
            .as_array()
            .is_some_and(|list| !list.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        parked["parked"][0]["routing_key"], "user.registered",
        "{parked}"
    );
    // The scheme is case-insensitive, as HTTP has it.
    let (status, replayed) = ask(
        Method::POST,
        format!("{}/admin/parked/replay", listener.admin),
        Some(&format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["replayed"], 1);
    listener.stop().await;
}

#[tokio::test]
async fn admin_api_on_loopback_needs_no_token_when_none_is_set() {
    let listener = TestListener::start(&[]).await;
    let (status, body) = ask(
        Method::GET,
        format!("{}/admin/parked", listener.admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["parked"], Value::Array(Vec::new()));
    listener.stop().await;
}

#[tokio::test]
async fn admin_api_beyond_loopback_without_a_token_is_refused_at_start() {
    let started = TestListener::try_start(&["--listener-admin-listen=0.0.0.0:0"]).await;
    let error = started.err().expect("the listener refuses to start");
    let message = format!("{error:#}");
    assert!(message.contains("LISTENER_ADMIN_TOKEN"), "{message}");
    assert!(message.contains("0.0.0.0"), "{message}");
}

#[tokio::test]
async fn both_ports_close_at_shutdown() {
    let listener = TestListener::start(&[]).await;
    let (health, admin) = (listener.health.clone(), listener.admin.clone());
    listener.stop().await;
    for url in [format!("{health}/healthz"), format!("{admin}/admin/parked")] {
        assert!(reqwest::get(&url).await.is_err(), "{url} still answers");
    }
}
