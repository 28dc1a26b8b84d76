//! The tonic implementation of `microchat.chat.v1.Chat`: translates requests into
//! [`Chat`] calls, their answers into wire types (through [`crate::wire`]) and
//! [`ChatError`]s into gRPC statuses. No rules live here.

use crate::{
    attachments::{UploadError, UploadStart},
    conversations::{Chat, ChatError, HistoryQuery, SearchRequest},
    domain::{MAX_ATTACHMENTS_PER_MESSAGE, UserRef},
    store::{ChatSession, StoreError},
    wire,
};
use chrono::{DateTime, Utc};
use platform::shutdown::Shutdown;
use platform::trace::TraceId;
use proto::chat::v1::{self as pb, chat_server};
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

/// How long a broker's sockets count as open after its live stream ends, so a quick
/// reconnect does not flap everyone's presence.
const BROKER_GRACE: Duration = Duration::from_secs(15);

/// How often an instance records the brokers following it (shared with the other
/// instances through the database).
const BROKER_HEARTBEAT: Duration = Duration::from_secs(5);

/// A broker no instance has seen for this long is gone, even if the instance it followed
/// died before it could tell: any instance forgets its sockets.
const BROKER_UNSEEN: Duration = Duration::from_secs(60);

/// The gRPC face of chat.
#[derive(Clone)]
pub struct ChatApi {
    chat: Arc<Chat>,
    shutdown: Shutdown,
    /// Open live streams per broker id.
    subscribers: Arc<Mutex<HashMap<String, usize>>>,
}

impl ChatApi {
    /// Serves `chat`; live streams end when `shutdown` is cancelled.
    pub fn new(chat: Arc<Chat>, shutdown: Shutdown) -> Self {
        let api = Self {
            chat,
            shutdown,
            subscribers: Arc::default(),
        };
        tokio::spawn(api.clone().watch_brokers());
        api
    }

    fn subscribed_brokers(&self) -> Vec<String> {
        self.subscribers
            .lock()
            .expect("no code panics while holding the subscriber map")
            .keys()
            .cloned()
            .collect()
    }

    /// Records the brokers following this instance every [`BROKER_HEARTBEAT`], and
    /// forgets the sockets of brokers nobody has seen for [`BROKER_UNSEEN`].
    async fn watch_brokers(self) {
        let mut ticks = 0_u64;
        while platform::shutdown::pause(&self.shutdown, BROKER_HEARTBEAT).await {
            ticks += 1;
            if let Err(error) = self.chat.brokers_seen(&self.subscribed_brokers()).await {
                tracing::warn!(%error, "cannot record the brokers following this instance");
            }
            if ticks.is_multiple_of(6) {
                let since = chrono::Utc::now() - BROKER_UNSEEN;
                if let Err(error) = self.chat.forget_unseen_brokers(since).await {
                    tracing::warn!(%error, "cannot sweep the sockets of gone brokers");
                }
            }
        }
    }
}

impl From<ChatError> for Status {
    fn from(error: ChatError) -> Self {
        match &error {
            ChatError::Invalid(_) => Status::invalid_argument(error.to_string()),
            // WithSelf: a valid request that names the caller: the state, not the input, is
            // wrong.
            ChatError::WithSelf | ChatError::MessageDeleted => {
                Status::failed_precondition(error.to_string())
            }
            ChatError::NotMember | ChatError::NotAuthor => {
                Status::permission_denied(error.to_string())
            }
            ChatError::NoSuchRoom
            | ChatError::NoSuchMessage
            | ChatError::NoSuchCursor
            | ChatError::NoSuchAttachment
            // An attachment the sender may not send is one they cannot see (someone
            // else's, another conversation's) or that is gone (sent, expired): 404, as
            // for a download.
            | ChatError::AttachmentsRefused => Status::not_found(error.to_string()),
            ChatError::Upload(refused) => upload_status(refused),
            ChatError::NameTaken => Status::already_exists(error.to_string()),
            ChatError::Store(StoreError::Unavailable(_)) => {
                tracing::error!(%error, "database unavailable");
                Status::unavailable("the chat database is unavailable")
            }
            ChatError::Store(_) => {
                tracing::error!(%error, "database failure");
                Status::internal("internal error")
            }
        }
    }
}

