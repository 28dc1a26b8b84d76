//! A JSON WebSocket as a test client reads it: frames awaited (never slept for), the
//! server's pings skipped; the only bounded waits assert that something does *not*
//! arrive.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// A client's WebSocket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for a frame that should not come.
pub const QUIET: Duration = Duration::from_millis(300);

/// Sends one JSON frame.
pub async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// Waits until the socket's loop answers: from then on it is routed live events.
pub async fn ready(socket: &mut Socket) {
    send(socket, json!({ "type": "ping", "id": 7 })).await;
    let pong = next_of_type(socket, "pong").await;
    assert_eq!(pong["id"], 7);
}

/// The next data or close message, skipping the server's pings.
pub async fn next_message(socket: &mut Socket) -> Message {
    loop {
        let message = timeout(WAIT, socket.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket is open")
            .expect("the socket reads");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next JSON frame.
pub async fn next_frame(socket: &mut Socket) -> Value {
    match next_message(socket).await {
        Message::Text(text) => serde_json::from_str(&text).expect("frames are JSON"),
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

/// Reads up to the first frame that `wanted` accepts; returns the frames skipped, and it.
pub async fn frames_until(
    socket: &mut Socket,
    wanted: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Value) {
    let mut skipped = Vec::new();
    loop {
        let frame = next_frame(socket).await;
        if wanted(&frame) {
            return (skipped, frame);
        }
        skipped.push(frame);
    }
}

/// The next frame of type `kind`, skipping others (presence, membership...).
pub async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    frames_until(socket, |frame| frame["type"] == kind).await.1
}

/// Asserts that no frame of type `kind` arrives for a short while.
pub async fn nothing_of_type(socket: &mut Socket, kind: &str) {
    let watch = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(frame["type"], kind, "unexpected frame {frame}");
            }
        }
    };
    let _ = timeout(QUIET, watch).await;
}

/// The close code the server sent, or `None` when the connection just dropped.
pub async fn close_code(socket: &mut Socket, within: Duration) -> Option<u16> {
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| frame.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    };
    timeout(within, read)
        .await
        .expect("the server closes the socket in time")
}

/// Opens the JSON WebSocket of the broker at `base` (`http://…`) with a bearer token;
/// `None` when it does not open within [`WAIT`] (the server is down or restarting).
pub async fn open(base: &str, token: &str) -> Option<Socket> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::header};
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token is header-safe"),
    );
    match timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((socket, _))) => Some(socket),
        _ => None,
    }
}
