//! Scale-out: two brokers and two chat instances as separate processes (the `auth`,
//! `chat` and `broker` binaries) against the machine's PostgreSQL and RabbitMQ. Sockets
//! are spread over both brokers, each broker follows a different chat instance, and
//! messages are sent through both: every member's every socket gets every message
//! exactly once; typing and presence cross the replicas; logging out closes the user's
//! sockets on every broker.
//!
//! The binaries are the ones built next to this test (`make test` builds them first);
//! without them the test is skipped, saying so — in CI it fails.

mod common;

use common::{
    User,
    grpc_probe::{call_every_method, not_answering},
    procs::{Process, answers_ok, binaries, free_port},
    rabbit::TestRabbit,
    ws::{Socket, close_code, next_frame, next_of_type, ready, send},
};
use platform::{
    service_auth::Service,
    testing::{Moto, TestPostgres},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::time::timeout;

/// Messages sent in the exactly-once check, half through each broker.
const MESSAGES: usize = 40;

/// auth, two chat instances and two brokers, each broker following its own chat.
struct Cluster {
    brokers: [String; 2],
    /// The gRPC servers: auth and both chat instances.
    grpc: Vec<(Service, String)>,
    processes: Vec<Process>,
    _databases: (TestPostgres, TestPostgres),
    _rabbit: TestRabbit,
    /// The attachments' bucket both chat instances share.
    _s3: Moto,
    dir: PathBuf,
}

impl Cluster {
    async fn start() -> Option<Self> {
        let bin = binaries(&["auth", "chat", "broker"])?;
        let auth_db = TestPostgres::create().await?;
        let chat_db = TestPostgres::create().await?;
        let rabbit = TestRabbit::create(3, Duration::from_secs(1)).await?;
        let s3 = Moto::start().await.expect("moto starts")?;
        let dir = common::temp_dir();
        let (auth, chats, brokers) = (
            free_port(),
            [free_port(), free_port()],
            [free_port(), free_port()],
        );
        let amqp = [
            ("AMQP_URL", rabbit.url.clone()),
            ("EVENTS_EXCHANGE", rabbit.exchange.clone()),
        ];
        let mut processes = vec![Process::spawn(
            &bin,
            "auth",
            &dir,
            &[
                ("AUTH_LISTEN", format!("127.0.0.1:{auth}")),
                ("DATABASE_URL", auth_db.url.clone()),
                ("AUTH_ARGON2_MEMORY_KIB", "8192".into()),
                ("AUTH_ARGON2_ITERATIONS", "1".into()),
                amqp[0].clone(),
                amqp[1].clone(),
            ],
        )];
        for (n, port) in chats.iter().enumerate() {
            processes.push(Process::spawn(
                &bin,
                &format!("chat-{n}"),
                &dir,
                &[
                    ("CHAT_LISTEN", format!("127.0.0.1:{port}")),
                    ("DATABASE_URL", chat_db.url.clone()),
                    ("CHAT_LIVE_EXCHANGE", rabbit.live_exchange.clone()),
                    ("CHAT_ATTACHMENTS_URL", format!("s3://{}", s3.bucket())),
                    ("CHAT_S3_ENDPOINT", s3.endpoint()),
                    ("CHAT_S3_ACCESS_KEY_ID", Moto::ACCESS_KEY_ID.into()),
                    ("CHAT_S3_SECRET_ACCESS_KEY", Moto::SECRET_ACCESS_KEY.into()),
                    amqp[0].clone(),
                    amqp[1].clone(),
                ],
            ));
        }
        for (n, (port, chat)) in brokers.iter().zip(chats).enumerate() {
            processes.push(Process::spawn(
                &bin,
                &format!("broker-{n}"),
                &dir,
                &[
                    ("BROKER_LISTEN", format!("127.0.0.1:{port}")),
                    ("BROKER_AUTH_URL", format!("http://127.0.0.1:{auth}")),
                    ("BROKER_CHAT_URL", format!("http://127.0.0.1:{chat}")),
                    ("BROKER_ID", format!("replica-test-broker-{n}")),
                    ("BROKER_RATE_LIMIT_AUTH", "off".into()),
                    ("BROKER_RATE_LIMIT_API", "off".into()),
                ],
            ));
        }
        let grpc = std::iter::once((Service::Auth, auth))
            .chain(chats.map(|port| (Service::Chat, port)))
            .map(|(service, port)| (service, format!("http://127.0.0.1:{port}")))
            .collect();
        let cluster = Self {
            brokers: brokers.map(|port| format!("http://127.0.0.1:{port}")),
            grpc,
            processes,
            _databases: (auth_db, chat_db),
            _rabbit: rabbit,
            _s3: s3,
            dir,
        };
        for broker in &cluster.brokers {
            cluster.ready(broker).await;
        }
        Some(cluster)
    }

    /// Waits for a broker's `/readyz` (auth, its chat and the live stream answer).
    async fn ready(&self, broker: &str) {
        assert!(
            answers_ok(&format!("{broker}/readyz"), Duration::from_secs(60)).await,
            "{broker} did not become ready\n{}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(Process::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn stop(mut self) {
        for process in &mut self.processes {
            process.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `user`'s socket on the broker at `base` (the user may have signed in elsewhere:
/// a token is good on every broker).
async fn socket_on(base: &str, user: &User) -> Socket {
    let mut socket = User {
        base: base.to_owned(),
        ..user.clone()
    }
    .open_socket()
    .await;
    ready(&mut socket).await;
    socket
}

/// Reads `socket` until `wanted` has arrived `count` times (or `within` passed); returns
/// how often each message id of the conversation arrived.
async fn message_ids(
    socket: &mut Socket,
    conversation: &str,
    count: usize,
    within: Duration,
) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + within;
    while seen.values().sum::<usize>() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(frame) = timeout(left, next_frame(socket)).await else {
            break;
        };
        if frame["type"] == "message" && frame["message"]["conversation_id"] == conversation {
            let body = frame["message"]["body"].as_str().unwrap_or_default();
            if body.starts_with("replica ") {
                let id = frame["message"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    seen
}

/// Sends `body` through the broker at `base` as `user` (REST); returns the message id.
async fn send_via(base: &str, user: &User, conversation: &str, body: &str) -> String {
    let user = User {
        base: base.to_owned(),
        ..user.clone()
    };
    let sent = user.send(conversation, body).await;
    sent["id"].as_str().expect("a message id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_and_two_chats_deliver_every_message_once_to_every_socket() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let [b0, b1] = cluster.brokers.clone();
    // Each process holds only its own private key, as in the cluster: a caller without
    // one is refused by every method of every replica.
    for (service, url) in &cluster.grpc {
        let answers = call_every_method(url, *service, None).await;
        assert_eq!(
            not_answering(&answers, tonic::Code::Unauthenticated),
            Vec::<&(String, tonic::Code)>::new(),
            "{service} at {url}"
        );
    }
    let ada = User::sign_up(&b0, "ada").await;
    let bob = User::sign_up(&b1, "bob").await;
    let cy = User::sign_up(&b0, "cyd").await;
    let room = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "replicas" }),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .expect("a room id")
        .to_owned();
    for (user, base) in [(&bob, &b1), (&cy, &b0)] {
        let user = User {
            base: base.clone(),
            ..user.clone()
        };
        user.post_expecting(
            &format!("/api/rooms/{room}/join"),
            &json!({}),
            StatusCode::OK,
        )
        .await;
    }

    // ada on both brokers, bob on broker 1, cy on broker 0.
    let mut sockets = vec![
        ("ada@0", socket_on(&b0, &ada).await),
        ("ada@1", socket_on(&b1, &ada).await),
        ("bob@1", socket_on(&b1, &bob).await),
        ("cyd@0", socket_on(&b0, &cy).await),
    ];

    // The chat instances link up over RabbitMQ in the background: wait until a message
    // sent through broker 0 reaches a socket on broker 1.
    let started = Instant::now();
    loop {
        let probe = send_via(&b0, &ada, &room, "probe").await;
        let bob_socket = &mut sockets[2].1;
        let arrived = timeout(Duration::from_millis(500), async {
            loop {
                let frame = next_frame(bob_socket).await;
                if frame["type"] == "message" && frame["message"]["id"] == probe.as_str() {
                    return;
                }
            }
        })
        .await;
        if arrived.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "live events never crossed from chat 0 to chat 1\n{}",
            cluster.logs()
        );
    }

    // Messages through both brokers (so through both chat instances), by all three.
    let senders = [(&ada, &b0), (&bob, &b1), (&cy, &b0), (&ada, &b1)];
    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        let (user, base) = senders[n % senders.len()];
        sent.push(send_via(base, user, &room, &format!("replica {n}")).await);
    }
    for (name, socket) in &mut sockets {
        let seen = message_ids(socket, &room, MESSAGES, Duration::from_secs(10)).await;
        let missing: Vec<_> = sent.iter().filter(|id| !seen.contains_key(*id)).collect();
        let twice: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
        assert!(
            missing.is_empty() && twice.is_empty(),
            "{name}: {} missing {missing:?}, duplicated {twice:?}\n{}",
            missing.len(),
            cluster.logs()
        );
        // Nothing more trickles in afterwards (a late duplicate).
        let late = message_ids(socket, &room, 1, Duration::from_millis(300)).await;
        assert!(late.is_empty(), "{name}: late duplicates {late:?}");
    }

    // Typing on broker 0 reaches bob on broker 1 (never the typist).
    send(
        &mut sockets[3].1,
        json!({ "type": "typing", "conversation_id": room }),
    )
    .await;
    let typing = next_of_type(&mut sockets[2].1, "typing").await;
    assert_eq!(typing["user_id"], cy.id.as_str());
    assert_eq!(typing["conversation_id"], room.as_str());

    // Presence across replicas: dee joins on broker 1; ada's socket on broker 0 sees her
    // come online, then go offline when her only socket closes; REST agrees on both.
    let dee = User::sign_up(&b1, "dee").await;
    dee.post_expecting(
        &format!("/api/rooms/{room}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let mut dee_socket = socket_on(&b1, &dee).await;
    let online = presence_of(&mut sockets[0].1, &dee.id, true).await;
    assert_eq!(online["connections"], 1);
    for base in [&b0, &b1] {
        let viewer = User {
            base: base.clone(),
            ..ada.clone()
        };
        assert!(viewer.online_usernames().await.contains(&"dee".to_owned()));
    }
    dee_socket.close(None).await.expect("the socket closes");
    presence_of(&mut sockets[0].1, &dee.id, false).await;

    // ada logs out through broker 1: her sockets on both brokers close at once.
    let logout = User {
        base: b1.clone(),
        ..ada.clone()
    }
    .post("/api/auth/logout", &json!({}))
    .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let mut ada_sockets: Vec<_> = sockets.drain(..2).collect();
    for (name, socket) in &mut ada_sockets {
        assert_eq!(
            close_code(socket, Duration::from_secs(1)).await,
            Some(4001),
            "{name} is closed by the logout"
        );
    }
    for base in [&b0, &b1] {
        let me = User {
            base: base.clone(),
            ..ada.clone()
        }
        .get("/api/auth/me")
        .await;
        assert_eq!(
            me.status(),
            StatusCode::UNAUTHORIZED,
            "{base} refuses the token"
        );
    }
    cluster.stop().await;
}

/// Reads `socket` up to `user`'s presence frame with `online`.
async fn presence_of(socket: &mut Socket, user: &str, online: bool) -> Value {
    loop {
        let frame = next_of_type(socket, "presence").await;
        if frame["user_id"] == user && frame["online"] == online {
            return frame;
        }
    }
}

/// Sends probes through `via` until one reaches `socket` (the chat instances link up
/// over RabbitMQ in the background).
async fn until_linked(cluster: &Cluster, via: &User, room: &str, socket: &mut Socket) {
    let started = Instant::now();
    loop {
        let probe = send_via(&via.base, via, room, "probe").await;
        let arrived = timeout(Duration::from_millis(500), async {
            loop {
                let frame = next_frame(socket).await;
                if frame["type"] == "message" && frame["message"]["id"] == probe.as_str() {
                    return;
                }
            }
        })
        .await;
        if arrived.is_ok() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "live events never crossed the replicas\n{}",
            cluster.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_reactions_cross_the_replicas() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let [b0, b1] = cluster.brokers.clone();
    let ada = User::sign_up(&b0, "ada").await;
    let bob = User {
        base: b1.clone(),
        ..User::sign_up(&b1, "bob").await
    };
    let room = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "edits" }),
            StatusCode::CREATED,
        )
        .await["id"]
        .as_str()
        .expect("a room id")
        .to_owned();
    bob.post_expecting(
        &format!("/api/rooms/{room}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let mut bob_socket = socket_on(&b1, &bob).await;
    until_linked(&cluster, &ada, &room, &mut bob_socket).await;

    // ada acts through broker 0 (chat 0); bob follows broker 1 (chat 1).
    let said = send_via(&b0, &ada, &room, "typo").await;
    let message = format!("/api/conversations/{room}/messages/{said}");
    let edited = ada
        .client
        .patch(format!("{b0}{message}"))
        .bearer_auth(&ada.token)
        .json(&json!({ "body": "fixed" }))
        .send()
        .await
        .expect("broker 0 answers");
    assert_eq!(edited.status(), StatusCode::OK);
    let frame = next_of_type(&mut bob_socket, "message_edited").await;
    assert_eq!(
        (
            frame["message"]["id"].as_str(),
            frame["message"]["body"].as_str()
        ),
        (Some(said.as_str()), Some("fixed"))
    );

    // ada reacts through broker 0; bob sees it live and in history through broker 1.
    let thumbs = format!("{message}/reactions/\u{1f44d}");
    let reacted = ada
        .client
        .put(format!("{b0}{thumbs}"))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("broker 0 answers");
    assert_eq!(reacted.status(), StatusCode::NO_CONTENT);
    let frame = next_of_type(&mut bob_socket, "reaction").await;
    assert_eq!(
        (
            frame["count"].as_u64(),
            frame["added"].as_bool(),
            frame["user_id"].as_str()
        ),
        (Some(1), Some(true), Some(ada.id.as_str()))
    );
    let page = bob
        .get_ok(&format!("/api/conversations/{room}/messages"))
        .await;
    assert_eq!(
        page["messages"][0]["reactions"],
        json!([{ "emoji": "\u{1f44d}", "count": 1, "me": false }])
    );

    assert_eq!(ada.delete(&message).await.status(), StatusCode::NO_CONTENT);
    let frame = next_of_type(&mut bob_socket, "message_deleted").await;
    assert_eq!(frame["message"]["id"], said.as_str());
    assert_eq!(frame["message"]["body"], "");
    cluster.stop().await;
}

/// A mention sent through one broker reaches the mentioned user's sockets on both
/// brokers (each following its own chat instance), and no other user's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_notifies_the_mentioned_users_sockets_on_both_replicas_only() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let [b0, b1] = cluster.brokers.clone();
    let ada = User::sign_up(&b0, "ada").await;
    let bob = User::sign_up(&b0, "bob").await;
    let cyd = User::sign_up(&b1, "cyd").await;
    let room = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "mentions" }),
            StatusCode::CREATED,
        )
        .await;
    let room = room["id"].as_str().expect("a room id").to_owned();
    for member in [&bob, &cyd] {
        member
            .post_expecting(
                &format!("/api/rooms/{room}/join"),
                &json!({}),
                StatusCode::OK,
            )
            .await;
    }
    let mut bobs = [socket_on(&b0, &bob).await, socket_on(&b1, &bob).await];
    let mut cyds = [socket_on(&b0, &cyd).await, socket_on(&b1, &cyd).await];
    let said = send_via(&b1, &ada, &room, "replica @bob look").await;
    for socket in &mut bobs {
        let frame = next_of_type(socket, "notification").await;
        assert_eq!(
            frame["notification"]["message_id"],
            said.as_str(),
            "{frame}"
        );
    }
    // cyd's sockets see the message itself, then nothing addressed to bob.
    for socket in &mut cyds {
        let (skipped, _) = common::ws::frames_until(socket, |frame| {
            frame["type"] == "message" && frame["message"]["id"] == said.as_str()
        })
        .await;
        assert!(skipped.iter().all(|frame| frame["type"] != "notification"));
        common::ws::nothing_of_type(socket, "notification").await;
    }
    cluster.stop().await;
}

/// A multipart body of one file part.
fn one_file(boundary: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_uploaded_through_one_replica_are_served_by_the_other_from_s3() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let [b0, b1] = cluster.brokers.clone();
    // Ada on one replica, Bob on the other.
    let ada = User::sign_up(&b0, "ada").await;
    let bob = User::sign_up(&b1, "bob").await;
    let direct = ada.open_direct(&bob).await;
    let mut bobs_socket = bob.open_socket().await;
    ready(&mut bobs_socket).await;

    // 6 MiB: more than one part of an S3 multipart upload.
    let bytes: Vec<u8> = (0..6 * 1024 * 1024_u32)
        .map(|n| u8::try_from(n % 251).expect("below 251"))
        .collect();
    let boundary = "replica-files";
    let answer = ada
        .client
        .post(format!("{b0}/api/conversations/{direct}/attachments"))
        .bearer_auth(&ada.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(one_file(boundary, "data.bin", &bytes))
        .send()
        .await
        .expect("broker 0 answers");
    assert_eq!(answer.status(), StatusCode::CREATED, "{}", cluster.logs());
    let file: Value = answer.json().await.unwrap();
    let id = file["id"].as_str().expect("an id").to_owned();

    // Sent through the other replica, seen live there, downloaded there.
    let sent = bob
        .post(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "mine", "attachment_ids": [id] }),
        )
        .await;
    assert_eq!(
        sent.status(),
        StatusCode::NOT_FOUND,
        "bob cannot send ada's file"
    );
    let ada_on_b1 = User {
        base: b1.clone(),
        ..ada.clone()
    };
    let sent = ada_on_b1
        .post_expecting(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "the data", "attachment_ids": [id] }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(sent["attachments"][0]["id"], id.as_str());
    let live = next_of_type(&mut bobs_socket, "message").await;
    assert_eq!(live["message"]["attachments"][0]["name"], "data.bin");
    let downloaded = bob.get(&format!("/api/attachments/{id}")).await;
    assert_eq!(downloaded.status(), StatusCode::OK);
    assert_eq!(
        downloaded.bytes().await.unwrap().as_ref(),
        bytes.as_slice(),
        "the same bytes, through the other replica, from the shared bucket"
    );
    let range = bob
        .client
        .get(format!("{b1}/api/attachments/{id}"))
        .bearer_auth(&bob.token)
        .header("range", "bytes=5242870-5242889")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.bytes().await.unwrap().as_ref(),
        &bytes[5_242_870..5_242_890]
    );
    cluster.stop().await;
}
