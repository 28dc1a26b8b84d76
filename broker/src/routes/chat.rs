//! `/api/rooms`, `/api/conversations` and presence in `/api/users`: conversations and
//! messages, served by the chat service. The caller is always the authenticated user;
//! chat checks their membership for every conversation id.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery, AuthUser},
    live::frames::{MessageView, PresenceView, time},
};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use proto::{auth::v1 as auth_pb, chat::v1 as pb};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` calls it with"
)]
pub(crate) fn from_chat(status: tonic::Status) -> ApiError {
    ApiError::from_grpc("chat", &status)
}

/// The caller as chat knows them.
pub(crate) fn caller(user: &AuthUser) -> pb::Caller {
    pb::Caller {
        user_id: user.claims.sub.to_string(),
        username: user.claims.name.clone(),
    }
}

/// A member of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    user_id: String,
    username: String,
    /// The newest message they have read.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_read_id: Option<String>,
}

/// A room or a direct conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    id: String,
    /// `room` or `direct`.
    kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    topic: String,
    created_at: Option<DateTime<Utc>>,
    member_count: u32,
    /// Whether the caller is a member.
    joined: bool,
    /// Direct conversations: both members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberView>,
    /// `GET /api/conversations`: messages of others after the caller's read marker,
    /// counted up to 100 (100 means "99+").
    #[schema(maximum = 100)]
    unread_count: u32,
}

impl From<pb::Conversation> for ConversationView {
    fn from(conversation: pb::Conversation) -> Self {
        let kind = match pb::ConversationKind::try_from(conversation.kind) {
            Ok(pb::ConversationKind::Direct) => "direct",
            _ => "room",
        };
        Self {
            kind,
            created_at: time(conversation.created_at.as_ref()),
            member_count: conversation.member_count,
            joined: conversation.joined,
            members: conversation
                .members
                .into_iter()
                .map(|member| MemberView {
                    user_id: member.user_id,
                    username: member.username,
                    last_read_id: Some(member.last_read_id).filter(|id| !id.is_empty()),
                })
                .collect(),
            id: conversation.id,
            name: conversation.name,
            topic: conversation.topic,
            unread_count: conversation.unread_count,
        }
    }
}

/// A list of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationsView {
    conversations: Vec<ConversationView>,
}

/// A list of rooms.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomsView {
    rooms: Vec<ConversationView>,
}

/// `POST /api/rooms`
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewRoomBody {
    /// 2–32 of a-z, 0-9, `_`, `-` (case is folded; an optional leading `#` and spaces
    /// around are dropped).
    #[schema(
        pattern = "^[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*#?[A-Za-z0-9_-]{2,32}[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    name: String,
    /// At most 200 characters, on one line (no control characters).
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    topic: String,
}

/// `POST /api/conversations`
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewDirectBody {
    /// The other user.
    user_id: Uuid,
}

/// Most attachments one message carries (chat's rule).
pub(crate) const MAX_ATTACHMENTS: usize = 10;

/// Longest message body, in characters (chat's rule).
pub(crate) const MAX_BODY_CHARS: usize = 4_000;

/// What a message body is, as a JSON Schema pattern (chat's rule): optional spaces, then
/// a character that is neither a space nor a control character, then anything but
/// control characters other than tabs and newlines. [`NewMessageBody`] states the same
/// (the derive takes a literal only; a test keeps the two equal).
pub(crate) const BODY_PATTERN: &str = "^[\\t\\n \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$";

/// `POST /api/conversations/{id}/messages`
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewMessageBody {
    /// 1–4,000 characters, not only spaces; no control characters but tabs and newlines.
    /// Empty (or absent) only when the message carries attachments.
    #[serde(default)]
    #[schema(
        max_length = 4000,
        pattern = "^$|^[\\t\\n \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"
    )]
    body: String,
    /// Files the caller uploaded to this conversation that no message carries yet
    /// (`POST /api/conversations/{id}/attachments`), in the order to show them.
    #[serde(default)]
    #[schema(max_items = 10)]
    attachment_ids: Vec<Uuid>,
}

/// `POST /api/conversations/{id}/read`
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReadBody {
    /// The newest message read.
    up_to: Uuid,
}

