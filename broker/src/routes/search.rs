//! `GET /api/search`: full-text search over the messages of the caller's conversations,
//! served by chat (which decides membership in the query itself).

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiQuery, AuthUser},
    live::frames::MessageView,
    routes::chat::{caller, from_chat},
};
use axum::extract::State;
use proto::chat::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest search text, in characters (chat's rule, which counts after trimming).
const MAX_QUERY_CHARS: usize = 200;

/// Query of `GET /api/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find: 1–200 characters, 1–16 words separated by spaces, no control
    /// characters. Every word must match (case and accents do not matter); matched
    /// literally, so quotes, `*`, `NEAR`, `AND`, `OR` and parentheses are text to find.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[ \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+([ \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+){0,15}[ \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    q: String,
    /// Only this conversation (the caller must be a member).
    conversation_id: Option<Uuid>,
    /// `next_cursor` of the previous page of this same search (same `q` and
    /// `conversation_id`); a cursor this search did not make answers 404.
    #[param(min_length = 39, max_length = 39, pattern = "^[A-Za-z0-9_-]{39}$")]
    cursor: Option<String>,
    /// 1–50, default 20.
    #[param(minimum = 1, maximum = 50)]
    limit: Option<u32>,
}

/// A range of a snippet: character (Unicode code point) offsets.
#[derive(Debug, Serialize, ToSchema)]
pub struct HighlightView {
    /// First character of a matched word.
    start: u32,
    /// One past its last character.
    end: u32,
}

/// One message found.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHitView {
    message: MessageView,
    conversation_id: String,
    /// `room` or `direct`.
    conversation_kind: &'static str,
    /// Rooms only.
    #[serde(skip_serializing_if = "String::is_empty")]
    conversation_name: String,
    /// The part of the body around the matched words: plain text, never markup.
    snippet: String,
    /// The matched words in `snippet`, in order.
    highlights: Vec<HighlightView>,
}

impl From<pb::SearchHit> for SearchHitView {
    fn from(hit: pb::SearchHit) -> Self {
        let message = hit.message.unwrap_or_default();
        let conversation_kind = match pb::ConversationKind::try_from(hit.conversation_kind) {
            Ok(pb::ConversationKind::Direct) => "direct",
            _ => "room",
        };
        Self {
            conversation_id: message.conversation_id.clone(),
            message: MessageView::from(&message),
            conversation_kind,
            conversation_name: hit.conversation_name,
            snippet: hit.snippet,
            highlights: hit
                .highlights
                .into_iter()
                .map(|range| HighlightView {
                    start: range.start,
                    end: range.end,
                })
                .collect(),
        }
    }
}

/// A page of search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchView {
    results: Vec<SearchHitView>,
    /// Pass as `cursor` (with the same `q` and `conversation_id`) for the next page;
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Search the messages of the caller's conversations (or of one of them). Every word must
/// match; results are ranked best first (PostgreSQL `ts_rank`; SQLite: BM25's
/// term-frequency and length parts), ties newest first, among the newest 200 matching
/// messages of those conversations (older matches of a very common word are not ranked:
/// more words or one conversation find them). Pages follow `next_cursor`, and messages
/// sent after the first page do not shift later pages.
#[utoipa::path(get, path = "/api/search", tag = "chat",
    params(SearchParams), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "A page of results, best first.", body = SearchView),
        (status = 404, description = "`conversation_id` names no conversation of the caller's, or `cursor` no page of this search.", body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<ApiJson<SearchView>, ApiError> {
    // Chat counts after trimming; the schema (and so this) counts what was sent.
    if params.q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "q: must be 1 to 200 characters of text (no control characters), at most 16 words",
        ));
    }
    // An empty `cursor=` is no cursor's shape (chat reads "" as the first page).
    if params.cursor.as_deref() == Some("") {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "cursor: must be a next_cursor as given: 39 characters of A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
    if params.limit.is_some_and(|limit| !(1..=50).contains(&limit)) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "limit: must be 1 to 50",
        ));
    }
    let request = pb::SearchMessagesRequest {
        caller: Some(caller(&user)),
        query: params.q,
        conversation_id: params
            .conversation_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        cursor: params.cursor.unwrap_or_default(),
        limit: params.limit.unwrap_or(20),
    };
    let answer = state
        .chat
        .clone()
        .search_messages(request)
        .await
        .map_err(|status| match status.code() {
            // Another room's id answers as a missing one: it names nothing of the caller's.
            Code::PermissionDenied => ApiError::not_found("no such conversation"),
            _ => from_chat(status),
        })?
        .into_inner();
    Ok(ApiJson(SearchView {
        results: answer.hits.into_iter().map(SearchHitView::from).collect(),
        next_cursor: Some(answer.next_cursor).filter(|cursor| !cursor.is_empty()),
    }))
}
