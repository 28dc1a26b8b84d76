//! One WebSocket, from upgrade to close: presence in chat, registration in the hub, then a
//! single task that writes queued live frames and answers the client's frames. Bounded
//! on every side: frame size (set at upgrade), frames per second, an idle timeout, and
//! the hub's per-socket queue.

use super::{
    frames::{Inbound, MessageView, Outbound, TextCommand, parse_text},
    hub::{Frame, Protocol, Registration, close},
};
use crate::{AppState, error::ApiError, extract::AuthUser};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use proto::chat::v1::{self as pb, chat_client::ChatClient};
use std::{num::NonZeroU32, sync::Arc, time::Duration};
use tokio::time::Instant;
use uuid::Uuid;

/// Refused frames in a row after which a flooding socket is closed.
const MAX_REFUSED_IN_A_ROW: u32 = 100;
/// Most queued frames written behind one flush.
const MAX_FRAMES_PER_FLUSH: usize = 64;
/// Longest `client_id` echoed back.
const MAX_CLIENT_ID: usize = 64;
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

/// Who is on the socket and what it speaks.
pub struct SocketSpec {
    /// The authenticated user.
    pub caller: AuthUser,
    /// JSON or the text room protocol.
    pub protocol: Protocol,
    /// For text sockets: the room.
    pub room: Option<Uuid>,
}

