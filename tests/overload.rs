//! Graceful overload: a send the broker cannot serve in time is refused at once — REST
//! 503 `overloaded` with `Retry-After`, a WebSocket `error` frame `overloaded` with
//! `retry_after_ms` — and never stored, while the sends it admitted are stored once chat
//! catches up.
//!
//! Driven deterministically: the test holds chat's SQLite write lock, so the sends the
//! broker has handed on cannot finish and its queue stays full while the next sends are
//! judged. A broker that has not measured chat yet admits one full batch (128 sends):
//! the 129th send onward must be refused.

mod common;

use common::{TestApp, ws};
use reqwest::{StatusCode, header::RETRY_AFTER};
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use std::time::Duration;

/// Sends a broker admits before it has measured chat (one batch of `SendMessages`).
const ADMITTED: usize = 128;
/// Sends beyond them.
const EXTRA: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_past_what_can_be_served_in_time_are_refused_at_once_and_never_stored() {
    let app = TestApp::start(&["--broker-send-queue-target=100ms"]).await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let conversation = ada.open_direct(&bob).await;
    ada.send(&conversation, "before the overload").await;
    // Opening a socket writes presence to chat's database: before the lock.
    let mut socket = ws::open(&app.base, &bob.token)
        .await
        .expect("the socket opens");
    ws::ready(&mut socket).await;

    let chat_database = app.database_urls().chat;
    let mut lock = sqlx::SqliteConnection::connect(&chat_database)
        .await
        .expect("chat's database opens");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("the write lock");

    // Chat's writer waits for the lock (its busy timeout is 5 s): the first sends fill
    // the queue and stay there, every later one is judged against a full queue.
    let path = format!("/api/conversations/{conversation}/messages");
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..ADMITTED + EXTRA {
        let (ada, path) = (ada.clone(), path.clone());
        sends.spawn(async move {
            let response = ada
                .post(&path, &json!({ "body": format!("send {n}") }))
                .await;
            let status = response.status();
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            let body: Value = response.json().await.expect("a JSON body");
            (status, retry_after, body)
        });
    }
    // The refusals come back at once, while the admitted sends still wait.
    for _ in 0..EXTRA {
        let (status, retry_after, body) =
            tokio::time::timeout(Duration::from_secs(3), sends.join_next())
                .await
                .expect("a refusal comes at once")
                .expect("a send")
                .expect("the send task");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        let seconds: u64 = retry_after
            .expect("Retry-After")
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("whole seconds");
        assert!((1..=5).contains(&seconds), "Retry-After: {seconds}");
    }
    // A socket's send is judged the same way, and its refusal names the send.
    ws::send(
        &mut socket,
        json!({ "type": "send", "conversation_id": conversation, "body": "by socket", "client_id": "c-1" }),
    )
    .await;
    let refusal = ws::next_of_type(&mut socket, "error").await;
    assert_eq!(refusal["code"], "overloaded", "{refusal}");
    assert_eq!(refusal["client_id"], "c-1", "{refusal}");
    let retry_after_ms = refusal["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((50..=5_000).contains(&retry_after_ms), "{refusal}");

    // Chat catches up: every admitted send is stored and answered.
    sqlx::query("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("the lock released");
    lock.close().await.expect("closed");
    let mut stored = 0;
    while let Some(send) = sends.join_next().await {
        let (status, _, body) = send.expect("the send task");
        assert_eq!(status, StatusCode::CREATED, "an admitted send: {body}");
        stored += 1;
    }
    assert_eq!(stored, ADMITTED);

    // What the database holds: the admitted sends, none of the refused ones.
    let bodies: Vec<String> = sqlx::query("SELECT body FROM messages WHERE conversation_id = $1")
        .bind(uuid::Uuid::parse_str(&conversation).expect("a conversation id"))
        .fetch_all(&common::read_only_sqlite(
            chat_database
                .strip_prefix("sqlite://")
                .expect("a SQLite URL")
                .split('?')
                .next()
                .expect("a path")
                .as_ref(),
        ))
        .await
        .expect("the messages")
        .iter()
        .map(|row| row.get("body"))
        .collect();
    assert_eq!(bodies.len(), 1 + ADMITTED, "{bodies:?}");
    assert!(!bodies.iter().any(|body| body == "by socket"));

    // Once chat keeps up again, sends go through.
    ada.send(&conversation, "after the overload").await;
    let metrics = app
        .client()
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refused = format!(
        "broker_sends_refused_total{{reason=\"queue_delay\"}} {}",
        EXTRA + 1
    );
    assert!(metrics.contains(&refused), "{refused} in {metrics}");
    app.stop().await;
}
