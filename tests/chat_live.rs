//! Live delivery as a client sees it: WebSockets on the embedded all-in-one, driven next
//! to the REST API. Frames are awaited, never slept for; the only bounded waits assert
//! that something does *not* arrive, or stand for a client that stays silent.

mod common;

use common::{
    TestApp, User,
    ws::{
        Socket, WAIT, close_code, frames_until, next_message, next_of_type, nothing_of_type, ready,
        send,
    },
};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{io::Cursor, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::frame::{
            FrameHeader,
            coding::{Control, OpCode},
        },
    },
};

// ---- REST -------------------------------------------------------------------------

/// A public room created by `by`; returns its id.
async fn room(by: &User, name: &str) -> String {
    let room = by
        .post_expecting("/api/rooms", &json!({ "name": name }), StatusCode::CREATED)
        .await;
    room["id"].as_str().unwrap().to_owned()
}

async fn history(of: &User, conversation: &str) -> Vec<Value> {
    let page = of
        .get_ok(&format!("/api/conversations/{conversation}/messages"))
        .await;
    page["messages"].as_array().unwrap().clone()
}

// ---- sockets ----------------------------------------------------------------------

fn bearer(user: &User) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", user.token))
}

fn session_cookie(user: &User) -> (&'static str, String) {
    ("cookie", format!("microchat_session={}", user.token))
}

