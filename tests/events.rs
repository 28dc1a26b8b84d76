//! Events end to end: outbox → bus (RabbitMQ or the embedded one) → listener → mail / chat.
//! Against the machine's real RabbitMQ and PostgreSQL, and an SMTP server (maildev).

mod common;

use common::{
    Db, TestApp, eventually,
    rabbit::{TcpProxy, TestRabbit},
    read_only_sqlite,
};
use platform::{
    events::{Event, rabbit},
    testing::MailDev,
};
use proto::events::v1::{MessageEdited, MessageSent, UserRegistered, envelope::Payload};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";
const USER_AGENT: &str = "microchat-events-test/1.0";

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// Registers, logs in and logs out `username` with a recognisable User-Agent.
fn browser() -> Client {
    Client::builder()
        .user_agent(USER_AGENT)
        .build()
        .expect("a client builds")
}

async fn register(app: &TestApp, username: &str) {
    let registered = app.register(&browser(), username, PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
}

/// Logs in and out again; the address must be verified for the logout mail.
async fn login_logout(app: &TestApp, username: &str) {
    let client = browser();
    let login: Value = app
        .login(&client, username, PASSWORD)
        .await
        .json()
        .await
        .expect("login answers JSON");
    let token = login["token"].as_str().expect("a token");
    let logout = client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
}

fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    mail.lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

fn mails_to<'a>(mails: &'a [String], address: &str) -> Vec<&'a String> {
    mails
        .iter()
        .filter(|mail| header(mail, "To").is_some_and(|to| to.contains(address)))
        .collect()
}

/// A GET of the listener's admin API.
async fn admin_json(app: &TestApp, path: &str) -> Value {
    Client::new()
        .get(app.listener_admin_url(path))
        .send()
        .await
        .expect("the listener answers")
        .json()
        .await
        .expect("the listener answers JSON")
}