/// A read receipt.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadView {
    conversation_id: String,
    user_id: String,
    /// The caller's read marker after the call (it never moves back).
    up_to: String,
    /// The caller's messages still unread in the conversation (up to 100).
    #[schema(maximum = 100)]
    unread_count: u32,
}

/// Query of `GET /api/conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Newest messages older than this id (newest first). Default: the newest.
    before: Option<Uuid>,
    /// Oldest messages newer than this id (oldest first): catching up after a gap. With
    /// `before` too: the messages between the two, oldest first.
    after: Option<Uuid>,
    /// 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesView {
    messages: Vec<MessageView>,
    /// More messages lie beyond the last one (pass its id as the next cursor).
    has_more: bool,
}

/// Public rooms, with whether the caller is in each.
#[utoipa::path(get, path = "/api/rooms", tag = "chat", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "Every public room.", body = RoomsView)))]
pub async fn rooms(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<ApiJson<RoomsView>, ApiError> {
    let request = pb::ListRoomsRequest {
        caller: Some(caller(&user)),
    };
    let answer = state
        .chat
        .clone()
        .list_rooms(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(RoomsView {
        rooms: answer
            .rooms
            .into_iter()
            .map(ConversationView::from)
            .collect(),
    }))
}

/// Create a public room; the caller joins it.
#[utoipa::path(post, path = "/api/rooms", tag = "chat", request_body = NewRoomBody, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, description = "Created; the caller is its first member.", body = ConversationView),
        (status = 409, description = "A room has that name.", body = ErrorBody)))]
pub async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewRoomBody>,
) -> Result<Response, ApiError> {
    let request = pb::CreateRoomRequest {
        caller: Some(caller(&user)),
        name: body.name,
        topic: body.topic,
    };
    let room = state
        .chat
        .clone()
        .create_room(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok((StatusCode::CREATED, ApiJson(ConversationView::from(room))).into_response())
}

/// Join a public room.
#[utoipa::path(post, path = "/api/rooms/{id}/join", tag = "chat", params(("id" = Uuid, Path, description = "room id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "Joined (or already a member).", body = ConversationView),
        (status = 404, description = "No such room.", body = ErrorBody)))]
pub async fn join_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<ConversationView>, ApiError> {
    let request = pb::RoomRequest {
        caller: Some(caller(&user)),
        conversation_id: id.to_string(),
    };
    let room = state
        .chat
        .clone()
        .join_room(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(room.into()))
}

/// Leave a public room.
#[utoipa::path(post, path = "/api/rooms/{id}/leave", tag = "chat", params(("id" = Uuid, Path, description = "room id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Left (or was not a member)."),
        (status = 404, description = "No such room.", body = ErrorBody)))]
pub async fn leave_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let request = pb::RoomRequest {
        caller: Some(caller(&user)),
        conversation_id: id.to_string(),
    };
    state
        .chat
        .clone()
        .leave_room(request)
        .await
        .map_err(from_chat)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's conversations: joined rooms and direct conversations.
#[utoipa::path(get, path = "/api/conversations", tag = "chat", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The caller's conversations.", body = ConversationsView)))]
pub async fn conversations(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<ApiJson<ConversationsView>, ApiError> {
    let request = pb::ListConversationsRequest {
        caller: Some(caller(&user)),
    };
    let answer = state
        .chat
        .clone()
        .list_conversations(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(ConversationsView {
        conversations: answer.conversations.into_iter().map(Into::into).collect(),
    }))
}

/// Open the 1:1 conversation with another user (the same one every time).
#[utoipa::path(post, path = "/api/conversations", tag = "chat", request_body = NewDirectBody, security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The conversation with that user.", body = ConversationView),
        (status = 404, description = "No such user.", body = ErrorBody),
        (status = 409, description = "The user is the caller.", body = ErrorBody)))]
pub async fn open_direct(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewDirectBody>,
) -> Result<ApiJson<ConversationView>, ApiError> {
    let request = auth_pb::GetUserRequest {
        id: body.user_id.to_string(),
    };
    let peer = state
        .auth
        .clone()
        .get_user(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => ApiError::not_found("no such user"),
            _ => ApiError::from_grpc("auth", &status),
        })?;
    let peer = peer.into_inner();
    let request = pb::OpenDirectRequest {
        caller: Some(caller(&user)),
        peer: Some(pb::Caller {
            user_id: peer.id,
            username: peer.username,
        }),
    };
    let conversation = state
        .chat
        .clone()
        .open_direct(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(conversation.into()))
}