async fn connect(
    app: &TestApp,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<Socket, tungstenite::Error> {
    let url = format!("{}{path}", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    timeout(WAIT, connect_async(request))
        .await
        .expect("the upgrade is answered")
        .map(|(socket, _)| socket)
}

/// The HTTP status of a refused upgrade.
async fn refused(app: &TestApp, path: &str, headers: &[(&'static str, String)]) -> StatusCode {
    match connect(app, path, headers).await {
        Ok(_) => panic!("the upgrade to {path} should be refused"),
        Err(tungstenite::Error::Http(response)) => {
            StatusCode::from_u16(response.status().as_u16()).unwrap()
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// `user`'s JSON socket, following their conversations.
async fn json_socket(app: &TestApp, user: &User) -> Socket {
    let mut socket = connect(app, "/ws", &[bearer(user)]).await.unwrap();
    ready(&mut socket).await;
    socket
}

/// The next line of a text-protocol socket.
async fn next_line(socket: &mut Socket) -> String {
    match next_message(socket).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text line, got {other:?}"),
    }
}

fn error_code(frame: &Value) -> &str {
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(
        frame["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error frames say why: {frame}"
    );
    frame["code"].as_str().unwrap()
}

fn is_message_in(frame: &Value, conversation: &str) -> bool {
    frame["type"] == "message" && frame["message"]["conversation_id"] == conversation
}

// ---- delivery ---------------------------------------------------------------------

#[tokio::test]
async fn message_sent_by_a_reaches_b_live_in_a_direct_conversation() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let mut ada_socket = json_socket(&app, &ada).await;
    let mut bob_socket = json_socket(&app, &bob).await;

    send(
        &mut ada_socket,
        json!({ "type": "send", "conversation_id": conversation, "body": "hi bob", "client_id": "c-1" }),
    )
    .await;
    let ack = next_of_type(&mut ada_socket, "ack").await;
    assert_eq!(ack["client_id"], "c-1");
    let stored = &ack["message"];
    assert_eq!(stored["conversation_id"], conversation.as_str());
    assert_eq!(stored["sender_id"], ada.id.as_str());
    assert_eq!(stored["body"], "hi bob");
    assert!(stored["created_at"].is_string(), "{stored}");

    let delivered = next_of_type(&mut bob_socket, "message").await;
    assert_eq!(delivered["message"]["id"], stored["id"]);
    assert_eq!(delivered["message"]["body"], "hi bob");
    assert_eq!(delivered["message"]["sender_name"], ada.username.as_str());
    assert_eq!(delivered["message"]["sender_id"], ada.id.as_str());
    assert_eq!(
        history(&bob, &conversation).await[0]["id"],
        stored["id"],
        "live frames carry the stored message"
    );
    app.stop().await;
}

#[tokio::test]
async fn read_receipt_from_b_reaches_a() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let mut ada_socket = json_socket(&app, &ada).await;
    let mut bob_socket = json_socket(&app, &bob).await;
    let sent = ada.send(&conversation, "did you read this?").await;
    let delivered = next_of_type(&mut bob_socket, "message").await;
    let up_to = delivered["message"]["id"].as_str().unwrap();
    assert_eq!(up_to, sent["id"]);

    send(
        &mut bob_socket,
        json!({ "type": "read", "conversation_id": conversation, "up_to": up_to }),
    )
    .await;
    let receipt = next_of_type(&mut ada_socket, "read").await;
    assert_eq!(receipt["conversation_id"], conversation.as_str());
    assert_eq!(receipt["user_id"], bob.id.as_str());
    assert_eq!(receipt["up_to"], up_to);
    app.stop().await;
}

#[tokio::test]
async fn typing_reaches_the_other_side_but_not_the_typer() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let mut ada_socket = json_socket(&app, &ada).await;
    let mut bob_socket = json_socket(&app, &bob).await;

    send(
        &mut ada_socket,
        json!({ "type": "typing", "conversation_id": conversation }),
    )
    .await;
    let typing = next_of_type(&mut bob_socket, "typing").await;
    assert_eq!(typing["conversation_id"], conversation.as_str());
    assert_eq!(typing["user_id"], ada.id.as_str());
    assert_eq!(typing["username"], ada.username.as_str());

    // Live events arrive in order: had Ada been sent her own typing, it would come
    // before her next message.
    ada.send(&conversation, "done typing").await;
    let (before, _) =
        frames_until(&mut ada_socket, |frame| is_message_in(frame, &conversation)).await;
    assert!(
        before.iter().all(|frame| frame["type"] != "typing"),
        "the typer sees no typing frame of her own: {before:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn presence_changes_when_b_connects_and_disconnects() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    ada.open_direct(&bob).await;
    let mut ada_socket = json_socket(&app, &ada).await;
    let is_bob = |frame: &Value| frame["type"] == "presence" && frame["user_id"] == bob.id.as_str();

    let mut bob_socket = json_socket(&app, &bob).await;
    let online = frames_until(&mut ada_socket, is_bob).await.1;
    assert_eq!(online["online"], true);
    assert_eq!(online["username"], bob.username.as_str());
    assert_eq!(online["connections"], 1);

    bob_socket.close(None).await.unwrap();
    assert!(
        matches!(next_message(&mut bob_socket).await, Message::Close(_)),
        "the broker answers a close: a clean closure"
    );
    let offline = frames_until(&mut ada_socket, is_bob).await.1;
    assert_eq!(offline["online"], false);
    assert_eq!(offline["connections"], 0);
    assert!(offline["since"].is_string(), "last seen: {offline}");
    app.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_leaves_nobody_online() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    ada.open_direct(&bob).await;
    let _ada_socket = json_socket(&app, &ada).await;
    let _bob_socket = json_socket(&app, &bob).await;
    common::eventually("both are online", || async {
        let mut online = ada.online_usernames().await;
        online.sort();
        online == ["ada", "bob"]
    })
    .await;

    // The broker stops before chat and tells it, last, that its sockets are closed; chat
    // forgets them then, instead of keeping them until it starts again.
    let data_dir = app.stop_keeping_data().await;
    let chat = common::read_only_sqlite(&data_dir.join("chat.db"));
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM connections")
        .fetch_one(&chat)
        .await
        .expect("chat's table answers");
    chat.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(open, 0, "no socket of the stopped broker is still counted");
}

#[tokio::test]
async fn a_conversation_joined_after_connecting_is_followed_live() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let lobby = room(&ada, "lobby").await;
    let mut ada_socket = json_socket(&app, &ada).await;
    let mut bob_socket = json_socket(&app, &bob).await;

    bob.post_expecting(
        &format!("/api/rooms/{lobby}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let joined = next_of_type(&mut ada_socket, "membership").await;
    assert_eq!(joined["conversation_id"], lobby.as_str());
    assert_eq!(joined["user_id"], bob.id.as_str());
    assert_eq!(joined["joined"], true);

    send(
        &mut ada_socket,
        json!({ "type": "send", "conversation_id": lobby, "body": "welcome, bob" }),
    )
    .await;
    let delivered = next_of_type(&mut bob_socket, "message").await;
    assert_eq!(delivered["message"]["conversation_id"], lobby.as_str());
    assert_eq!(delivered["message"]["body"], "welcome, bob");
    app.stop().await;
}

// ---- refusals ---------------------------------------------------------------------

#[tokio::test]
async fn non_member_gets_error_frames_and_no_events() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, cyd) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
    );
    let private = ada.open_direct(&bob).await;
    let cyds_own = ada.open_direct(&cyd).await;
    let secret = ada.send(&private, "just between us").await;
    let mut cyd_socket = json_socket(&app, &cyd).await;

    let random = uuid::Uuid::new_v4().to_string();
    let attempts = [
        json!({ "type": "send", "conversation_id": private, "body": "let me in", "client_id": "x" }),
        json!({ "type": "read", "conversation_id": private, "up_to": secret["id"] }),
        json!({ "type": "typing", "conversation_id": private }),
        json!({ "type": "send", "conversation_id": random, "body": "anyone?" }),
        json!({ "type": "typing", "conversation_id": random }),
    ];
    for attempt in attempts {
        send(&mut cyd_socket, attempt.clone()).await;
        let refusal = next_of_type(&mut cyd_socket, "error").await;
        assert_eq!(error_code(&refusal), "forbidden", "{attempt}");
        if attempt["client_id"] == "x" {
            assert_eq!(
                refusal["client_id"], "x",
                "a refused send names its client id"
            );
        }
    }

    // Live events arrive in order: anything of Ada and Bob's would come before the
    // message Ada sends Cyd afterwards.
    ada.send(&private, "still secret").await;
    ada.send(&cyds_own, "hi cyd").await;
    let (before, mine) =
        frames_until(&mut cyd_socket, |frame| is_message_in(frame, &cyds_own)).await;
    assert_eq!(mine["message"]["body"], "hi cyd");
    assert!(
        before
            .iter()
            .all(|frame| !frame.to_string().contains(&private)),
        "nothing of a conversation Cyd is not in: {before:?}"
    );
    nothing_of_type(&mut cyd_socket, "message").await;
    assert_eq!(
        history(&bob, &private).await.len(),
        2,
        "nothing of Cyd's got in"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_keeps_working() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let mut socket = json_socket(&app, &ada).await;

    let too_long_client_id = json!({
        "type": "send", "conversation_id": uuid::Uuid::new_v4(), "body": "hi", "client_id": "x".repeat(65),
    });
    let bad = [
        Message::text("this is not json"),
        Message::text(r#"{"type":"dance"}"#),
        Message::text(r#"{"type":"typing","conversation_id":"not-a-uuid"}"#),
        Message::text(r#"{"type":"ping","id":1,"extra":true}"#),
        Message::text(too_long_client_id.to_string()),
        Message::binary(vec![0_u8, 159, 146, 150]),
    ];
    for frame in bad {
        socket.send(frame.clone()).await.unwrap();
        let refusal = next_of_type(&mut socket, "error").await;
        assert_eq!(error_code(&refusal), "bad_frame", "{frame:?}");
    }

    send(&mut socket, json!({ "type": "ping", "id": 42 })).await;
    assert_eq!(next_of_type(&mut socket, "pong").await["id"], 42);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_socket() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let mut bob_socket = json_socket(&app, &bob).await;
    let mut big_socket = json_socket(&app, &ada).await;

    let huge = json!({
        "type": "send", "conversation_id": conversation, "body": "a".repeat(1024 * 1024),
    });
    // The broker may hang up before the whole frame is written.
    let _ = big_socket.send(Message::text(huge.to_string())).await;
    let code = close_code(&mut big_socket, WAIT).await;
    assert!(
        matches!(code, None | Some(1009)),
        "closed as too big, or dropped: {code:?}"
    );

    let health = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    ada.send(&conversation, "still here").await;
    let delivered = next_of_type(&mut bob_socket, "message").await;
    assert_eq!(delivered["message"]["body"], "still here");
    assert_eq!(
        history(&bob, &conversation).await.len(),
        1,
        "the oversized message was not stored"
    );
    app.stop().await;
}

/// What a flooding client saw: a `rate_limited` error frame, and how the socket ended.
struct FloodOutcome {
    rate_limited: bool,
    close: Option<u16>,
}

/// Writes `frames` pings as fast as the socket takes them while reading what comes back.
async fn flood(socket: Socket, frames: usize) -> FloodOutcome {
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        let ping = Message::text(r#"{"type":"ping"}"#);
        for _ in 0..frames {
            if sink.send(ping.clone()).await.is_err() {
                break;
            }
        }
    });
    let mut outcome = FloodOutcome {
        rate_limited: false,
        close: None,
    };
    loop {
        let next = timeout(WAIT, stream.next())
            .await
            .expect("the flooding socket is refused or closed in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                outcome.rate_limited |= frame["type"] == "error" && frame["code"] == "rate_limited";
            }
            Some(Ok(Message::Close(frame))) => {
                outcome.close = frame.map(|frame| frame.code.into());
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    writer.abort();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_socket_is_throttled_and_others_keep_chatting() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, cyd) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
    );
    let quiet_corner = bob.open_direct(&cyd).await;
    let mut cyd_socket = json_socket(&app, &cyd).await;
    let flooder = json_socket(&app, &ada).await;

    let flooding = tokio::spawn(flood(flooder, 10_000));
    bob.send(&quiet_corner, "are you there?").await;
    let delivered = timeout(
        Duration::from_secs(2),
        next_of_type(&mut cyd_socket, "message"),
    )
    .await
    .expect("others' messages arrive within 2 s despite the flood");
    assert_eq!(delivered["message"]["body"], "are you there?");

    let outcome = flooding.await.unwrap();
    assert!(
        outcome.rate_limited,
        "the flooder is told to slow down first"
    );
    assert_eq!(
        outcome.close,
        Some(1008),
        "then cut off as a policy violation"
    );

    bob.send(&quiet_corner, "after the flood").await;
    let after = next_of_type(&mut cyd_socket, "message").await;
    assert_eq!(after["message"]["body"], "after the flood");
    app.stop().await;
}

// ---- sessions and upgrades --------------------------------------------------------

#[tokio::test]
async fn logged_out_users_socket_is_closed_within_one_second() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let mut by_bearer = json_socket(&app, &bob).await;
    let mut by_cookie = connect(&app, "/ws", &[session_cookie(&bob)]).await.unwrap();
    ready(&mut by_cookie).await;
    let mut ada_socket = json_socket(&app, &ada).await;

    let logout = bob.post("/api/auth/logout", &json!({})).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let second = Duration::from_secs(1);
    assert_eq!(close_code(&mut by_bearer, second).await, Some(4001));
    assert_eq!(close_code(&mut by_cookie, second).await, Some(4001));

    for credential in [bearer(&bob), session_cookie(&bob)] {
        assert_eq!(
            refused(&app, "/ws", &[credential]).await,
            StatusCode::UNAUTHORIZED,
            "the ended session cannot reconnect"
        );
    }
    ada.send(&conversation, "bob?").await;
    let own = next_of_type(&mut ada_socket, "message").await;
    assert_eq!(own["message"]["body"], "bob?", "others keep their sockets");
    app.stop().await;
}

#[tokio::test]
async fn socket_needs_credentials_and_a_trusted_origin() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;

    assert_eq!(refused(&app, "/ws", &[]).await, StatusCode::UNAUTHORIZED);
    let forged = ("authorization", "Bearer not.a.token".to_owned());
    assert_eq!(
        refused(&app, "/ws", &[forged]).await,
        StatusCode::UNAUTHORIZED
    );
    let evil = ("origin", "https://evil.example".to_owned());
    assert_eq!(
        refused(&app, "/ws", &[bearer(&ada), evil.clone()]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        refused(&app, "/ws", &[session_cookie(&ada), evil]).await,
        StatusCode::FORBIDDEN,
        "cross-site WebSocket hijacking with the victim's cookie"
    );

    let trusted = ("origin", "http://localhost:8081".to_owned());
    let mut socket = connect(&app, "/ws", &[bearer(&ada), trusted])
        .await
        .expect("the frontend's origin may connect");
    ready(&mut socket).await;
    app.stop().await;
}

// ---- the plain-text room protocol -------------------------------------------------

#[tokio::test]
async fn text_room_socket_speaks_send_and_from() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let lobby = room(&ada, "lobby").await;
    let path = format!("/ws/rooms/{lobby}/text");
    let mut ada_text = connect(&app, &path, &[bearer(&ada)]).await.unwrap();
    let mut bob_text = connect(&app, &path, &[bearer(&bob)]).await.unwrap();

    // The answer also tells that Bob's socket is routed live events.
    bob_text.send(Message::text("HELLO")).await.unwrap();
    let usage = next_line(&mut bob_text).await;
    assert!(usage.starts_with("ERROR "), "{usage}");
    // Connecting joined Bob to the room, so his JSON socket follows it too.
    let mut bob_json = json_socket(&app, &bob).await;

    ada_text
        .send(Message::text("SEND hello there"))
        .await
        .unwrap();
    assert_eq!(
        next_line(&mut bob_text).await,
        format!("FROM {} hello there", ada.id)
    );
    let frame = next_of_type(&mut bob_json, "message").await;
    assert_eq!(frame["message"]["conversation_id"], lobby.as_str());
    assert_eq!(frame["message"]["body"], "hello there");
    assert_eq!(frame["message"]["sender_name"], ada.username.as_str());

    // A plain GET, no upgrade, is refused and joins nobody.
    let carol = app.user("carol").await;
    let plain = carol.get(&path).await;
    assert!(
        plain.status().is_client_error(),
        "a plain GET of the text socket: {}",
        plain.status()
    );
    assert!(
        !carol.conversation_ids().await.contains(&lobby),
        "a plain GET joined the room"
    );

    let nowhere = format!("/ws/rooms/{}/text", uuid::Uuid::new_v4());
    assert_eq!(
        refused(&app, &nowhere, &[bearer(&ada)]).await,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

// ---- idle sockets -----------------------------------------------------------------

/// Opens `/ws` as `user` over a bare TCP connection that then neither reads nor
/// writes for `silence` (a WebSocket library would answer pings as soon as it reads);
/// returns the close code of the server's close frame, if it sent one.
async fn close_code_of_a_silent_client(
    app: &TestApp,
    user: &User,
    silence: Duration,
) -> Option<u16> {
    let host = app.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\n\r\n",
        user.token
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    tokio::time::sleep(silence).await;

    let mut received = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut received))
        .await
        .expect("the server has hung up on the silent client")
        .unwrap();
    let end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP answer");
    assert!(received.starts_with(b"HTTP/1.1 101"), "upgraded");
    let frames = &received[end + 4..];
    let mut cursor = Cursor::new(frames);
    while let Some((header, length)) = FrameHeader::parse(&mut cursor).unwrap() {
        let start = usize::try_from(cursor.position()).unwrap();
        let payload = &frames[start..start + usize::try_from(length).unwrap()];
        if header.opcode == OpCode::Control(Control::Close) {
            return payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]]));
        }
        cursor.set_position((start + payload.len()) as u64);
    }
    None
}

#[tokio::test]
async fn a_socket_that_never_answers_pings_is_closed_as_idle() {
    let app = TestApp::start(&[
        "--broker-ws-idle-timeout=1s",
        "--broker-ws-ping-interval=300ms",
    ])
    .await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let mut lively = json_socket(&app, &bob).await;

    // A client that reads answers every ping, and stays while the silent one is closed.
    let watch_lively = async {
        let closed = timeout(Duration::from_secs(3), async {
            loop {
                match lively.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    other => panic!("the lively socket failed: {other:?}"),
                }
            }
        })
        .await;
        assert!(
            closed.is_err(),
            "a client that answers pings stays: {closed:?}"
        );
    };
    let silent = close_code_of_a_silent_client(&app, &ada, Duration::from_secs(3));
    let ((), code) = tokio::join!(watch_lively, silent);

    assert_eq!(code, Some(4009), "closed as idle");
    ready(&mut lively).await;
    app.stop().await;
}