fn caller_message(caller: &AuthUser) -> pb::Caller {
    pb::Caller {
        user_id: caller.claims.sub.to_string(),
        username: caller.claims.name.clone(),
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

/// Serves one upgraded socket until it closes.
pub async fn serve(mut socket: WebSocket, state: AppState, spec: SocketSpec) {
    let connection_id = Uuid::now_v7();
    let user = caller_message(&spec.caller);
    let mut chat = state.chat.clone();
    let Ok(opening) = Box::pin(state.socket_opening.clone().acquire_owned()).await else {
        return;
    };
    // gRPC futures are boxed throughout: an idle socket's task should not reserve room
    // for calls it is not making (the task is most of a socket's memory).
    let opened = Box::pin(chat.open_connection(pb::OpenConnectionRequest {
        caller: Some(user.clone()),
        connection_id: connection_id.to_string(),
        broker_id: state.broker_id.to_string(),
    }))
    .await;
    if let Err(status) = opened {
        drop(opening);
        tracing::warn!(%status, "cannot open a socket: chat unavailable");
        close_with(
            &mut socket,
            close::UNAVAILABLE,
            "chat is unavailable, try again shortly",
        )
        .await;
        return;
    }
    let conversations = match (spec.protocol, spec.room) {
        (Protocol::Text, Some(room)) => Ok(vec![room]),
        _ => Box::pin(
            state
                .chat
                .clone()
                .list_memberships(pb::ListMembershipsRequest {
                    user_id: user.user_id.clone(),
                }),
        )
        .await
        .map(|answer| {
            let ids = answer.into_inner().conversation_ids;
            ids.iter()
                .filter_map(|id| Uuid::try_parse(id).ok())
                .collect()
        }),
    };
    drop(opening);
    match conversations {
        Ok(conversations) => {
            let claims = &spec.caller.claims;
            let registration =
                state
                    .hub
                    .register(claims.sub, claims.sid, spec.protocol, conversations);
            // A logout between the upgrade and the registration must still close us.
            if state.sessions.is_revoked(claims.sid) {
                registration.closer.close(close::SESSION_ENDED);
            }
            let id = registration.id;
            SocketLoop {
                socket: &mut socket,
                state: &state,
                spec: &spec,
                user: &user,
            }
            .run(registration)
            .await;
            state.hub.unregister(id);
        }
        Err(status) => {
            tracing::warn!(%status, "cannot open a socket: memberships unavailable");
            close_with(
                &mut socket,
                close::UNAVAILABLE,
                "chat is unavailable, try again shortly",
            )
            .await;
        }
    }
    // Presence must not wait on the closing client, nor hang if chat is away.
    tokio::spawn(record_closed(state.clone(), connection_id));
}

/// Attempts to record one closed socket with chat before giving up.
const CLOSE_ATTEMPTS: u32 = 8;

/// Tells chat that a socket closed (so its user goes offline once the last one has): a
/// bounded number at once, retried with back-off while chat is busy or away (some 20 s
/// of back-off in all, besides the wait for a turn). Given up after [`CLOSE_ATTEMPTS`],
/// the socket stays counted until this broker goes away (chat then forgets all of its
/// sockets); counted in `broker_socket_close_unrecorded_total`.
async fn record_closed(state: AppState, connection_id: Uuid) {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1..=CLOSE_ATTEMPTS {
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
    user: &'a pb::Caller,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

impl SocketLoop<'_> {
    async fn run(mut self, mut registration: Registration) {
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
        let closer = Arc::clone(&registration.closer);
        let closing = closer.closed();
        tokio::pin!(stopping, closing);
        loop {
            let flow = tokio::select! {
                biased;
                () = &mut closing => {
                    let code = registration.closer.code().unwrap_or(close::POLICY);
                    Flow::Close(code, close_reason(code))
                }
                () = &mut stopping => Flow::Close(close::GOING_AWAY, close_reason(close::GOING_AWAY)),
                frame = registration.frames.recv() => match frame {
                    Some(frame) => self.write_queued(frame, &mut registration.frames).await,
                    None => Flow::Close(close::GOING_AWAY, "closed"),
                },
                incoming = self.socket.recv() => match incoming {
                    None => return,
                    Some(Ok(Message::Close(_))) => {
                        // The library queued the answering close frame: send it, or the
                        // client sees an abnormal closure (1006) instead of a clean one.
                        let _ = tokio::time::timeout(CLOSE_GRACE, self.socket.flush()).await;
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
                                self.refuse("rate_limited", "too many frames, slow down", None).await
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
                        self.send(Message::Ping(Default::default())).await
                    }
                }
            };
            if let Flow::Close(code, reason) = flow {
                close_with(self.socket, code, reason).await;
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

    /// Writes a queued frame and whatever else is already queued behind it, with one flush:
    /// under load a socket pays one system call per burst rather than per frame.
    async fn write_queued(
        &mut self,
        first: Frame,
        queue: &mut tokio::sync::mpsc::Receiver<Frame>,
    ) -> Flow {
        // The last recipient to write a frame takes it; the others share its bytes.
        let text = Arc::unwrap_or_clone;
        if self.socket.feed(Message::Text(text(first))).await.is_err() {
            return Flow::Close(close::GOING_AWAY, "write failed");
        }
        for _ in 0..MAX_FRAMES_PER_FLUSH {
            let Ok(next) = queue.try_recv() else { break };
            if self.socket.feed(Message::Text(text(next))).await.is_err() {
                return Flow::Close(close::GOING_AWAY, "write failed");
            }
        }
        match self.socket.flush().await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(close::GOING_AWAY, "write failed"),
        }
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
                })
                .await
            }
            Protocol::Text => self.write(format!("ERROR {message}").into()).await,
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
                    match self
                        .chat()
                        .send_message(self.send_request(room, body.to_owned()))
                        .await
                    {
                        Ok(_) => Flow::Continue,
                        Err(status) => self.refuse_status(&status, None).await,
                    }
                }
                Err(usage) => self.refuse("bad_frame", usage, None).await,
            },
        }
    }

    fn chat(&self) -> ChatClient<platform::grpc::TracedChannel> {
        self.state.chat.clone()
    }

    fn send_request(&self, conversation: Uuid, body: String) -> pb::SendMessageRequest {
        pb::SendMessageRequest {
            caller: Some(self.user.clone()),
            conversation_id: conversation.to_string(),
            body,
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
            } => {
                if client_id
                    .as_ref()
                    .is_some_and(|id| id.len() > MAX_CLIENT_ID)
                {
                    return self
                        .refuse("bad_frame", "client_id: at most 64 bytes", None)
                        .await;
                }
                let client_id = client_id.as_deref();
                match self
                    .chat()
                    .send_message(self.send_request(conversation_id, body))
                    .await
                {
                    Ok(answer) => {
                        let message = MessageView::from(&answer.into_inner());
                        self.reply(Outbound::Ack { client_id, message }).await
                    }
                    Err(status) => self.refuse_status(&status, client_id).await,
                }
            }
            Inbound::Typing { conversation_id } => {
                let request = pb::SetTypingRequest {
                    caller: Some(self.user.clone()),
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
                    caller: Some(self.user.clone()),
                    conversation_id: conversation_id.to_string(),
                    up_to: up_to.to_string(),
                };
                match self.chat().mark_read(request).await {
                    Ok(_) => Flow::Continue,
                    Err(status) => self.refuse_status(&status, None).await,
                }
            }
            Inbound::Ping { id } => self.reply(Outbound::Pong { id }).await,
        }
    }
}
