//! `POST /handle`: the single-endpoint API of the course microchat grew from, kept for its
//! clients. One JSON body names an `action` and carries its payload; every answer is
//! `{"error": bool, "message": string, "data": ...}`, with a 4xx status for a bad action
//! or payload and 503 when the service behind it is down.
//!
//! - `auth` `{email, password}`: checks the credentials (a login: a session is opened and
//!   its token returned in `data`); it shares the login limit and auth's failed-login
//!   throttling with `POST /api/auth/login`;
//! - `log` `{name, data}`: writes a log entry, for any signed-in user, marked as written by
//!   a user (service `user`, never an audit entry: see `routes/logs.rs`);
//! - `mail` `{from, to, subject, message}`: sends a mail, for administrators.

use crate::{
    AppState,
    error::ApiError,
    extract::{AuthUser, check_origin},
    middleware::ClientAddr,
    routes::auth::client_info,
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::{auth::v1 as auth, logger::v1 as logger, mail::v1 as mail};
use serde::{Deserialize, Serialize};

/// Longest log name, subject and message (characters), as the older API allowed.
const MAX_NAME_CHARS: usize = 200;
const MAX_SUBJECT_CHARS: usize = 200;
const MAX_MESSAGE_CHARS: usize = 10_000;
const MAX_LOG_DATA_CHARS: usize = 10_000;

/// The service name of log entries users write through `/handle`.
pub const USER_WRITTEN: &str = "user";

/// The request body: an action and its payload.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    Auth { auth: AuthPayload },
    Log { log: LogPayload },
    Mail { mail: MailPayload },
}

#[derive(Debug, Deserialize)]
struct AuthPayload {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct LogPayload {
    name: String,
    #[serde(default)]
    data: String,
}

#[derive(Debug, Deserialize)]
struct MailPayload {
    from: String,
    to: String,
    subject: String,
    message: String,
}

/// Every answer of `/handle`.
#[derive(Debug, Serialize)]
struct Answer {
    error: bool,
    message: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    data: serde_json::Value,
}

/// A failed action: its status, the message of the older API's shape, and for a 429 the
/// seconds to wait (sent as `Retry-After`).
pub struct Failure(StatusCode, String, Option<u64>);

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self(error.status, error.message.into_owned(), error.retry_after)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let answer = Answer {
            error: true,
            message: self.1,
            data: serde_json::Value::Null,
        };
        let mut response = (self.0, Json(answer)).into_response();
        if let Some(seconds) = self.2 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn failure(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure(status, message.into(), None)
}

fn bad(message: impl Into<String>) -> Failure {
    failure(StatusCode::BAD_REQUEST, message)
}

fn ok(message: impl Into<String>, data: serde_json::Value) -> Response {
    Json(Answer {
        error: false,
        message: message.into(),
        data,
    })
    .into_response()
}

fn within(field: &str, text: &str, max: usize) -> Result<(), Failure> {
    let chars = text.chars().count();
    if text.trim().is_empty() || chars > max {
        return Err(bad(format!("{field} must be 1–{max} characters")));
    }
    Ok(())
}

/// The older single-endpoint API.
pub async fn handle(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    caller: Result<AuthUser, ApiError>,
    body: Bytes,
) -> Result<Response, Failure> {
    check_origin(&state, &headers)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a JSON body (Content-Type: application/json)",
        ));
    }
    let action: Action = serde_json::from_slice(&body)
        .map_err(|error| bad(format!("not a valid request: {error}")))?;
    match action {
        Action::Auth { auth } => authenticate(&state, client, &headers, auth).await,
        Action::Log { log } => write_log(&state, &caller?, log).await,
        Action::Mail { mail } => send_mail(&state, &caller?, mail).await,
    }
}