/// An upload's refusal as a gRPC status, its reason in the `error-reason` metadata (the
/// broker answers each with its own HTTP status: 413, 400, 507).
fn upload_status(error: &UploadError) -> Status {
    let message = error.to_string();
    let mut status = match error {
        UploadError::TooLarge { .. } | UploadError::OverQuota { .. } => {
            Status::resource_exhausted(message)
        }
        UploadError::Empty | UploadError::Image(_) | UploadError::Protocol(_) => {
            Status::invalid_argument(message)
        }
        UploadError::StorageFull => Status::resource_exhausted(message),
        UploadError::Unavailable(_) => {
            tracing::error!(%error, "the file store failed");
            Status::unavailable("the file store is unavailable")
        }
        UploadError::Cancelled => Status::cancelled(message),
    };
    status.metadata_mut().insert(
        proto::chat::v1::ERROR_REASON,
        tonic::metadata::MetadataValue::from_static(error.reason()),
    );
    status
}

fn uuid(field: &str, text: &str) -> Result<Uuid, Status> {
    Uuid::try_parse(text).map_err(|_| Status::invalid_argument(format!("{field}: must be a UUID")))
}

/// A broker's id: its name for its sockets and its live stream.
fn broker_id(text: String) -> Result<String, Status> {
    if text.is_empty() || text.len() > 128 {
        return Err(Status::invalid_argument(
            "broker_id: required, at most 128 bytes",
        ));
    }
    Ok(text)
}

fn required_time(field: &str, at: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>, Status> {
    at.and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
        .ok_or_else(|| Status::invalid_argument(format!("{field}: required, a valid time")))
}

fn bounded(field: &str, text: String, max_chars: usize) -> Result<String, Status> {
    if text.chars().count() > max_chars {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max_chars} characters"
        )));
    }
    Ok(text)
}

fn uuids(field: &str, texts: &[String]) -> Result<Vec<Uuid>, Status> {
    texts.iter().map(|text| uuid(field, text)).collect()
}

fn optional_uuid(field: &str, text: &str) -> Result<Option<Uuid>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        uuid(field, text).map(Some)
    }
}

fn user(field: &str, caller: Option<pb::Caller>) -> Result<UserRef, Status> {
    let caller = caller.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))?;
    if caller.username.is_empty() || caller.username.len() > 64 {
        return Err(Status::invalid_argument(format!(
            "{field}.username: required, at most 64 bytes"
        )));
    }
    Ok(UserRef {
        id: uuid(&format!("{field}.user_id"), &caller.user_id)?,
        username: caller.username,
    })
}

