//! Routes kept from the systems microchat grew from: `/apiv2/usersession/...`.
//! A "user session" there is a chat session: one of the caller's conversations with its
//! participants. Same rules as the rest of the API (members only).

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, AuthUser},
    live::frames::{MessageView, time},
    routes::chat::{caller, from_chat, presence_of, send_message},
};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use proto::chat::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A participant of a chat session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Participant {
    user_id: String,
    username: String,
    online: bool,
}

/// A chat session.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSession {
    session_id: String,
    /// `room` or `direct`.
    #[schema(value_type = String, pattern = "^(room|direct)$")]
    kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    created_at: Option<DateTime<Utc>>,
    participant_count: u32,
    participants: Vec<Participant>,
}

async fn sessions(state: &AppState, user: &AuthUser) -> Result<Vec<UserSession>, ApiError> {
    let request = pb::ListConversationsRequest {
        caller: Some(caller(user)),
    };
    let conversations = state
        .chat
        .clone()
        .list_conversations(request)
        .await
        .map_err(from_chat)?
        .into_inner()
        .conversations;
    let ids = conversations
        .iter()
        .flat_map(|c| c.members.iter().map(|m| m.user_id.clone()))
        .collect();
    let presence = presence_of(state, ids).await?;
    let online = |id: &str| presence.iter().any(|p| p.user_id == id && p.online);
    Ok(conversations
        .into_iter()
        .map(|conversation| UserSession {
            kind: if conversation.kind == pb::ConversationKind::Direct as i32 {
                "direct"
            } else {
                "room"
            },
            created_at: time(conversation.created_at.as_ref()),
            participant_count: conversation.member_count,
            participants: conversation
                .members
                .iter()
                .map(|m| Participant {
                    online: online(&m.user_id),
                    user_id: m.user_id.clone(),
                    username: m.username.clone(),
                })
                .collect(),
            session_id: conversation.id,
            name: conversation.name,
        })
        .collect())
}

/// Answer of `GET /apiv2/usersession/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSessionsView {
    sessions: Vec<UserSession>,
}

/// Answer of `GET /apiv2/usersession/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSessionView {
    session: UserSession,
    /// The latest 50 messages, oldest first.
    messages: Vec<MessageView>,
}

/// Answer of `POST /apiv2/usersession/{id}/message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentView {
    message: MessageView,
}

/// The caller's chat sessions.
#[utoipa::path(get, path = "/apiv2/usersession/", tag = "compat", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The caller's chat sessions.", body = UserSessionsView)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<ApiJson<UserSessionsView>, ApiError> {
    let sessions = sessions(&state, &user).await?;
    Ok(ApiJson(UserSessionsView { sessions }))
}

/// One chat session with its latest 50 messages, oldest first (members only).
#[utoipa::path(get, path = "/apiv2/usersession/{id}", tag = "compat",
    params(("id" = Uuid, Path, description = "the session (conversation) id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The session and its latest messages.", body = UserSessionView),
        (status = 403, description = "The caller is not a member.", body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<UserSessionView>, ApiError> {
    let request = pb::ListMessagesRequest {
        caller: Some(caller(&user)),
        conversation_id: id.to_string(),
        limit: 50,
        ..Default::default()
    };
    let mut messages = state
        .chat
        .clone()
        .list_messages(request)
        .await
        .map_err(from_chat)?
        .into_inner()
        .messages;
    messages.reverse();
    let session = sessions(&state, &user)
        .await?
        .into_iter()
        .find(|session| session.session_id == id.to_string());
    let session = session
        .ok_or_else(|| ApiError::forbidden("forbidden", "not a member of this conversation"))?;
    let messages = messages.iter().map(MessageView::from).collect();
    Ok(ApiJson(UserSessionView { session, messages }))
}

/// `POST /apiv2/usersession/{sessionId}/message` body: the text as `message` or as
/// `body` (exactly one; see [`new_message_schema`]).
#[derive(Debug, Deserialize)]
pub struct NewMessage {
    /// The text (`body` is accepted too).
    #[serde(alias = "body")]
    message: String,
}

impl utoipa::PartialSchema for NewMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        new_message_schema()
    }
}

impl ToSchema for NewMessage {}

/// The schema of [`NewMessage`]: the derive cannot say "one of two names".
fn new_message_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let text = serde_json::json!({
        "type": "string",
        "description": "The text, as in `POST /api/conversations/{id}/messages`.",
        "minLength": 1,
        "maxLength": crate::routes::chat::MAX_BODY_CHARS,
        "pattern": crate::routes::chat::BODY_PATTERN,
    });
    crate::openapi::schema(serde_json::json!({
        "description": "The message text, named `message` or `body` (exactly one).",
        "allOf": [
            { "type": "object", "properties": { "message": text, "body": text } },
            // Exactly one subschema holds: exactly one of the names is sent.
            { "oneOf": [
                { "type": "object", "required": ["message"] },
                { "type": "object", "required": ["body"] }
            ] }
        ]
    }))
}

/// Send a message to every other participant (members only).
#[utoipa::path(post, path = "/apiv2/usersession/{id}/message", tag = "compat", request_body = NewMessage,
    params(("id" = Uuid, Path, description = "the session (conversation) id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, description = "Sent.", body = SentView),
        (status = 403, description = "The caller is not a member.", body = ErrorBody),
        (status = 503, description = "Not sent: chat is unavailable, or the server is overloaded (`overloaded`, with `Retry-After` seconds).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "With `overloaded`: seconds to wait before retrying.")))))]
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    let message = send_message(&state, &user, id, body.message, &[]).await?;
    Ok((StatusCode::CREATED, ApiJson(SentView { message })).into_response())
}
