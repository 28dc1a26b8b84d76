//! `/api/notifications`: the caller's @mentions (newest first, cursor paged, with the
//! unread count) and marking them read. Served by chat, which shows a message's text only
//! while the caller may still read it and marks only the caller's own notifications.

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiJson, ApiQuery, AuthUser},
    live::frames::NotificationView,
    routes::chat::{caller, from_chat},
};
use axum::extract::State;
use proto::chat::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most ids one `POST /api/notifications/read` may name.
const MAX_IDS: usize = 100;

/// Query of `GET /api/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    /// Only the unread ones. Default: all.
    unread_only: Option<bool>,
    /// Notifications older than this id (the last one of the previous page).
    before: Option<Uuid>,
    /// 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// A page of the caller's notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationsView {
    notifications: Vec<NotificationView>,
    /// More lie beyond the last one (pass its id as `before`).
    has_more: bool,
    /// The caller's unread notifications, all of them (not only this page's).
    unread_count: u32,
}

/// `POST /api/notifications/read`: `{"ids": [...]}` or `{"all": true}`, exactly one. Its
/// schema is written out in [`mark_body_schema`] (the derive cannot say "exactly one
/// of"), and it is read by hand so that what the schema refuses is refused: a `null`, an
/// `all` that is not `true`, both or neither.
#[derive(Debug)]
pub enum MarkBody {
    /// These notifications of the caller (others' are ignored).
    Ids(Vec<Uuid>),
    /// Every notification of the caller.
    All,
}

impl<'de> Deserialize<'de> for MarkBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let body = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        match (body.get("ids"), body.get("all")) {
            (Some(ids), None) => {
                let ids = Vec::<Uuid>::deserialize(ids).map_err(D::Error::custom)?;
                if !(1..=MAX_IDS).contains(&ids.len()) {
                    return Err(D::Error::custom("ids: 1 to 100 notification ids"));
                }
                Ok(Self::Ids(ids))
            }
            (None, Some(serde_json::Value::Bool(true))) => Ok(Self::All),
            _ => Err(D::Error::custom(
                "send either ids (1 to 100 notification ids) or all: true",
            )),
        }
    }
}

impl utoipa::PartialSchema for MarkBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        mark_body_schema()
    }
}

impl ToSchema for MarkBody {}

/// The schema of [`MarkBody`]: ids (1 to 100) or `all: true`, exactly one of them.
fn mark_body_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::schema(serde_json::json!({
        "description": "Which notifications to mark read: some (`ids`) or all (`all: true`), exactly one.",
        "allOf": [
            {
                "type": "object",
                "properties": {
                    "ids": {
                        "type": "array",
                        "items": { "type": "string", "format": "uuid" },
                        "minItems": 1,
                        "maxItems": MAX_IDS,
                        "description": "Ids of the caller's notifications; others' are ignored."
                    },
                    "all": { "type": "boolean", "enum": [true], "description": "Every one of the caller's." }
                }
            },
            // Exactly one subschema holds: exactly one of the two is sent.
            { "oneOf": [
                { "type": "object", "required": ["ids"] },
                { "type": "object", "required": ["all"] }
            ] }
        ]
    }))
}

/// What marking did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MarkedView {
    /// How many of the caller's notifications went from unread to read.
    marked: u32,
    /// The caller's unread notifications left.
    unread_count: u32,
}

/// The caller's notifications (@mentions), newest first, with the unread count.
#[utoipa::path(get, path = "/api/notifications", tag = "chat", params(NotificationsQuery),
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "A page of notifications.", body = NotificationsView)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<NotificationsQuery>,
) -> Result<ApiJson<NotificationsView>, ApiError> {
    if query.limit.is_some_and(|limit| !(1..=100).contains(&limit)) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "limit: must be 1 to 100",
        ));
    }
    let request = pb::ListNotificationsRequest {
        caller: Some(caller(&user)),
        unread_only: query.unread_only.unwrap_or(false),
        before: query.before.map(|id| id.to_string()).unwrap_or_default(),
        limit: query.limit.unwrap_or(50),
    };
    let answer = state
        .chat
        .clone()
        .list_notifications(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(NotificationsView {
        notifications: answer
            .notifications
            .iter()
            .map(NotificationView::from)
            .collect(),
        has_more: answer.has_more,
        unread_count: answer.unread_count,
    }))
}

/// Mark some or all of the caller's notifications read; ids of other users'
/// notifications are ignored (never marked).
#[utoipa::path(post, path = "/api/notifications/read", tag = "chat", request_body = MarkBody,
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "Marked.", body = MarkedView)))]
pub async fn mark_read(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<MarkBody>,
) -> Result<ApiJson<MarkedView>, ApiError> {
    let (ids, all) = match body {
        MarkBody::Ids(ids) => (ids, false),
        MarkBody::All => (Vec::new(), true),
    };
    let request = pb::MarkNotificationsReadRequest {
        caller: Some(caller(&user)),
        ids: ids.iter().map(Uuid::to_string).collect(),
        all,
    };
    let answer = state
        .chat
        .clone()
        .mark_notifications_read(request)
        .await
        .map_err(from_chat)?
        .into_inner();
    Ok(ApiJson(MarkedView {
        marked: answer.marked,
        unread_count: answer.unread_count,
    }))
}