impl ChatApi {
    async fn send_one(&self, send: pb::SendMessageRequest) -> Result<pb::Message, Status> {
        let caller = user("caller", send.caller)?;
        let conversation = uuid("conversation_id", &send.conversation_id)?;
        if send.attachment_ids.len() > MAX_ATTACHMENTS_PER_MESSAGE {
            return Err(Status::invalid_argument(
                "attachment_ids: at most 10 attachments",
            ));
        }
        let attachments = send
            .attachment_ids
            .iter()
            .map(|id| uuid("attachment_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let message = self
            .chat
            .send(&caller, conversation, &send.body, &attachments)
            .await?;
        Ok(message.into())
    }
}

type LiveStream = Pin<Box<dyn Stream<Item = Result<pb::LiveEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::AttachmentChunk, Status>> + Send>>;

#[tonic::async_trait]
impl chat_server::Chat for ChatApi {
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let view = self
            .chat
            .create_room(&caller, &body.name, &body.topic)
            .await?;
        Ok(Response::new(wire::conversation_view(view, Vec::new())))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        let caller = user("caller", request.into_inner().caller)?;
        let rooms = self.chat.rooms(&caller).await?;
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms
                .into_iter()
                .map(|view| wire::conversation_view(view, Vec::new()))
                .collect(),
        }))
    }

    async fn join_room(
        &self,
        request: Request<pb::RoomRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let view = self
            .chat
            .join_room(&caller, uuid("conversation_id", &body.conversation_id)?)
            .await?;
        Ok(Response::new(wire::conversation_view(view, Vec::new())))
    }

    async fn leave_room(
        &self,
        request: Request<pb::RoomRequest>,
    ) -> Result<Response<pb::LeaveRoomResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        self.chat
            .leave_room(&caller, uuid("conversation_id", &body.conversation_id)?)
            .await?;
        Ok(Response::new(pb::LeaveRoomResponse {}))
    }

    async fn open_direct(
        &self,
        request: Request<pb::OpenDirectRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let body = request.into_inner();
        let (caller, peer) = (user("caller", body.caller)?, user("peer", body.peer)?);
        let (conversation, members) = self.chat.open_direct(&caller, &peer).await?;
        let member_count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        Ok(Response::new(wire::conversation(
            conversation,
            member_count,
            true,
            members,
        )))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let caller = user("caller", request.into_inner().caller)?;
        let listed = self.chat.conversations(&caller).await?;
        let unread = self.chat.unread_counts(&caller).await?;
        let conversations = listed
            .into_iter()
            .map(|(view, members)| pb::Conversation {
                unread_count: unread
                    .get(&view.conversation.id)
                    .copied()
                    .unwrap_or_default(),
                ..wire::conversation_view(view, members)
            })
            .collect();
        Ok(Response::new(pb::ListConversationsResponse {
            conversations,
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        self.send_one(request.into_inner()).await.map(Response::new)
    }

    async fn send_messages(
        &self,
        request: Request<pb::SendMessagesRequest>,
    ) -> Result<Response<pb::SendMessagesResponse>, Status> {
        let sends = request.into_inner().sends;
        if sends.len() > pb::MAX_SENDS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "sends: at most {} per call",
                pb::MAX_SENDS_PER_CALL
            )));
        }
        // All at once: the sends meet in one batch of the message writer, so the whole
        // call costs one commit. Each runs in its own request's trace.
        let outcomes = futures::future::join_all(sends.into_iter().map(|send| {
            let trace =
                TraceId::from_traceparent(&send.traceparent).unwrap_or_else(TraceId::generate);
            let span = tracing::info_span!("send", trace_id = %trace);
            platform::trace::scope(trace, self.send_one(send.message.unwrap_or_default()))
                .instrument(span)
        }))
        .await;
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| pb::SendOutcome {
                outcome: Some(match outcome {
                    Ok(message) => pb::send_outcome::Outcome::Sent(message),
                    Err(status) => pb::send_outcome::Outcome::Refused(pb::Refusal {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::SendMessagesResponse { outcomes }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let query = HistoryQuery {
            before: optional_uuid("before", &body.before)?,
            after: optional_uuid("after", &body.after)?,
            limit: body.limit,
        };
        let (messages, has_more) = self
            .chat
            .history(
                &caller,
                uuid("conversation_id", &body.conversation_id)?,
                query,
            )
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.into_iter().map(pb::Message::from).collect(),
            has_more,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::ReadReceipt>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let conversation = uuid("conversation_id", &body.conversation_id)?;
        let (marker, unread_count) = self
            .chat
            .mark_read(&caller, conversation, uuid("up_to", &body.up_to)?)
            .await?;
        Ok(Response::new(pb::ReadReceipt {
            conversation_id: conversation.to_string(),
            user_id: caller.id.to_string(),
            up_to: marker.map(|id| id.to_string()).unwrap_or_default(),
            unread_count,
        }))
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        self.chat
            .typing(&caller, uuid("conversation_id", &body.conversation_id)?)
            .await?;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    async fn open_connection(
        &self,
        request: Request<pb::OpenConnectionRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let broker_id = broker_id(body.broker_id)?;
        let presence = self
            .chat
            .open_connection(
                &caller,
                uuid("connection_id", &body.connection_id)?,
                &broker_id,
            )
            .await?;
        Ok(Response::new(pb::PresenceResponse {
            presence: Some(presence.into()),
        }))
    }

    async fn close_connection(
        &self,
        request: Request<pb::CloseConnectionRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        let id = uuid("connection_id", &request.into_inner().connection_id)?;
        let presence = self.chat.close_connection(id).await?;
        Ok(Response::new(pb::PresenceResponse {
            presence: presence.map(pb::Presence::from),
        }))
    }

    async fn leave_broker(
        &self,
        request: Request<pb::LeaveBrokerRequest>,
    ) -> Result<Response<pb::LeaveBrokerResponse>, Status> {
        let broker_id = broker_id(request.into_inner().broker_id)?;
        self.chat.forget_broker(&broker_id).await?;
        tracing::info!(%broker_id, "broker left; forgot its sockets");
        Ok(Response::new(pb::LeaveBrokerResponse {}))
    }

    async fn list_presence(
        &self,
        request: Request<pb::ListPresenceRequest>,
    ) -> Result<Response<pb::ListPresenceResponse>, Status> {
        let ids = uuids("user_ids", &request.into_inner().user_ids)?;
        let users = self.chat.presence(&ids).await?;
        Ok(Response::new(pb::ListPresenceResponse {
            users: users.into_iter().map(pb::Presence::from).collect(),
        }))
    }

    async fn list_memberships(
        &self,
        request: Request<pb::ListMembershipsRequest>,
    ) -> Result<Response<pb::ListMembershipsResponse>, Status> {
        let ids = self
            .chat
            .memberships(uuid("user_id", &request.into_inner().user_id)?)
            .await?;
        Ok(Response::new(pb::ListMembershipsResponse {
            conversation_ids: ids.iter().map(Uuid::to_string).collect(),
        }))
    }

    async fn delete_user_data(
        &self,
        request: Request<pb::DeleteUserDataRequest>,
    ) -> Result<Response<pb::DeleteUserDataResponse>, Status> {
        let deleted = self
            .chat
            .delete_user_data(uuid("user_id", &request.into_inner().user_id)?)
            .await?;
        Ok(Response::new(pb::DeleteUserDataResponse {
            conversations_deleted: deleted,
        }))
    }

    async fn start_chat_session(
        &self,
        request: Request<pb::StartChatSessionRequest>,
    ) -> Result<Response<pb::StartChatSessionResponse>, Status> {
        let session = request
            .into_inner()
            .session
            .ok_or_else(|| Status::invalid_argument("session: required"))?;
        let session = ChatSession {
            session_id: uuid("session.session_id", &session.session_id)?,
            user: user("session.user", session.user)?,
            started_at: required_time("session.started_at", session.started_at)?,
            expires_at: session
                .expires_at
                .map(|at| required_time("session.expires_at", Some(at)))
                .transpose()?,
            ended_at: None,
            client_ip: bounded("session.client_ip", session.client_ip, 64)?,
            user_agent: bounded("session.user_agent", session.user_agent, 256)?,
        };
        let started = self.chat.start_chat_session(&session).await?;
        Ok(Response::new(pb::StartChatSessionResponse { started }))
    }

    async fn end_chat_session(
        &self,
        request: Request<pb::EndChatSessionRequest>,
    ) -> Result<Response<pb::EndChatSessionResponse>, Status> {
        let body = request.into_inner();
        let ended = self
            .chat
            .end_chat_session(
                uuid("session_id", &body.session_id)?,
                &user("user", body.user)?,
                required_time("ended_at", body.ended_at)?,
            )
            .await?;
        Ok(Response::new(pb::EndChatSessionResponse { ended }))
    }

    async fn forget_chat_sessions(
        &self,
        request: Request<pb::ForgetChatSessionsRequest>,
    ) -> Result<Response<pb::ForgetChatSessionsResponse>, Status> {
        let forgotten = self
            .chat
            .forget_chat_sessions(uuid("user_id", &request.into_inner().user_id)?)
            .await?;
        Ok(Response::new(pb::ForgetChatSessionsResponse { forgotten }))
    }

    async fn list_chat_sessions(
        &self,
        request: Request<pb::ListChatSessionsRequest>,
    ) -> Result<Response<pb::ListChatSessionsResponse>, Status> {
        let ids = uuids("user_ids", &request.into_inner().user_ids)?;
        let sessions = self.chat.open_chat_sessions(&ids).await?;
        Ok(Response::new(pb::ListChatSessionsResponse {
            sessions: sessions.into_iter().map(pb::ChatSession::from).collect(),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let before = optional_uuid("before", &body.before)?;
        let (listed, has_more, unread_count) = self
            .chat
            .notifications(&caller, body.unread_only, before, body.limit)
            .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: listed.into_iter().map(pb::Notification::from).collect(),
            has_more,
            unread_count,
        }))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkNotificationsReadResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let ids = if body.all {
            None
        } else {
            if body.ids.len() > crate::conversations::MAX_NOTIFICATIONS_MARKED {
                return Err(Status::invalid_argument("ids: at most 100 at a time"));
            }
            Some(uuids("ids", &body.ids)?)
        };
        let (marked, unread_count) = self
            .chat
            .mark_notifications_read(&caller, ids.as_deref())
            .await?;
        Ok(Response::new(pb::MarkNotificationsReadResponse {
            marked,
            unread_count,
        }))
    }

    type SubscribeStream = LiveStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let broker_id = broker_id(request.into_inner().broker_id)?;
        let mut events = self.chat.live().subscribe();
        let (sender, receiver) = mpsc::channel(1024);
        *self
            .subscribers
            .lock()
            .expect("no code panics while holding the subscriber map")
            .entry(broker_id.clone())
            .or_default() += 1;
        let (api, shutdown) = (self.clone(), self.shutdown.clone());
        tracing::info!(%broker_id, "broker subscribed to live events");
        if let Err(error) = self
            .chat
            .brokers_seen(std::slice::from_ref(&broker_id))
            .await
        {
            tracing::warn!(%error, %broker_id, "cannot record a subscribed broker");
        }
        // Owned by the stream: ends when the broker goes away or on shutdown.
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => break,
                    event = events.recv() => event,
                };
                let event = match event {
                    Ok(event) => (*event).clone(),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::warn!(%broker_id, skipped, "broker fell behind the live stream");
                        wire::resync()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if sender.send(Ok(event)).await.is_err() {
                    break;
                }
            }
            api.unsubscribed(broker_id, shutdown).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let message = self
            .chat
            .edit(
                &caller,
                uuid("conversation_id", &body.conversation_id)?,
                uuid("message_id", &body.message_id)?,
                &body.body,
            )
            .await?;
        Ok(Response::new(message.into()))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let deleted = self
            .chat
            .delete(
                &caller,
                uuid("conversation_id", &body.conversation_id)?,
                uuid("message_id", &body.message_id)?,
                body.moderator,
            )
            .await?;
        Ok(Response::new(pb::DeleteMessageResponse { deleted }))
    }

    async fn set_reaction(
        &self,
        request: Request<pb::SetReactionRequest>,
    ) -> Result<Response<pb::SetReactionResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let reaction = self
            .chat
            .react(
                &caller,
                uuid("conversation_id", &body.conversation_id)?,
                uuid("message_id", &body.message_id)?,
                &body.emoji,
                body.add,
            )
            .await?;
        Ok(Response::new(pb::SetReactionResponse {
            emoji: reaction.emoji.as_str().to_owned(),
            count: reaction.count,
            changed: reaction.changed,
        }))
    }

    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let search = SearchRequest {
            conversation: optional_uuid("conversation_id", &body.conversation_id)?,
            text: body.query,
            cursor: body.cursor,
            limit: body.limit,
        };
        let (hits, next) = self.chat.search(&caller, &search).await?;
        Ok(Response::new(pb::SearchMessagesResponse {
            hits: hits.into_iter().map(pb::SearchHit::from).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::Attachment>, Status> {
        let mut chunks = request.into_inner();
        let start = match chunks.message().await? {
            Some(pb::UploadChunk {
                part: Some(pb::upload_chunk::Part::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "start: the first chunk must be `start`",
                ));
            }
        };
        let start = UploadStart {
            caller: user("start.caller", start.caller)?,
            conversation: uuid("start.conversation_id", &start.conversation_id)?,
            name: start.name,
            declared_size: start.declared_size,
        };
        // The rest are bytes up to `complete`; anything else, or an end without it (the
        // caller went away), cancels the upload.
        let bytes = futures::stream::unfold(Some(chunks), |chunks| async move {
            let mut chunks = chunks?;
            let next = match chunks.message().await {
                Ok(Some(pb::UploadChunk {
                    part: Some(pb::upload_chunk::Part::Data(data)),
                })) => Ok(data),
                Ok(Some(pb::UploadChunk {
                    part: Some(pb::upload_chunk::Part::Complete(true)),
                })) => return None,
                Ok(None) => Err("the upload ended before `complete`".to_owned()),
                Ok(Some(_)) => Err("a second `start`, or an empty chunk".to_owned()),
                Err(status) => Err(status.message().to_owned()),
            };
            // After an error the stream ends: the store has aborted.
            let rest = next.is_ok().then_some(chunks);
            Some((next, rest))
        });
        let attachment = self.chat.upload(start, bytes).await?;
        Ok(Response::new(attachment.into()))
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::AttachmentObject>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let id = uuid("attachment_id", &body.attachment_id)?;
        let download = self.chat.attachment(&caller, id, body.thumbnail).await?;
        Ok(Response::new(pb::AttachmentObject {
            attachment: Some(download.attachment.into()),
            content_type: download.content_type,
            size: download.size,
            inline: download.inline,
        }))
    }

    type ReadAttachmentStream = ChunkStream;

    async fn read_attachment(
        &self,
        request: Request<pb::ReadAttachmentRequest>,
    ) -> Result<Response<Self::ReadAttachmentStream>, Status> {
        let body = request.into_inner();
        let caller = user("caller", body.caller)?;
        let id = uuid("attachment_id", &body.attachment_id)?;
        let length = (body.length > 0).then_some(body.length);
        let bytes = self
            .chat
            .read_attachment(&caller, id, body.thumbnail, body.offset, length)
            .await?;
        let chunks = bytes.map(|chunk| {
            chunk
                .map(|data| pb::AttachmentChunk { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn purge_attachments(
        &self,
        request: Request<pb::PurgeAttachmentsRequest>,
    ) -> Result<Response<pb::PurgeAttachmentsResponse>, Status> {
        let body = request.into_inner();
        if body.attachment_ids.len() > PURGE_AT_ONCE {
            return Err(Status::invalid_argument(format!(
                "attachment_ids: at most {PURGE_AT_ONCE} at a time"
            )));
        }
        let ids = body
            .attachment_ids
            .iter()
            .map(|id| uuid("attachment_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let purged = self.chat.purge_attachments(&ids).await?;
        Ok(Response::new(pb::PurgeAttachmentsResponse {
            attachments_purged: purged,
        }))
    }
}

/// Most attachments one `PurgeAttachments` call names (an event names at most what one
/// transaction removed; larger ones come in several calls).
const PURGE_AT_ONCE: usize = 10_000;

impl ChatApi {
    /// After a broker's last stream ends and it does not come back within the grace
    /// period, its sockets are gone: forget them (and tell everyone who went offline).
    async fn unsubscribed(&self, broker_id: String, shutdown: Shutdown) {
        {
            let mut subscribers = self
                .subscribers
                .lock()
                .expect("no code panics while holding the subscriber map");
            if let Some(count) = subscribers.get_mut(&broker_id) {
                *count -= 1;
                if *count == 0 {
                    subscribers.remove(&broker_id);
                }
            }
        }
        if !platform::shutdown::pause(&shutdown, BROKER_GRACE).await {
            return;
        }
        let back = self
            .subscribers
            .lock()
            .expect("no code panics while holding the subscriber map")
            .contains_key(&broker_id);
        if !back {
            // Seen by another instance after its stream here ended: it follows that one now.
            let since = chrono::Utc::now() - BROKER_HEARTBEAT * 2;
            match self.chat.forget_broker_unless_seen(&broker_id, since).await {
                Ok(true) => tracing::info!(%broker_id, "broker gone; forgot its sockets"),
                Ok(false) => tracing::info!(%broker_id, "broker follows another chat instance now"),
                Err(error) => {
                    tracing::warn!(%error, %broker_id, "cannot forget a gone broker's sockets");
                }
            }
        }
    }
}