async fn authenticate(
    state: &AppState,
    client: ClientAddr,
    headers: &HeaderMap,
    payload: AuthPayload,
) -> Result<Response, Failure> {
    state.login_limit.check(client.0)?;
    let request = auth::LoginRequest {
        login: payload.email.clone(),
        password: payload.password,
        client: Some(client_info(client, headers)),
    };
    let answer = state
        .auth
        .clone()
        .login(request)
        .await
        .map_err(|status| ApiError::from_grpc("auth", &status))?
        .into_inner();
    let user = answer.user.unwrap_or_default();
    Ok(ok(
        format!("Logged in user {}", user.email),
        serde_json::json!({
            "user": { "id": user.id, "username": user.username, "email": user.email },
            "token": answer.access_token,
        }),
    ))
}

async fn write_log(
    state: &AppState,
    caller: &AuthUser,
    payload: LogPayload,
) -> Result<Response, Failure> {
    within("log.name", &payload.name, MAX_NAME_CHARS)?;
    if payload.data.chars().count() > MAX_LOG_DATA_CHARS {
        return Err(bad(format!(
            "log.data must be at most {MAX_LOG_DATA_CHARS} characters"
        )));
    }
    let entry = logger::LogEntry {
        name: payload.name.trim().to_owned(),
        data: serde_json::json!({ "data": payload.data }).to_string(),
        level: logger::Level::Info as i32,
        // Never a service's name: what a user wrote must not pass for a service's entry,
        // least of all for an audit entry (the listener's).
        service: USER_WRITTEN.to_owned(),
        user_id: caller.claims.sub.to_string(),
        trace_id: platform::trace::TraceId::current()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        ..logger::LogEntry::default()
    };
    state
        .logger
        .clone()
        .write_logs(tokio_stream::once(logger::WriteLogsRequest {
            entries: vec![entry],
        }))
        .await
        .map_err(|status| ApiError::from_grpc("logger", &status))?;
    Ok(ok("logged", serde_json::Value::Null))
}

async fn send_mail(
    state: &AppState,
    caller: &AuthUser,
    payload: MailPayload,
) -> Result<Response, Failure> {
    if !state.current_role(&caller.claims).await.is_admin() {
        return Err(failure(
            StatusCode::FORBIDDEN,
            "only administrators may send mail",
        ));
    }
    for (field, address) in [("mail.from", &payload.from), ("mail.to", &payload.to)] {
        if address.parse::<email_address::EmailAddress>().is_err() || address.len() > 254 {
            return Err(bad(format!("{field} is not an email address")));
        }
    }
    within("mail.subject", &payload.subject, MAX_SUBJECT_CHARS)?;
    within("mail.message", &payload.message, MAX_MESSAGE_CHARS)?;
    let request = mail::SendAdminMessageRequest {
        to: payload.to.clone(),
        subject: payload.subject,
        message: payload.message,
        sender: payload.from,
    };
    state
        .mail
        .clone()
        .send_admin_message(request)
        .await
        .map_err(|status| ApiError::from_grpc("mail", &status))?;
    Ok(ok(
        format!("Message sent to {}", payload.to),
        serde_json::Value::Null,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_payloads_are_read() {
        let auth: Action = serde_json::from_str(
            r#"{"action":"auth","auth":{"email":"a@example.com","password":"pw"}}"#,
        )
        .unwrap();
        assert!(matches!(auth, Action::Auth { .. }));
        let log: Action =
            serde_json::from_str(r#"{"action":"log","log":{"name":"event","data":"x"}}"#).unwrap();
        assert!(matches!(log, Action::Log { .. }));
        let mail: Action = serde_json::from_str(
            r#"{"action":"mail","mail":{"from":"a@x.io","to":"b@x.io","subject":"s","message":"m"}}"#,
        )
        .unwrap();
        assert!(matches!(mail, Action::Mail { .. }));
    }

    #[test]
    fn unknown_actions_and_missing_payloads_are_refused() {
        for body in [
            r#"{"action":"launch"}"#,
            r#"{"action":"auth"}"#,
            r#"{"action":"log","log":{"data":"no name"}}"#,
            r#"{"auth":{"email":"a@example.com","password":"pw"}}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Action>(body).is_err(), "{body}");
        }
    }
}
