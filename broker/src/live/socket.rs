//! One WebSocket, from upgrade to close: presence in chat, registration in the hub, then a
//! single task that writes queued live frames and answers the client's frames. Bounded
//! on every side: frame size (set at upgrade), frames per second, an idle timeout, and
//! the hub's per-socket queue.

use super::{
    frames::{Inbound, MessageView, Outbound, TextCommand, parse_text},
    hub::{Frame, Outgoing, OutgoingQueue, Protocol, close},
};
use crate::{AppState, error::ApiError, sends::SendError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use platform::token::Claims;
use proto::chat::v1::{self as pb, chat_client::ChatClient};
use std::{collections::VecDeque, num::NonZeroU32, pin::Pin, sync::Arc, time::Duration};
use tokio::time::Instant;
use uuid::Uuid;

/// Refused frames in a row after which a flooding socket is closed.
const MAX_REFUSED_IN_A_ROW: u32 = 100;
/// Longest `client_id` echoed back.
const MAX_CLIENT_ID: usize = 64;

/// Most attachments one message carries (chat's rule, checked here before the send is
/// queued).
const MAX_ATTACHMENTS: usize = 10;
/// Longest wait for the client's answering close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Limits of every socket, from the broker's settings.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Frames per second a client may send (and burst).
    pub frames_per_second: NonZeroU32,
    /// Close after this long without any frame from the client.
    pub idle_timeout: Duration,
    /// Send a ping this often.
    pub ping_interval: Duration,
}

/// Who is on the socket and what it speaks. Held for the socket's whole life, so it
/// keeps only what the socket needs (the verified claims, shared with the token cache;
/// not the token itself, some 500 bytes a socket).
pub struct SocketSpec {
    /// What the authenticated user's token says.
    pub claims: Arc<Claims>,
    /// JSON or the text room protocol.
    pub protocol: Protocol,
    /// For text sockets: the room.
    pub room: Option<Uuid>,
}

fn caller_message(claims: &Claims) -> pb::Caller {
    pb::Caller {
        user_id: claims.sub.to_string(),
        username: claims.name.clone(),
    }
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    // Dropping the connection while the client's frames sit unread makes the kernel
    // reset it, and a reset discards what we sent last (the close code, a `rate_limited`
    // notice). So finish the closing handshake: drain until the client's close, briefly.
    let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::SESSION_ENDED => "session ended",
        close::TOO_SLOW => "too slow to keep up",
        close::GOING_AWAY => "server shutting down",
        _ => "closed",
    }
}

/// How opening a socket with chat went.
enum Opening {
    /// The broker is shutting down.
    Stopped,
    /// Chat could not be reached; `recorded` when it had already counted the socket.
    Unavailable { recorded: bool },
    /// Recorded, following these conversations.
    Open(Vec<Uuid>),
}

/// Records the socket with chat (presence) and asks which conversations it follows, a
/// bounded number of sockets at a time.
async fn open(state: &AppState, spec: &SocketSpec, connection_id: Uuid) -> Opening {
    let Ok(_opening) = state.socket_opening.clone().acquire_owned().await else {
        return Opening::Stopped;
    };
    let request = pb::OpenConnectionRequest {
        caller: Some(caller_message(&spec.claims)),
        connection_id: connection_id.to_string(),
        broker_id: state.broker_id.to_string(),
    };
    if let Err(status) = state.chat.clone().open_connection(request).await {
        tracing::warn!(%status, "cannot open a socket: chat unavailable");
        return Opening::Unavailable { recorded: false };
    }
    if let (Protocol::Text, Some(room)) = (spec.protocol, spec.room) {
        return Opening::Open(vec![room]);
    }
    let request = pb::ListMembershipsRequest {
        user_id: spec.claims.sub.to_string(),
    };
    match state.chat.clone().list_memberships(request).await {
        Ok(answer) => Opening::Open(
            answer
                .into_inner()
                .conversation_ids
                .iter()
                .filter_map(|id| Uuid::try_parse(id).ok())
                .collect(),
        ),
        Err(status) => {
            tracing::warn!(%status, "cannot open a socket: memberships unavailable");
            Opening::Unavailable { recorded: true }
        }
    }
}

