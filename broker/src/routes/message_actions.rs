//! What a member does to a message once it is sent: edit it (its sender), delete it (its
//! sender, or an administrator), react to it with one of a bounded set of emoji. Chat
//! checks the membership and the authorship; the broker says whether the caller moderates
//! (an owner or admin by [`crate::Shared::current_role`]), which chat trusts because only
//! brokers may call it. A message the caller cannot see is 404 whatever the reason (not a
//! member, no such message, another conversation's message), so ids reveal nothing.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, AuthUser},
    live::frames::MessageView,
    routes::chat::{caller, from_chat},
};
use axum::{extract::State, http::StatusCode};
use proto::chat::v1::{self as pb, REACTION_EMOJI};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `PATCH /api/conversations/{id}/messages/{message_id}`
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditMessageBody {
    /// The new text: 1–4,000 characters, not only spaces; no control characters but tabs
    /// and newlines (the rule of a send).
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = "^[\\t\\n \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"
    )]
    body: String,
}

/// The path of one message.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessagePath {
    /// The conversation id.
    id: Uuid,
    /// The message id.
    message_id: Uuid,
}

/// The path of one emoji's reaction to a message.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReactionPath {
    /// The conversation id.
    id: Uuid,
    /// The message id.
    message_id: Uuid,
    /// One of `GET /api/reactions`, percent-encoded; the emoji variation selector U+FE0F
    /// after it may be left out.
    #[param(schema_with = emoji_schema)]
    emoji: String,
}

/// Every spelling chat accepts: each emoji of the set, and without its U+FE0F.
fn accepted_spellings() -> Vec<&'static str> {
    let mut spellings = Vec::with_capacity(REACTION_EMOJI.len() * 2);
    for emoji in REACTION_EMOJI {
        spellings.push(*emoji);
        if let Some(bare) = emoji.strip_suffix('\u{fe0f}') {
            spellings.push(bare);
        }
    }
    spellings
}

fn emoji_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::schema(serde_json::json!({
        "type": "string",
        "enum": accepted_spellings(),
    }))
}

/// Answer of `GET /api/reactions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReactionEmojiView {
    /// The emoji a reaction may use, in the order a picker shows them.
    emoji: Vec<&'static str>,
}

/// Edit one of the caller's own messages.
#[utoipa::path(patch, path = "/api/conversations/{id}/messages/{message_id}", tag = "chat",
    request_body = EditMessageBody, params(MessagePath), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "Edited; members see it live (`message_edited`).", body = MessageView),
        (status = 403, description = "Someone else sent it (or a cookie-authenticated write without X-CSRF-Token).", body = ErrorBody),
        (status = 404, description = "No such message in a conversation of the caller's.", body = ErrorBody),
        (status = 409, description = "The message is deleted.", body = ErrorBody)))]
pub async fn edit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(path): ApiPath<MessagePath>,
    ApiJson(body): ApiJson<EditMessageBody>,
) -> Result<ApiJson<MessageView>, ApiError> {
    let request = pb::EditMessageRequest {
        caller: Some(caller(&user)),
        conversation_id: path.id.to_string(),
        message_id: path.message_id.to_string(),
        body: body.body,
    };
    let message = state
        .chat
        .clone()
        .edit_message(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(MessageView::from(&message)))
}

/// Delete a message: the caller's own, or anyone's for an administrator. It stays in
/// history as a tombstone (no body, `deleted_at` set). Deleting twice is fine.
#[utoipa::path(delete, path = "/api/conversations/{id}/messages/{message_id}", tag = "chat",
    params(MessagePath), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Deleted (or was already); members see it live (`message_deleted`)."),
        (status = 403, description = "Someone else sent it and the caller is no administrator (or a cookie-authenticated write without X-CSRF-Token).", body = ErrorBody),
        (status = 404, description = "No such message in a conversation of the caller's.", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(path): ApiPath<MessagePath>,
) -> Result<StatusCode, ApiError> {
    let moderator = state.current_role(&user.claims).await.is_admin();
    let request = pb::DeleteMessageRequest {
        caller: Some(caller(&user)),
        conversation_id: path.id.to_string(),
        message_id: path.message_id.to_string(),
        moderator,
    };
    state
        .chat
        .clone()
        .delete_message(request)
        .await
        .map_err(from_chat)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_reaction(
    state: &AppState,
    user: &AuthUser,
    path: ReactionPath,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let request = pb::SetReactionRequest {
        caller: Some(caller(user)),
        conversation_id: path.id.to_string(),
        message_id: path.message_id.to_string(),
        emoji: path.emoji,
        add,
    };
    state
        .chat
        .clone()
        .set_reaction(request)
        .await
        .map_err(from_chat)?;
    Ok(StatusCode::NO_CONTENT)
}

/// React to a message with an emoji (once: adding twice is one reaction).
#[utoipa::path(put, path = "/api/conversations/{id}/messages/{message_id}/reactions/{emoji}", tag = "chat",
    params(ReactionPath), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "The caller reacts with it (now or already); members see it live (`reaction`)."),
        (status = 404, description = "No such message in a conversation of the caller's.", body = ErrorBody),
        (status = 409, description = "The message is deleted.", body = ErrorBody)))]
pub async fn add_reaction(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(path): ApiPath<ReactionPath>,
) -> Result<StatusCode, ApiError> {
    set_reaction(&state, &user, path, true).await
}

/// Take back the caller's reaction (fine if there was none).
#[utoipa::path(delete, path = "/api/conversations/{id}/messages/{message_id}/reactions/{emoji}", tag = "chat",
    params(ReactionPath), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "The caller does not react with it (now or already); members see it live (`reaction`)."),
        (status = 404, description = "No such message in a conversation of the caller's.", body = ErrorBody),
        (status = 409, description = "The message is deleted.", body = ErrorBody)))]
pub async fn remove_reaction(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(path): ApiPath<ReactionPath>,
) -> Result<StatusCode, ApiError> {
    set_reaction(&state, &user, path, false).await
}

/// The emoji a reaction may use (the pages' picker shows exactly these).
#[utoipa::path(get, path = "/api/reactions", tag = "chat",
    responses((status = 200, description = "The bounded set, in picker order.", body = ReactionEmojiView)))]
pub async fn reaction_emoji() -> ApiJson<ReactionEmojiView> {
    ApiJson(ReactionEmojiView {
        emoji: REACTION_EMOJI.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn an_edit_states_the_body_rule_of_a_send() {
        let schema = serde_json::to_value(EditMessageBody::schema()).expect("serializes");
        let body = &schema["properties"]["body"];
        assert_eq!(body["pattern"], crate::routes::chat::BODY_PATTERN);
        assert_eq!(body["maxLength"], crate::routes::chat::MAX_BODY_CHARS);
    }

    #[test]
    fn the_documented_emoji_are_the_set_with_and_without_the_selector() {
        let spellings = accepted_spellings();
        assert!(spellings.contains(&"\u{2764}\u{fe0f}") && spellings.contains(&"\u{2764}"));
        let distinct: std::collections::HashSet<_> = spellings.iter().collect();
        assert_eq!(distinct.len(), spellings.len());
        assert!((40..=60).contains(&REACTION_EMOJI.len()));
    }
}
