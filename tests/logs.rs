//! Logs and trace ids end to end: every service's lines and every event's audit entry
//! reach the logger, one request is followed across services by its trace id, only
//! administrators read logs, the older `/handle` API works, and a logger outage slows
//! nothing down.

mod common;

use common::{Services, TestApp, User, eventually, expect_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

/// No setting names administrators: `root` signs up first in each test, so it owns the
/// install (roles are stored by user id in auth).
const ADMIN: &[&str] = &[];

async fn logs(admin: &User, query: &str) -> Vec<Value> {
    let page = admin.get_ok(&format!("/api/logs?{query}")).await;
    page["logs"].as_array().expect("a list of logs").clone()
}

fn services(entries: &[Value]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|entry| entry["service"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_register_requests_trace_id_finds_its_broker_auth_listener_and_mail_entries() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let registered = app
        .client()
        .post(app.url("/api/auth/register"))
        .header(
            "traceparent",
            format!("00-{trace}-00f067aa0ba902b7-01"),
        )
        .json(&json!({ "username": "ada", "email": "ada@example.com", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert_eq!(
        registered.headers()["x-trace-id"].to_str().unwrap(),
        trace,
        "the broker keeps the caller's trace id"
    );
    eventually(
        "entries of broker, auth, listener and mail under one trace id",
        || {
            let root = root.clone();
            async move {
                let entries = logs(&root, &format!("trace_id={trace}")).await;
                assert!(entries.iter().all(|entry| entry["trace_id"] == trace));
                let wanted: BTreeSet<String> = ["auth", "broker", "listener", "mail"]
                    .map(str::to_owned)
                    .into();
                wanted.is_subset(&services(&entries))
            }
        },
    )
    .await;
    let entries = logs(&root, &format!("trace_id={trace}&service=listener")).await;
    let audit = entries
        .iter()
        .find(|entry| entry["name"] == "audit user.registered")
        .expect("the listener's audit entry of the registration");
    assert_eq!(audit["data"]["details"]["username"], "ada");
    let ada = audit["user_id"].as_str().expect("the audit names the user");
    let about_ada = logs(&root, &format!("user={ada}")).await;
    assert!(
        about_ada.iter().any(|entry| entry["service"] == "auth"),
        "auth's line about the new account is found by user: {about_ada:?}"
    );
    app.stop().await;
}

/// Every security-relevant event gets one audit entry; a message sent gets none (its row
/// in chat is its record, issue 29).
#[tokio::test]
async fn every_account_event_gets_one_audit_entry_and_a_message_sent_none() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    let ada = User::sign_up(&app.base, "ada").await;
    let grace = User::sign_up(&app.base, "grace").await;
    let conversation = ada.open_direct(&grace).await;
    ada.send(&conversation, "hello").await;
    let logout = ada.post("/api/auth/logout", &json!({})).await;
    assert!(logout.status().is_success());
    let names = [
        "audit user.registered",
        "audit user.logged_in",
        "audit user.logged_out",
    ];
    eventually("an audit entry per kind of event", || {
        let root = root.clone();
        let ada = ada.id.clone();
        async move {
            let entries = logs(&root, &format!("service=listener&user={ada}")).await;
            names
                .iter()
                .all(|name| entries.iter().any(|entry| entry["name"] == *name))
        }
    })
    .await;
    let entries = logs(&root, &format!("service=listener&user={}", ada.id)).await;
    let registrations = entries
        .iter()
        .filter(|entry| entry["name"] == "audit user.registered")
        .count();
    assert_eq!(registrations, 1, "one audit entry per event: {entries:?}");
    assert!(
        !entries
            .iter()
            .any(|entry| entry["name"] == "audit message.sent"),
        "a message sent is not audited: {entries:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_administrators_read_logs_and_bad_filters_are_400() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    let ada = User::sign_up(&app.base, "ada").await;
    assert_eq!(
        expect_error(ada.get("/api/logs").await, StatusCode::FORBIDDEN).await,
        "admins_only"
    );
    let anonymous = app.client().get(app.url("/api/logs")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
    for query in [
        "level=loud",
        "user=ada",
        "trace_id=xyz",
        "limit=0",
        "limit=501",
        "since=yesterday",
        "cursor=not-a-cursor",
    ] {
        let response = root.get(&format!("/api/logs?{query}")).await;
        expect_error(response, StatusCode::BAD_REQUEST).await;
    }
    // A window that ends before it starts holds nothing: an empty page, not an error.
    let backwards = logs(
        &root,
        "since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
    )
    .await;
    assert!(backwards.is_empty(), "{backwards:?}");
    let warnings = logs(&root, "level=warn").await;
    assert!(
        warnings
            .iter()
            .all(|entry| entry["level"] == "warn" || entry["level"] == "error"),
        "{warnings:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn logs_page_newest_first_with_a_cursor() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    for n in 0..5 {
        let logged = root
            .post(
                "/handle",
                &json!({ "action": "log", "log": { "name": format!("paged {n}"), "data": "" } }),
            )
            .await;
        assert_eq!(logged.status(), StatusCode::OK);
    }
    let mut names = Vec::new();
    let mut query = format!("user={}&service=user&limit=2", root.id);
    loop {
        let page = root.get_ok(&format!("/api/logs?{query}")).await;
        for entry in page["logs"].as_array().unwrap() {
            let name = entry["name"].as_str().unwrap();
            if name.starts_with("paged") {
                names.push(name.to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                query = format!("user={}&service=user&limit=2&cursor={cursor}", root.id);
            }
            None => break,
        }
    }
    assert_eq!(
        names,
        ["paged 4", "paged 3", "paged 2", "paged 1", "paged 0"],
        "every entry once, newest first"
    );
    app.stop().await;
}

async fn handle(app: &TestApp, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request = app.client().post(app.url("/handle")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.expect("every answer is JSON");
    assert!(
        body["error"].is_boolean() && body["message"].is_string(),
        "{body}"
    );
    (status, body)
}

#[tokio::test]
async fn the_older_handle_endpoint_checks_credentials_writes_logs_and_sends_mail() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    let ada = User::sign_up(&app.base, "ada").await;

    let (status, body) = handle(
        &app,
        None,
        &json!({ "action": "auth", "auth": { "email": "ada@example.com", "password": "correct horse battery" } }),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    assert_eq!(body["data"]["user"]["username"], "ada");
    let token = body["data"]["token"].as_str().expect("a token");
    let me = app.me(&app.client(), Some(token)).await;
    assert_eq!(me.status(), StatusCode::OK, "the token works");
    let (status, body) = handle(
        &app,
        None,
        &json!({ "action": "auth", "auth": { "email": "ada@example.com", "password": "wrong password" } }),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!(true))
    );

    let log = json!({ "action": "log", "log": { "name": "legacy event", "data": "some details" } });
    let (status, _) = handle(&app, None, &log).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "log needs a signed-in user"
    );
    let (status, body) = handle(&app, Some(&ada.token), &log).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    let entries = logs(&root, &format!("user={}&service=user", ada.id)).await;
    let entry = entries
        .iter()
        .find(|entry| entry["name"] == "legacy event")
        .expect("the entry is stored");
    assert_eq!(entry["data"]["data"], "some details");
    assert_eq!(entry["kind"], "user_written", "marked as what a user wrote");

    let mail = json!({ "action": "mail", "mail": {
        "from": "root@example.com", "to": "grace@example.com",
        "subject": "Maintenance tonight", "message": "We restart at 22:00." } });
    let (status, _) = handle(&app, Some(&ada.token), &mail).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "mail is for administrators");
    let (status, body) = handle(&app, Some(&root.token), &mail).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    eventually("the mail is written", || async {
        app.mail_files().iter().any(|mail| {
            mail.contains("To: grace@example.com")
                && mail.contains("Subject: Maintenance tonight")
                && mail.contains("We restart at 22:00.")
        })
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bad_actions_and_payloads_are_answered_4xx_in_the_older_shape() {
    let app = TestApp::start(ADMIN).await;
    let root = User::sign_up(&app.base, "root").await;
    for body in [
        json!({ "action": "launch" }),
        json!({ "action": "auth" }),
        json!({ "action": "auth", "auth": { "email": "ada@example.com" } }),
        json!({ "action": "log", "log": { "data": "no name" } }),
        json!({ "action": "log", "log": { "name": "", "data": "" } }),
        json!({ "action": "log", "log": { "name": "x".repeat(201), "data": "" } }),
        json!({ "action": "mail", "mail": { "from": "not an address", "to": "a@example.com", "subject": "s", "message": "m" } }),
        json!({ "action": "mail", "mail": { "from": "a@example.com", "to": "a@example.com", "subject": "", "message": "m" } }),
        json!({ "log": { "name": "no action" } }),
        json!([1, 2, 3]),
    ] {
        let (status, answer) = handle(&app, Some(&root.token), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"], true);
    }
    let not_json = app
        .client()
        .post(app.url("/handle"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let text = app
        .client()
        .post(app.url("/handle"))
        .body("action=auth")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Logs in, reads the caller and sends a message, `rounds` times; every call must succeed.
async fn chat_rounds(base: &str, ada: &User, conversation: &str, rounds: usize) -> Duration {
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let again = User::sign_in(base, &ada.username).await;
        let me = again.get("/api/auth/me").await;
        assert_eq!(me.status(), StatusCode::OK);
        again.send(conversation, &format!("round {round}")).await;
        samples.push(started.elapsed());
    }
    p50(samples)
}

async fn dropped_logs(base: &str) -> f64 {
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| line.starts_with("logs_dropped_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn logger_down_slows_nothing_counts_dropped_lines_and_logs_flow_again_after() {
    // Quick retries, so the audit step that failed meanwhile is retried soon after.
    let mut services = Services::start(&["--listener-retry-base=100ms"]).await;
    let base = services.base.clone();
    let root = User::sign_up(&base, "root").await;
    let ada = User::sign_up(&base, "ada").await;
    let grace = User::sign_up(&base, "grace").await;
    let conversation = ada.open_direct(&grace).await;
    chat_rounds(&base, &ada, &conversation, 3).await; // warm-up
    let with_logger = chat_rounds(&base, &ada, &conversation, 15).await;

    services.stop_logger().await;
    // Metrics are process-wide; the operator port serves them (never the broker's port).
    let (metrics, metrics_stop) = common::metrics_server().await;
    let dropped_before = dropped_logs(&metrics).await;
    let registered = User::sign_up(&base, "linus").await;
    let without_logger = chat_rounds(&base, &ada, &conversation, 15).await;
    eventually("dropped lines are counted", || async {
        dropped_logs(&metrics).await > dropped_before
    })
    .await;
    assert!(
        without_logger <= with_logger * 2 + Duration::from_millis(25),
        "p50 with the logger {with_logger:?}, without {without_logger:?}"
    );
    let refused = root.get("/api/logs").await;
    assert_eq!(
        expect_error(refused, StatusCode::SERVICE_UNAVAILABLE).await,
        "service_unavailable"
    );

    services.start_logger().await;
    eventually(
        "logs flow again, and the audit of the registration made meanwhile arrives",
        || {
            let root = root.clone();
            let linus = registered.id.clone();
            async move {
                let response = root
                    .get(&format!("/api/logs?service=listener&user={linus}"))
                    .await;
                if response.status() != StatusCode::OK {
                    return false;
                }
                let page: Value = response.json().await.unwrap();
                page["logs"].as_array().is_some_and(|entries| {
                    entries.iter().any(|e| e["name"] == "audit user.registered")
                })
            }
        },
    )
    .await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let marked = root
        .client
        .post(format!("{base}/api/conversations/{conversation}/read"))
        .bearer_auth(&root.token)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({ "up_to": uuid::Uuid::now_v7() }))
        .send()
        .await
        .unwrap();
    assert!(
        marked.status().is_client_error(),
        "root is no member: {}",
        marked.status()
    );
    eventually(
        "a new request's lines reach the logger that came back",
        || {
            let root = root.clone();
            async move {
                let response = root.get(&format!("/api/logs?trace_id={trace}")).await;
                response.status() == StatusCode::OK
                    && response.json::<Value>().await.unwrap()["logs"]
                        .as_array()
                        .is_some_and(|entries| !entries.is_empty())
            }
        },
    )
    .await;
    metrics_stop.cancel();
    services.stop().await;
}