/// A page of a conversation's history (members only).
#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "chat",
    params(("id" = Uuid, Path, description = "conversation id"), HistoryQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "A page of messages.", body = MessagesView),
        (status = 403, description = "The caller is not a member.", body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<ApiJson<MessagesView>, ApiError> {
    let text = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    let request = pb::ListMessagesRequest {
        caller: Some(caller(&user)),
        conversation_id: id.to_string(),
        before: text(query.before),
        after: text(query.after),
        limit: query.limit.unwrap_or(50),
    };
    if query.limit.is_some_and(|limit| !(1..=100).contains(&limit)) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "limit: must be 1 to 100",
        ));
    }
    let answer = state
        .chat
        .clone()
        .list_messages(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(MessagesView {
        messages: answer.messages.iter().map(MessageView::from).collect(),
        has_more: answer.has_more,
    }))
}

/// Send a message (members only); it is delivered live to every member's sockets.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "chat", request_body = NewMessageBody,
    params(("id" = Uuid, Path, description = "conversation id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, description = "Sent.", body = MessageView),
        (status = 403, description = "The caller is not a member.", body = ErrorBody),
        (status = 503, description = "Not sent: chat is unavailable, or the server is overloaded (`overloaded`, with `Retry-After` seconds: it refuses at once what it cannot serve in time).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "With `overloaded`: seconds to wait before retrying.")))))]
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewMessageBody>,
) -> Result<Response, ApiError> {
    let message = send_message(&state, &user, id, body.body, &body.attachment_ids).await?;
    Ok((StatusCode::CREATED, ApiJson(message)).into_response())
}

/// Sends `body` with `attachments` to conversation `id` as `user` (chat checks the
/// membership, and that each attachment is the user's own upload to it).
pub(crate) async fn send_message(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
    body: String,
    attachments: &[Uuid],
) -> Result<MessageView, ApiError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "attachment_ids: at most 10 attachments",
        ));
    }
    let request = pb::SendMessageRequest {
        caller: Some(caller(user)),
        conversation_id: id.to_string(),
        body,
        attachment_ids: attachments.iter().map(Uuid::to_string).collect(),
    };
    let message = state.sends.send(request).await?;
    Ok(MessageView::from(&message))
}

/// Mark a conversation read up to a message (members only).
#[utoipa::path(post, path = "/api/conversations/{id}/read", tag = "chat", request_body = ReadBody,
    params(("id" = Uuid, Path, description = "conversation id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The caller's read marker.", body = ReadView),
        (status = 403, description = "The caller is not a member.", body = ErrorBody),
        (status = 404, description = "No such message in the conversation.", body = ErrorBody)))]
pub async fn mark_read(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReadBody>,
) -> Result<ApiJson<ReadView>, ApiError> {
    let request = pb::MarkReadRequest {
        caller: Some(caller(&user)),
        conversation_id: id.to_string(),
        up_to: body.up_to.to_string(),
    };
    let receipt = state
        .chat
        .clone()
        .mark_read(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(ReadView {
        conversation_id: receipt.conversation_id,
        user_id: receipt.user_id,
        up_to: receipt.up_to,
        unread_count: receipt.unread_count,
    }))
}

/// Everyone online now.
pub async fn online_users(state: &AppState) -> Result<Vec<PresenceView>, ApiError> {
    let answer = state
        .chat
        .clone()
        .list_presence(pb::ListPresenceRequest {
            user_ids: Vec::new(),
        })
        .await
        .map_err(from_chat)?;
    Ok(answer
        .into_inner()
        .users
        .iter()
        .map(PresenceView::from)
        .collect())
}

/// Presence of the given users, by user id (users never seen online are absent).
pub async fn presence_of(
    state: &AppState,
    users: Vec<String>,
) -> Result<Vec<pb::Presence>, ApiError> {
    let answer = state
        .chat
        .clone()
        .list_presence(pb::ListPresenceRequest { user_ids: users })
        .await
        .map_err(from_chat)?;
    Ok(answer.into_inner().users)
}
