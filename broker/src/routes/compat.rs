//! Routes kept from the systems microchat grew from: `/apiv2/usersession/...`.
//! A "user session" there is a chat session: one of the caller's conversations with its
//! participants. Same rules as the rest of the API (members only).

use crate::{
    AppState,
    error::ApiError,
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
use uuid::Uuid;

/// A participant of a chat session.
#[derive(Debug, Serialize)]
pub struct Participant {
    user_id: String,
    username: String,
    online: bool,
}

/// A chat session.
#[derive(Debug, Serialize)]
pub struct UserSession {
    session_id: String,
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

/// `GET /apiv2/usersession/`: the caller's chat sessions.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    let sessions = sessions(&state, &user).await?;
    Ok(ApiJson(serde_json::json!({ "sessions": sessions })))
}

/// `GET /apiv2/usersession/{sessionId}`: one session with its latest 50 messages, oldest first.
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
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
    let messages: Vec<MessageView> = messages.iter().map(MessageView::from).collect();
    Ok(ApiJson(
        serde_json::json!({ "session": session, "messages": messages }),
    ))
}

/// `POST /apiv2/usersession/{sessionId}/message` body.
#[derive(Debug, Deserialize)]
pub struct NewMessage {
    /// The text (`body` is accepted too).
    #[serde(alias = "body")]
    message: String,
}

/// `POST /apiv2/usersession/{sessionId}/message`: send to every other participant.
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    let message = send_message(&state, &user, id, body.message).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(serde_json::json!({ "message": message })),
    )
        .into_response())
}