/// Serves one upgraded socket until it closes.
///
/// Not an `async fn`: the arguments of one are kept twice in its future (once as passed,
/// once moved into the body; rust-lang/rust#62958), which for a WebSocket is 400 bytes a
/// socket. An `async move` block uses what it captured in place.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice (see above)"
)]
pub fn serve(
    mut socket: WebSocket,
    state: AppState,
    spec: SocketSpec,
) -> impl Future<Output = ()> + Send {
    async move {
        // An open socket's task keeps room for the largest future it may await at any point,
        // for as long as it lives, and that task is most of what an idle socket costs. So
        // everything but the hot path (writing queued frames, reading the next frame) is
        // boxed — gRPC calls, replies, pings, the closing handshake — and allocated only while
        // it runs (`a_socket_task_stays_small` keeps an eye on it).
        let Some(_permit) = state.socket_quota.acquire(spec.claims.sub) else {
            metrics::counter!("broker_sockets_over_quota_total").increment(1);
            Box::pin(close_with(
                &mut socket,
                close::TOO_MANY_SOCKETS,
                "too many open sockets for this user",
            ))
            .await;
            return;
        };
        let connection_id = Uuid::now_v7();
        match Box::pin(open(&state, &spec, connection_id)).await {
            Opening::Stopped => return,
            Opening::Unavailable { recorded } => {
                Box::pin(close_with(
                    &mut socket,
                    close::UNAVAILABLE,
                    "chat is unavailable, try again shortly",
                ))
                .await;
                if !recorded {
                    return;
                }
            }
            Opening::Open(conversations) => {
                let claims = &spec.claims;
                let registration =
                    state
                        .hub
                        .register(claims.sub, claims.sid, spec.protocol, conversations);
                // A logout between the upgrade and the registration must still close us.
                if state.sessions.is_revoked(claims.sid) {
                    registration.outgoing.close(close::SESSION_ENDED);
                }
                SocketLoop {
                    socket: &mut socket,
                    state: &state,
                    spec: &spec,
                    outgoing: &registration.outgoing,
                }
                .run()
                .await;
                state.hub.unregister(registration.id);
            }
        }
        // Presence must not wait on the closing client, nor hang if chat is away.
        tokio::spawn(record_closed(state.clone(), connection_id));
    }
}

/// Attempts to record one closed socket with chat before giving up.
const CLOSE_ATTEMPTS: u32 = 8;

