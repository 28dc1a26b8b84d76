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
    error::{ApiError, ErrorBody},
    extract::{ApiBytes, AuthUser, check_origin, require_json},
    middleware::ClientAddr,
    routes::auth::{client_info, through_sign_in_gate},
};
use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::{auth::v1 as auth, logger::v1 as logger, mail::v1 as mail};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest log name, subject and message (characters), as the older API allowed.
const MAX_NAME_CHARS: usize = 200;
const MAX_SUBJECT_CHARS: usize = 200;
const MAX_MESSAGE_CHARS: usize = 10_000;
const MAX_LOG_DATA_CHARS: usize = 10_000;

/// The service name of log entries users write through `/handle`.
pub const USER_WRITTEN: &str = "user";

/// The request body of `/handle`: an `action` and, under the action's name, its payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Check credentials and open a session.
    Auth {
        /// The credentials.
        auth: AuthPayload,
    },
    /// Write a log entry.
    Log {
        /// The entry.
        log: LogPayload,
    },
    /// Send a mail.
    Mail {
        /// The mail.
        mail: MailPayload,
    },
}

/// `auth`: log in (no `Debug`: it holds a password).
#[derive(Deserialize, ToSchema)]
pub struct AuthPayload {
    /// A username or an email address.
    email: String,
    /// The password.
    password: String,
}

impl std::fmt::Debug for AuthPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPayload")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// `log`: write a log entry, for any signed-in user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LogPayload {
    /// 1–200 characters on one line (no control characters), not only spaces.
    #[schema(
        max_length = 200,
        pattern = "^[ \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// At most 10,000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    data: String,
}

/// `mail`: send a mail, for administrators.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MailPayload {
    /// The sender named in the mail.
    #[schema(format = Email, max_length = 254)]
    from: String,
    /// The recipient.
    #[schema(format = Email, max_length = 254)]
    to: String,
    /// 1–200 characters, not only spaces.
    #[schema(
        max_length = 200,
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    subject: String,
    /// 1–10,000 characters, not only spaces.
    #[schema(
        max_length = 10000,
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    message: String,
}

/// Every answer of `/handle`, success or failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Answer {
    /// Whether the action failed.
    error: bool,
    /// What happened, for people.
    message: String,
    /// `auth`: the user and the token.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Option<Object>)]
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

/// A failure of `/handle`'s own, or of the layers around every route (the usual error body).
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used
#[serde(untagged)]
enum AnswerOrError {
    Answer(Answer),
    Error(ErrorBody),
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

/// The older single-endpoint API: one action per call. Its own refusals have its own
/// shape, `{"error": true, "message"}`; the rate limit and the deadline, which wrap every
/// route, answer with the API's usual error body.
#[utoipa::path(post, path = "/handle", tag = "compat", request_body = Action,
    security((), ("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, description = "Done.", body = Answer),
        (status = 400, description = "Not a known action, or its payload does not fit.", body = Answer),
        (status = 401, description = "`auth`: wrong login or password; `log`, `mail`: not signed in.", body = Answer),
        (status = 403, description = "From a page of another origin; a cookie write without X-CSRF-Token; `mail` by a non-administrator.", body = Answer),
        (status = 413, description = "The body is larger than the broker accepts.", body = Answer),
        (status = 415, description = "The body is not sent as application/json.", body = Answer),
        (status = 429, description = "Too many logins, or over the rate limit.", body = inline(AnswerOrError)),
        (status = 502, description = "A service behind the broker failed.", body = Answer),
        (status = 503, description = "A service is unavailable, or the request took too long.", body = inline(AnswerOrError))))]
pub async fn handle(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    caller: Result<AuthUser, ApiError>,
    body: Result<ApiBytes, ApiError>,
) -> Result<Response, Failure> {
    check_origin(&state, &headers)?;
    require_json(&headers)?;
    let ApiBytes(body) = body?;
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
    let answer = through_sign_in_gate(state, state.auth.clone().login(request))
        .await?
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
    if payload.name.chars().any(char::is_control) {
        return Err(bad(
            "log.name must be on one line, without control characters",
        ));
    }
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
            r"[]",
        ] {
            assert!(serde_json::from_str::<Action>(body).is_err(), "{body}");
        }
    }
}
