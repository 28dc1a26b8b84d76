//! `GET /api/logs`: the log and audit store, for administrators, served by the logger.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{AdminUser, ApiJson, ApiQuery},
    live::frames::time,
};
use axum::{extract::State, response::IntoResponse};
use chrono::{DateTime, Utc};
use platform::grpc::timestamp;
use proto::logger::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /api/logs`: every filter is optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// A service name, e.g. `auth` (empty: any).
    #[param(pattern = "^[a-z0-9_-]{0,40}$")]
    service: Option<String>,
    /// `trace`, `debug`, `info`, `warn` or `error` (any case): entries at this level or above.
    #[param(
        pattern = "^([Tt][Rr][Aa][Cc][Ee]|[Dd][Ee][Bb][Uu][Gg]|[Ii][Nn][Ff][Oo]|[Ww][Aa][Rr][Nn]([Ii][Nn][Gg])?|[Ee][Rr][Rr][Oo][Rr])$"
    )]
    level: Option<String>,
    /// A user id: entries about that user.
    #[param(value_type = Option<uuid::Uuid>)]
    user: Option<String>,
    /// A trace id (32 hex digits, not all zero, as in the `X-Trace-Id` response header).
    #[param(
        min_length = 32,
        max_length = 32,
        pattern = "^[0-9A-Fa-f]*[1-9A-Fa-f][0-9A-Fa-f]*$"
    )]
    trace_id: Option<String>,
    /// Entries at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = "^(AA[A-Za-z0-9_-]{30})?$")]
    cursor: Option<String>,
}

/// What an entry is, by who wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    /// The listener's record of an event (`audit <type>`): only the listener writes these.
    Audit,
    /// A service's log line.
    Log,
    /// Written by a signed-in user through `/handle`'s `log` action (service `user`):
    /// whatever its name says, never an audit entry.
    UserWritten,
}

impl LogKind {
    /// The kind of an entry `service` wrote under `name`.
    pub fn of(service: &str, name: &str) -> Self {
        if service == crate::routes::handle::USER_WRITTEN {
            Self::UserWritten
        } else if service == "listener" && name.starts_with("audit ") {
            Self::Audit
        } else {
            Self::Log
        }
    }
}

/// One log or audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogView {
    id: String,
    /// `audit`, `log`, or `user_written` (by a user through `/handle`).
    kind: LogKind,
    name: String,
    /// Details, as the service wrote them.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    level: &'static str,
    service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    user_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    trace_id: String,
    created_at: Option<DateTime<Utc>>,
}

/// Answer of `GET /api/logs`: newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsView {
    logs: Vec<LogView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn level(text: &str) -> Result<pb::Level, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "trace" => Ok(pb::Level::Trace),
        "debug" => Ok(pb::Level::Debug),
        "info" => Ok(pb::Level::Info),
        "warn" | "warning" => Ok(pb::Level::Warn),
        "error" => Ok(pb::Level::Error),
        _ => Err(ApiError::bad_request(
            "invalid_level",
            "level is one of trace, debug, info, warn, error",
        )),
    }
}

/// The name of a level, as the API shows it.
pub fn level_name(level: i32) -> &'static str {
    match pb::Level::try_from(level) {
        Ok(pb::Level::Trace) => "trace",
        Ok(pb::Level::Debug) => "debug",
        Ok(pb::Level::Warn) => "warn",
        Ok(pb::Level::Error) => "error",
        Ok(pb::Level::Info | pb::Level::Unspecified) | Err(_) => "info",
    }
}

fn query_request(query: LogsQuery) -> Result<pb::QueryLogsRequest, ApiError> {
    if let Some(user) = &query.user {
        uuid::Uuid::parse_str(user)
            .map_err(|_| ApiError::bad_request("invalid_user", "user is a user id"))?;
    }
    if let Some(trace) = &query.trace_id {
        trace
            .parse::<platform::trace::TraceId>()
            .map_err(|()| ApiError::bad_request("invalid_trace_id", "trace_id is 32 hex digits"))?;
    }
    if query.limit.is_some_and(|limit| !(1..=500).contains(&limit)) {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1–500"));
    }
    Ok(pb::QueryLogsRequest {
        service: query.service.unwrap_or_default(),
        min_level: query
            .level
            .as_deref()
            .map(level)
            .transpose()?
            .unwrap_or_default() as i32,
        user_id: query.user.unwrap_or_default(),
        trace_id: query.trace_id.unwrap_or_default().to_ascii_lowercase(),
        since: query.since.map(timestamp),
        until: query.until.map(timestamp),
        limit: query.limit.unwrap_or(100),
        cursor: query.cursor.unwrap_or_default(),
    })
}

/// Log and audit entries, newest first (administrators only).
#[utoipa::path(get, path = "/api/logs", tag = "ops", params(LogsQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "A page of entries, newest first.", body = LogsView),
        (status = 403, description = "The caller is no administrator.", body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let request = query_request(query)?;
    tracing::debug!(admin = %admin.claims.name, "log query");
    let page = state
        .logger
        .clone()
        .query_logs(request)
        .await
        .map_err(|status| ApiError::from_grpc("logger", &status))?
        .into_inner();
    let logs = page
        .entries
        .into_iter()
        .map(|entry| LogView {
            kind: LogKind::of(&entry.service, &entry.name),
            data: serde_json::from_str(&entry.data).unwrap_or(serde_json::Value::Null),
            level: level_name(entry.level),
            created_at: time(entry.created_at.as_ref()),
            id: entry.id,
            name: entry.name,
            service: entry.service,
            user_id: entry.user_id,
            trace_id: entry.trace_id,
        })
        .collect();
    Ok(ApiJson(LogsView {
        logs,
        next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listeners_audit_entries_are_audit_entries() {
        assert_eq!(
            LogKind::of("listener", "audit user.registered"),
            LogKind::Audit
        );
        assert_eq!(
            LogKind::of("user", "audit user.registered"),
            LogKind::UserWritten
        );
        assert_eq!(LogKind::of("auth", "audit user.registered"), LogKind::Log);
        assert_eq!(LogKind::of("listener", "event handled"), LogKind::Log);
    }

    #[test]
    fn levels_are_read_in_any_case_and_bad_ones_refused() {
        assert_eq!(level("WARN").ok(), Some(pb::Level::Warn));
        assert_eq!(level("warning").ok(), Some(pb::Level::Warn));
        assert!(level("loud").is_err());
    }

    #[test]
    fn bad_filters_are_refused_before_the_logger_is_asked() {
        let bad = [
            LogsQuery {
                user: Some("ada".into()),
                ..LogsQuery::default()
            },
            LogsQuery {
                trace_id: Some("abc".into()),
                ..LogsQuery::default()
            },
            LogsQuery {
                limit: Some(0),
                ..LogsQuery::default()
            },
        ];
        for query in bad {
            assert!(query_request(query).is_err());
        }
    }

    #[test]
    fn an_empty_window_is_a_valid_query() {
        let backwards = LogsQuery {
            since: Some(Utc::now()),
            until: Some(Utc::now() - chrono::Duration::hours(1)),
            ..LogsQuery::default()
        };
        assert!(query_request(backwards).is_ok());
    }
}