/// Tells chat that a socket closed (so its user goes offline once the last one has): a
/// bounded number at once, retried with back-off while chat is busy or away (some 20 s
/// of back-off in all, besides the wait for a turn). Given up after [`CLOSE_ATTEMPTS`],
/// the socket stays counted until this broker goes away (chat then forgets all of its
/// sockets); counted in `broker_socket_close_unrecorded_total`. Not once this broker is
/// shutting down: it tells chat in one call, last, that all of its sockets are closed.
async fn record_closed(state: AppState, connection_id: Uuid) {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1..=CLOSE_ATTEMPTS {
        if state.shutdown.is_cancelled() {
            return;
        }
        let answer = {
            let Ok(_permit) = state.socket_closing.clone().acquire_owned().await else {
                return;
            };
            let request = pb::CloseConnectionRequest {
                connection_id: connection_id.to_string(),
            };
            Box::pin(state.chat.clone().close_connection(request)).await
        };
        match answer {
            Ok(_) => return,
            Err(status) if attempt == CLOSE_ATTEMPTS => {
                metrics::counter!("broker_socket_close_unrecorded_total").increment(1);
                tracing::warn!(%status, %connection_id, "cannot record a closed socket; gave up");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

struct SocketLoop<'a> {
    socket: &'a mut WebSocket,
    state: &'a AppState,
    spec: &'a SocketSpec,
    outgoing: &'a OutgoingQueue,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

impl SocketLoop<'_> {
    async fn run(mut self) {
        let limits = self.state.socket_limits;
        let limiter: DefaultDirectRateLimiter =
            RateLimiter::direct(Quota::per_second(limits.frames_per_second));
        // Each socket's first ping lands at a random point of the interval: sockets opened
        // together (a deploy, a network blip) must not all ping in the same instant forever.
        let spread = limits
            .ping_interval
            .mul_f64((Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0);
        let mut ping = tokio::time::interval_at(
            Instant::now() + limits.ping_interval + spread,
            limits.ping_interval,
        );
        let mut last_heard = Instant::now();
        let mut refused_in_a_row = 0_u32;
        let mut last_refusal_notice: Option<Instant> = None;
        // Made once, not per wake-up: the shutdown token is shared by every socket, and
        // re-registering with it on each frame costs the broker at 10,000 sockets.
        let shutdown = self.state.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            let flow = tokio::select! {
                biased;
                outgoing = self.outgoing.next() => match outgoing {
                    Outgoing::Close(code) => Flow::Close(code, close_reason(code)),
                    Outgoing::Frames(frames) => self.write_queued(frames).await,
                },
                () = &mut stopping => Flow::Close(close::GOING_AWAY, close_reason(close::GOING_AWAY)),
                incoming = self.socket.recv() => match incoming {
                    None => return,
                    Some(Ok(Message::Close(_))) => {
                        // The library queued the answering close frame: send it, or the
                        // client sees an abnormal closure (1006) instead of a clean one.
                        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, self.socket.flush())).await;
                        return;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "socket read failed");
                        Flow::Close(close::TOO_BIG, "frame refused")
                    }
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        if limiter.check().is_ok() {
                            refused_in_a_row = 0;
                            Box::pin(self.handle(message)).await
                        } else {
                            refused_in_a_row += 1;
                            let quiet = last_refusal_notice.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
                            if refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
                                Flow::Close(close::POLICY, "too many frames")
                            } else if quiet {
                                last_refusal_notice = Some(Instant::now());
                                Box::pin(self.refuse("rate_limited", "too many frames, slow down", None)).await
                            } else {
                                Flow::Continue
                            }
                        }
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > limits.idle_timeout {
                        Flow::Close(close::IDLE, "idle for too long")
                    } else {
                        Box::pin(self.send(Message::Ping(Default::default()))).await
                    }
                }
            };
            if let Flow::Close(code, reason) = flow {
                Box::pin(close_with(self.socket, code, reason)).await;
                return;
            }
        }
    }

    async fn send(&mut self, message: Message) -> Flow {
        match self.socket.send(message).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(close::GOING_AWAY, "write failed"),
        }
    }

    /// Writes the frames queued so far with one flush: under load a socket pays one system
    /// call per burst rather than per frame.
    async fn write_queued(&mut self, frames: VecDeque<Frame>) -> Flow {
        for frame in frames {
            // The last recipient to write a frame takes it; the others share its bytes.
            let text = Arc::unwrap_or_clone(frame);
            if self.socket.feed(Message::Text(text)).await.is_err() {
                return Flow::Close(close::GOING_AWAY, "write failed");
            }
        }
        match self.socket.flush().await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(close::GOING_AWAY, "write failed"),
        }
    }

    /// Writes `frame` and, behind it, whatever its outgoing queue holds already, with one flush:
    /// a sender's own message is often queued by the time its `ack` is written, and each
    /// flush is a system call (and on loopback the receiver's side of TCP too).
    async fn write_with_queued(&mut self, frame: Utf8Bytes) -> Flow {
        if self.socket.feed(Message::Text(frame)).await.is_err() {
            return Flow::Close(close::GOING_AWAY, "write failed");
        }
        let queued = self.outgoing.take_queued().unwrap_or_default();
        self.write_queued(queued).await
    }

    async fn write(&mut self, frame: Utf8Bytes) -> Flow {
        self.send(Message::Text(frame)).await
    }

    async fn reply(&mut self, frame: Outbound<'_>) -> Flow {
        let text = frame.to_json();
        self.write(text.into()).await
    }

    async fn refuse(&mut self, code: &str, message: &str, client_id: Option<&str>) -> Flow {
        match self.spec.protocol {
            Protocol::Json => {
                self.reply(Outbound::Error {
                    code,
                    message,
                    client_id,
                    retry_after_ms: None,
                })
                .await
            }
            Protocol::Text => {
                let line = format!("ERROR {}", super::frames::escape_line(message));
                self.write(line.into()).await
            }
        }
    }

    async fn handle(&mut self, message: Message) -> Flow {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .refuse("bad_frame", "binary frames are not supported", None)
                    .await;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Flow::Continue,
        };
        match self.spec.protocol {
            Protocol::Json => match serde_json::from_str::<Inbound>(&text) {
                Ok(frame) => self.handle_json(frame).await,
                Err(error) => {
                    let message = format!("not a valid frame: {error}");
                    self.refuse("bad_frame", &message, None).await
                }
            },
            Protocol::Text => match parse_text(&text) {
                Ok(TextCommand::Send(body)) => {
                    let room = self.spec.room.expect("text sockets always have a room");
                    match self.send_message(room, body.to_owned(), &[]).await {
                        Ok(_) => Flow::Continue,
                        Err(error) => self.refuse_send(error, None).await,
                    }
                }
                Err(usage) => self.refuse("bad_frame", usage, None).await,
            },
        }
    }

    fn chat(&self) -> ChatClient<platform::grpc::TracedChannel> {
        self.state.chat.clone()
    }

    /// Sends `body` to `conversation` as this socket's user (chat checks the membership).
    ///
    /// The wait holds only the batcher, not the socket loop (the socket is not `Sync`),
    /// and is boxed: it takes room while a send is in flight, not in every idle socket's
    /// task.
    fn send_message(
        &self,
        conversation: Uuid,
        body: String,
        attachments: &[Uuid],
    ) -> Pin<Box<dyn Future<Output = Result<pb::Message, SendError>> + Send + '_>> {
        let request = pb::SendMessageRequest {
            caller: Some(caller_message(&self.spec.claims)),
            conversation_id: conversation.to_string(),
            body,
            attachment_ids: attachments.iter().map(Uuid::to_string).collect(),
        };
        Box::pin(self.state.sends.send(request))
    }

    /// Answers a send that was not stored: `overloaded` with its retry hint when the
    /// broker refused it, else chat's refusal.
    async fn refuse_send(&mut self, error: SendError, client_id: Option<&str>) -> Flow {
        let refusal = match error {
            SendError::Chat(status) => return self.refuse_status(&status, client_id).await,
            SendError::Overloaded(refusal) => refusal,
        };
        let retry_after_ms = u64::try_from(refusal.retry_after.as_millis()).unwrap_or(u64::MAX);
        match self.spec.protocol {
            Protocol::Json => {
                self.reply(Outbound::Error {
                    code: "overloaded",
                    message: "the server is overloaded and did not send this message; retry after retry_after_ms",
                    client_id,
                    retry_after_ms: Some(retry_after_ms),
                })
                .await
            }
            Protocol::Text => {
                let line = format!("ERROR overloaded, not sent: retry after {retry_after_ms} ms");
                self.write(line.into()).await
            }
        }
    }

    async fn refuse_status(&mut self, status: &tonic::Status, client_id: Option<&str>) -> Flow {
        let error = ApiError::from_grpc("chat", status);
        self.refuse(error.code, &error.message, client_id).await
    }

    async fn handle_json(&mut self, frame: Inbound) -> Flow {
        match frame {
            Inbound::Send {
                conversation_id,
                body,
                client_id,
                attachment_ids,
            } => {
                if client_id
                    .as_ref()
                    .is_some_and(|id| id.len() > MAX_CLIENT_ID)
                {
                    return self
                        .refuse("bad_frame", "client_id: at most 64 bytes", None)
                        .await;
                }
                if attachment_ids.len() > MAX_ATTACHMENTS {
                    return self
                        .refuse(
                            "bad_frame",
                            "attachment_ids: at most 10",
                            client_id.as_deref(),
                        )
                        .await;
                }
                let client_id = client_id.as_deref();
                match self
                    .send_message(conversation_id, body, &attachment_ids)
                    .await
                {
                    Ok(stored) => {
                        let message = MessageView::from(&stored);
                        let ack = Outbound::Ack { client_id, message }.to_json();
                        self.write_with_queued(ack.into()).await
                    }
                    Err(error) => self.refuse_send(error, client_id).await,
                }
            }
            Inbound::Typing { conversation_id } => {
                let request = pb::SetTypingRequest {
                    caller: Some(caller_message(&self.spec.claims)),
                    conversation_id: conversation_id.to_string(),
                };
                match self.chat().set_typing(request).await {
                    Ok(_) => Flow::Continue,
                    Err(status) => self.refuse_status(&status, None).await,
                }
            }
            Inbound::Read {
                conversation_id,
                up_to,
            } => {
                let request = pb::MarkReadRequest {
                    caller: Some(caller_message(&self.spec.claims)),
                    conversation_id: conversation_id.to_string(),
                    up_to: up_to.to_string(),
                };
                match self.chat().mark_read(request).await {
                    Ok(_) => Flow::Continue,
                    Err(status) => self.refuse_status(&status, None).await,
                }
            }
            Inbound::Ping { id } => self.reply(Outbound::Pong { id }).await,
            Inbound::Edit {
                conversation_id,
                message_id,
                body,
            } => {
                let request = pb::EditMessageRequest {
                    caller: Some(caller_message(&self.spec.claims)),
                    conversation_id: conversation_id.to_string(),
                    message_id: message_id.to_string(),
                    body,
                };
                match self.chat().edit_message(request).await {
                    Ok(_) => Flow::Continue,
                    Err(status) => self.refuse_status(&status, None).await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, read off its type without calling it.
    fn future_size<A, B, C, F: Future>(_: &impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open socket keeps one such future for its whole life: it is most of what an
    /// idle socket costs, so growing it should be a decision, not an accident.
    #[test]
    fn a_socket_task_stays_small() {
        let size = future_size(&serve);
        eprintln!("socket task future: {size} bytes");
        assert!(
            size <= 4096,
            "the socket task's future grew to {size} bytes"
        );
    }
}