async fn wait_listener_ready(app: &TestApp) {
    eventually("the listener is connected to its event source", || async {
        Client::new()
            .get(app.listener_url("/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    })
    .await;
}

#[tokio::test]
async fn embedded_register_and_logout_write_welcome_and_logout_mails() {
    let app = TestApp::start(&[]).await;
    register(&app, "ada").await;
    app.verify_address("ada@example.com").await;
    login_logout(&app, "ada").await;
    eventually("a welcome and a logout mail are written", || async {
        mails_to(&app.mail_files(), "ada@example.com").len() == 2
    })
    .await;
    let mails = app.mail_files();
    let subjects: Vec<&str> = mails_to(&mails, "ada@example.com")
        .iter()
        .filter_map(|mail| header(mail, "Subject"))
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("Welcome")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("signed out")),
        "{subjects:?}"
    );
    app.stop().await;
}

/// The dev-stack path: PostgreSQL, RabbitMQ, an SMTP server.
#[tokio::test]
async fn register_and_logout_mails_arrive_at_a_real_smtp_server_through_rabbitmq() {
    let Some(rabbit) = TestRabbit::create(8, Duration::from_secs(1)).await else {
        return;
    };
    let Some(maildev) = MailDev::start().await.expect("maildev starts") else {
        return;
    };
    let mut extra = rabbit.args(&rabbit.url);
    extra.push(format!("--mail-smtp-url={}", maildev.smtp_url()));
    let Some(app) = TestApp::start_on(Db::Postgres, &args(&extra)).await else {
        return;
    };
    wait_listener_ready(&app).await;
    register(&app, "grace").await;
    let welcome = maildev
        .wait_for(1, Duration::from_secs(15))
        .await
        .expect("the registration mail arrives");
    let text = welcome[0]["text"].as_str().unwrap_or_default();
    let token = common::links::tokens_in(text, common::links::VERIFY_PAGE)
        .pop()
        .expect("the registration mail carries a verification link");
    let verified = Client::new()
        .post(app.url("/api/auth/email/verify"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(verified.status(), StatusCode::OK);
    login_logout(&app, "grace").await;
    let emails = maildev
        .wait_for(2, Duration::from_secs(15))
        .await
        .expect("two mails arrive");
    let to = |mail: &Value| {
        mail["to"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        emails.iter().all(|mail| to(mail) == "grace@example.com"),
        "{emails:?}"
    );
    let welcome = emails
        .iter()
        .find(|mail| {
            mail["subject"]
                .as_str()
                .is_some_and(|s| s.contains("Welcome"))
        })
        .expect("a welcome mail");
    assert!(
        welcome["text"]
            .as_str()
            .is_some_and(|t| t.contains("grace"))
    );
    assert!(
        welcome["html"]
            .as_str()
            .is_some_and(|h| h.contains("grace"))
    );
    let logout = emails
        .iter()
        .find(|mail| {
            mail["subject"]
                .as_str()
                .is_some_and(|s| s.contains("signed out"))
        })
        .expect("a logout mail");
    let text = logout["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(USER_AGENT),
        "the logout mail names the client: {text}"
    );
    assert!(text.contains("127.0.0.1"), "and its address: {text}");
    app.stop().await;
}

/// Publishes an envelope to the test's exchange, as a relay would (and as a relay that
/// crashed after publishing, before deleting its row, would do twice).
async fn publish(rabbit: &TestRabbit, event: &Event) {
    let connection = rabbit::connect(&rabbit.url, "test publisher")
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let published = platform::events::Published {
        event_id: event.id,
        routing_key: event.routing_key.to_owned(),
        payload: event.payload.clone(),
    };
    let confirm = channel
        .basic_publish(
            rabbit.exchange.as_str().into(),
            event.routing_key.into(),
            Default::default(),
            &event.payload,
            rabbit::properties(&published),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    let _ = connection.close(200, "done".into()).await;
}

fn registered(username: &str) -> Event {
    Event::new(
        "test",
        Payload::UserRegistered(UserRegistered {
            user_id: uuid::Uuid::now_v7().to_string(),
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            verify_token: String::new(),
        }),
    )
}

#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_mail() {
    let Some(rabbit) = TestRabbit::create(8, Duration::from_secs(1)).await else {
        return;
    };
    // One event at a time, so the sentinel is handled after both copies.
    let mut extra = rabbit.args(&rabbit.url);
    extra.push("--listener-prefetch=1".to_owned());
    let app = TestApp::start(&args(&extra)).await;
    wait_listener_ready(&app).await;
    let twice = registered("twice");
    publish(&rabbit, &twice).await;
    publish(&rabbit, &twice).await;
    publish(&rabbit, &registered("sentinel")).await;
    eventually("the sentinel's mail is written", || async {
        mails_to(&app.mail_files(), "sentinel@example.com").len() == 1
    })
    .await;
    assert_eq!(mails_to(&app.mail_files(), "twice@example.com").len(), 1);
    app.stop().await;
}

/// An edit's only work is its audit entry, which the logger stores under the event's id:
/// delivered twice, it is audited once, with no record of the listener's own. A message
/// sent calls for nothing at all: no audit entry, no record (issue 29: a stored message
/// is its own record).
#[tokio::test]
async fn an_edit_delivered_twice_is_audited_once_and_a_message_sent_not_at_all() {
    let Some(rabbit) = TestRabbit::create(8, Duration::from_secs(1)).await else {
        return;
    };
    // One event at a time, so the sentinel is audited after the others.
    let mut extra = rabbit.args(&rabbit.url);
    extra.push("--listener-prefetch=1".to_owned());
    let app = TestApp::start(&args(&extra)).await;
    wait_listener_ready(&app).await;
    let edited = || {
        Event::new(
            "test",
            Payload::MessageEdited(MessageEdited {
                message_id: uuid::Uuid::now_v7().to_string(),
                conversation_id: uuid::Uuid::now_v7().to_string(),
                editor_id: uuid::Uuid::now_v7().to_string(),
                body_chars: 5,
            }),
        )
    };
    let sent = Event::new(
        "test",
        Payload::MessageSent(MessageSent {
            message_id: uuid::Uuid::now_v7().to_string(),
            conversation_id: uuid::Uuid::now_v7().to_string(),
            sender_id: uuid::Uuid::now_v7().to_string(),
            body_chars: 5,
        }),
    );
    let (twice, sentinel) = (edited(), edited());
    publish(&rabbit, &twice).await;
    publish(&rabbit, &sent).await;
    publish(&rabbit, &twice).await;
    publish(&rabbit, &sentinel).await;
    let read_only = |file: &str| common::read_only_sqlite(&app.data_dir.join(file));
    let logs = read_only("logs.db");
    let audits_of = |event: &Event| {
        let (logs, id) = (logs.clone(), event.id);
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM logs WHERE id = $1")
                .bind(id)
                .fetch_one(&logs)
                .await
                .expect("the logger's table answers")
        }
    };
    eventually("the sentinel is audited", || async {
        audits_of(&sentinel).await == 1
    })
    .await;
    assert_eq!(audits_of(&twice).await, 1, "one audit entry per event");
    assert_eq!(audits_of(&sent).await, 0, "a message sent is not audited");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(&read_only("listener.db"))
        .await
        .expect("the listener's table answers");
    assert_eq!(
        recorded, 0,
        "message events need no record of the listener's"
    );
    app.stop().await;
}

/// Events of one type that leave the outbox together travel as one batch message; the
/// listener handles each on its own (a duplicate inside the batch once, a bad one parked
/// alone) and acknowledges the message once all of them are settled.
#[tokio::test]
async fn events_published_together_are_settled_one_by_one() {
    let Some(rabbit) = TestRabbit::create(1, Duration::from_millis(50)).await else {
        return;
    };
    let app = TestApp::start(&args(&rabbit.args(&rabbit.url))).await;
    wait_listener_ready(&app).await;
    let welcome: Vec<Event> = (0..5).map(|n| registered(&format!("batched{n}"))).collect();
    let unmailable = Event::new(
        "test",
        Payload::UserRegistered(UserRegistered {
            user_id: uuid::Uuid::now_v7().to_string(),
            username: "unmailable".to_owned(),
            email: "not an address".to_owned(),
            verify_token: String::new(),
        }),
    );
    let batch: Vec<&Event> = vec![
        &welcome[0],
        &welcome[1],
        &unmailable,
        &welcome[2],
        &welcome[0],
        &welcome[3],
        &welcome[4],
    ];
    let published: Vec<platform::events::Published> = batch
        .iter()
        .map(|event| platform::events::Published {
            event_id: event.id,
            routing_key: event.routing_key.to_owned(),
            payload: event.payload.clone(),
        })
        .collect();
    let bus = rabbit::RabbitBus::new(rabbit.url.clone(), rabbit.exchange.clone());
    platform::events::EventBus::publish(&bus, &published)
        .await
        .expect("RabbitMQ confirms the batch");
    eventually("every welcome mail is written", || async {
        (0..5).all(|n| !mails_to(&app.mail_files(), &format!("batched{n}@example.com")).is_empty())
    })
    .await;
    eventually("the unmailable event is parked alone", || async {
        let parked = admin_json(&app, "/admin/parked").await;
        parked["parked"].as_array().is_some_and(|list| {
            list.len() == 1
                && list[0]["event_id"] == unmailable.id.to_string()
                && list[0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("mail"))
        })
    })
    .await;
    for n in 0..5 {
        let address = format!("batched{n}@example.com");
        assert_eq!(mails_to(&app.mail_files(), &address).len(), 1, "{address}");
    }
    app.stop().await;
    // Had the batch not been acknowledged, closing the connection would have put it back.
    let connection = rabbit::connect(&rabbit.url, "test inspector")
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    let queue = channel
        .queue_declare(
            rabbit.queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the listener's queue exists");
    assert_eq!(
        queue.message_count(),
        0,
        "the batch message was acknowledged"
    );
    let _ = connection.close(200, "done".into()).await;
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port is free")
        .port()
}

#[tokio::test]
async fn a_handler_that_keeps_failing_parks_the_event_and_replay_processes_it() {
    let Some(rabbit) = TestRabbit::create(3, Duration::from_millis(50)).await else {
        return;
    };
    let smtp_port = free_port();
    let mut extra = rabbit.args(&rabbit.url);
    extra.push(format!("--mail-smtp-url=smtp://127.0.0.1:{smtp_port}"));
    let app = TestApp::start(&args(&extra)).await;
    wait_listener_ready(&app).await;
    let registered = app.register(&app.client(), "parker", PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    eventually(
        "the welcome mail's event is parked after three attempts",
        || async {
            let parked = admin_json(&app, "/admin/parked").await;
            parked["parked"].as_array().is_some_and(|list| {
                list.len() == 1
                    && list[0]["routing_key"] == "user.registered"
                    && list[0]["attempts"] == 3
                    && list[0]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("mail"))
            })
        },
    )
    .await;
    // Listing leaves it parked.
    assert_eq!(
        admin_json(&app, "/admin/parked").await["parked"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let Some(maildev) = MailDev::start_on(smtp_port).await.expect("maildev starts") else {
        return;
    };
    let replayed: Value = Client::new()
        .post(app.listener_admin_url("/admin/parked/replay"))
        .send()
        .await
        .expect("the listener answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(replayed["replayed"], 1);
    let emails = maildev
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("the replayed event sends its mail");
    assert_eq!(emails[0]["to"][0]["address"], "parker@example.com");
    assert_eq!(
        admin_json(&app, "/admin/parked").await["parked"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    app.stop().await;
}

#[tokio::test]
async fn mail_waits_for_the_smtp_server_to_come_back() {
    let smtp_port = free_port();
    let app = TestApp::start(&[
        "--listener-retry-base=100ms",
        &format!("--mail-smtp-url=smtp://127.0.0.1:{smtp_port}"),
    ])
    .await;
    let registered = app.register(&app.client(), "patient", PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    // Let a few attempts fail against the missing server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Some(maildev) = MailDev::start_on(smtp_port).await.expect("maildev starts") else {
        return;
    };
    let emails = maildev
        .wait_for(1, Duration::from_secs(15))
        .await
        .expect("the mail is sent once the server is back");
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["to"][0]["address"], "patient@example.com");
    app.stop().await;
}

#[tokio::test]
async fn a_rabbitmq_outage_delays_events_and_loses_none() {
    let Some(rabbit) = TestRabbit::create(8, Duration::from_millis(100)).await else {
        return;
    };
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().expect("an address")).await;
    let proxied = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let app = TestApp::start(&args(&rabbit.args(&proxied))).await;
    wait_listener_ready(&app).await;
    let client = app.client();
    let mut usernames = Vec::new();
    for n in 0..20 {
        if n == 5 {
            proxy.cut();
        }
        if n == 15 {
            // Producers kept serving while RabbitMQ was away; nothing has gone out since.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = app.mail_files().len();
            assert!(
                before <= 5,
                "events sent while RabbitMQ was away: {before} mails"
            );
            proxy.restore();
        }
        let username = format!("outage{n}");
        let registered = app.register(&client, &username, PASSWORD).await;
        assert_eq!(
            registered.status(),
            StatusCode::CREATED,
            "register {username}"
        );
        usernames.push(username);
    }
    eventually("every welcome mail is written after the outage", || async {
        app.mail_files().len() >= usernames.len()
    })
    .await;
    // Give any duplicate a chance to show up, then check: exactly one mail each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = app.mail_files();
    for username in &usernames {
        assert_eq!(
            mails_to(&mails, &format!("{username}@example.com")).len(),
            1,
            "{username} gets exactly one welcome mail"
        );
    }
    assert_eq!(mails.len(), usernames.len());
    app.stop().await;
}

async fn open_sessions(services: &common::Services) -> Vec<(String, String, String)> {
    let channel = platform::testing::channel_as(
        &services.keys,
        platform::service_auth::Service::Broker,
        platform::service_auth::Service::Chat,
        &format!("http://{}", services.config.chat.listen),
    );
    let mut chat = proto::chat::v1::chat_client::ChatClient::new(channel);
    let mut sessions: Vec<(String, String, String)> = chat
        .list_chat_sessions(proto::chat::v1::ListChatSessionsRequest { user_ids: vec![] })
        .await
        .expect("chat lists sessions")
        .into_inner()
        .sessions
        .into_iter()
        .map(|session| {
            let user = session.user.unwrap_or_default();
            (user.username, session.session_id, session.client_ip)
        })
        .collect();
    sessions.sort();
    sessions
}

#[tokio::test]
async fn chat_sessions_and_presence_after_a_chat_restart_equal_those_before() {
    let mut services = common::Services::start(&[]).await;
    let ada = common::User::sign_up(&services.base, "ada").await;
    let bob = common::User::sign_up(&services.base, "bob").await;
    eventually("both logins reach chat as chat sessions", || async {
        open_sessions(&services).await.len() == 2
    })
    .await;
    let _socket = ada.open_socket().await;
    eventually("ada is online", || async {
        bob.online_usernames().await == ["ada"]
    })
    .await;
    let before = (open_sessions(&services).await, bob.online_usernames().await);

    services.stop_chat().await;
    services.start_chat().await;
    eventually("the broker is ready again", || async {
        Client::new()
            .get(format!("{}/readyz", services.base))
            .send()
            .await
            .is_ok_and(|response| response.status() == StatusCode::OK)
    })
    .await;
    let after = (open_sessions(&services).await, bob.online_usernames().await);
    assert_eq!(before, after, "nobody had to log in again");

    // Events still reach the restarted chat: bob's logout ends his session.
    let logout = bob
        .client
        .post(format!("{}/api/auth/logout", services.base))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    eventually("bob's chat session ends", || async {
        let sessions = open_sessions(&services).await;
        sessions.len() == 1 && sessions[0].0 == "ada"
    })
    .await;
    services.stop().await;
}

/// Rows in `table` of the SQLite file `file` in the app's data directory.
async fn rows(dir: &std::path::Path, file: &str, table: &str) -> i64 {
    let pool = read_only_sqlite(&dir.join(file));
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|error| panic!("counting {table} in {file}: {error}"));
    pool.close().await;
    count
}

/// The welcome events waiting in the embedded bus's queue, and how many of them were
/// tried at least once.
async fn queued_welcomes(dir: &std::path::Path) -> (i64, i64) {
    let pool = read_only_sqlite(&dir.join("events.db"));
    let counts = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE attempts > 0) FROM queued \
         WHERE routing_key = 'user.registered'",
    )
    .fetch_one(&pool)
    .await
    .expect("the embedded bus's queue can be read");
    pool.close().await;
    counts
}

async fn register_all(app: &TestApp, prefix: &str, count: usize) {
    let client = app.client();
    let names: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
    let answers = futures::future::join_all(
        names
            .iter()
            .map(|name| app.register(&client, name, PASSWORD)),
    )
    .await;
    for answer in answers {
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
#[expect(clippy::cast_possible_wrap, reason = "`USERS` is a small constant")]
async fn mails_being_retried_hold_back_no_outbox_in_the_all_in_one() {
    const USERS: usize = 30;
    let smtp_port = free_port();
    let app = TestApp::start(&[
        "--listener-retry-base=100ms",
        "--listener-max-attempts=20",
        &format!("--mail-smtp-url=smtp://127.0.0.1:{smtp_port}"),
    ])
    .await;
    register_all(&app, "retried", USERS).await;
    let registered = Instant::now();
    let dir = app.data_dir.clone();
    eventually("auth's outbox drains while no mail can be sent", || async {
        rows(&dir, "auth.db", "outbox").await == 0
    })
    .await;
    let drained = registered.elapsed();
    eventually(
        "every welcome event waits in the queue, retried",
        || async { queued_welcomes(&dir).await == (USERS as i64, USERS as i64) },
    )
    .await;
    println!(
        "auth's outbox empty {} ms after the last registration, with {USERS} welcome mails retrying",
        drained.as_millis()
    );
    let Some(maildev) = MailDev::start_on(smtp_port).await.expect("maildev starts") else {
        return;
    };
    let emails = maildev
        .wait_for(USERS, Duration::from_secs(30))
        .await
        .expect("every welcome mail is sent once the server is back");
    assert_eq!(emails.len(), USERS, "one mail each, none twice");
    eventually("the queue is empty", || async {
        queued_welcomes(&dir).await.0 == 0
    })
    .await;
    app.stop().await;
}

#[tokio::test]
#[expect(clippy::cast_possible_wrap, reason = "`USERS` is a small constant")]
async fn a_stop_keeps_the_events_the_listener_holds_and_the_next_start_delivers_them_once() {
    const USERS: usize = 20;
    let smtp_port = free_port();
    let smtp_setting = format!("--mail-smtp-url=smtp://127.0.0.1:{smtp_port}");
    let app = TestApp::start(&[
        "--listener-retry-base=100ms",
        "--listener-max-attempts=20",
        &smtp_setting,
    ])
    .await;
    register_all(&app, "kept", USERS).await;
    let dir = app.data_dir.clone();
    eventually("the welcome events are being retried", || async {
        queued_welcomes(&dir).await == (USERS as i64, USERS as i64)
    })
    .await;
    let dir = app.stop_keeping_data().await;
    assert_eq!(
        queued_welcomes(&dir).await.0,
        USERS as i64,
        "a stop drops none of the events still owed a mail"
    );
    assert_eq!(rows(&dir, "listener.db", "processed_events").await, 0);

    let Some(maildev) = MailDev::start_on(smtp_port).await.expect("maildev starts") else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let app = TestApp::start_in(dir, &[&smtp_setting]).await;
    let emails = maildev
        .wait_for(USERS, Duration::from_secs(30))
        .await
        .expect("the next start sends every welcome mail");
    // Time for a duplicate to show up, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let emails = maildev
        .wait_for(emails.len(), Duration::from_secs(1))
        .await
        .expect("listed");
    assert_eq!(emails.len(), USERS, "one mail each, none twice");
    let dir = app.data_dir.clone();
    eventually("every event is settled", || async {
        queued_welcomes(&dir).await.0 == 0
            && rows(&dir, "listener.db", "processed_events").await >= USERS as i64
    })
    .await;
    app.stop().await;
}
