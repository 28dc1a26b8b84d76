//! Passwords, sessions and email verification, served by auth:
//!
//! - `POST /api/auth/password`: change the password (old one required); other sessions end.
//! - `POST /api/auth/password/forgot`: mail a reset link; the same 202 for any address.
//! - `POST /api/auth/password/reset`: set a new password with a link's token; every session ends.
//! - `GET /api/auth/sessions`, `DELETE /api/auth/sessions/{id}`,
//!   `POST /api/auth/sessions/end-others`: my sessions, and ending them.
//! - `POST /api/auth/email/verify`, `POST /api/auth/email/resend`: verify the address.
//!
//! Sessions a call ends are recorded here at once, so their sockets on this broker close
//! before the answer; other brokers hear of them through auth's revocation stream. No
//! answer here may be cached: they carry secrets or answer requests that did.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, AuthUser, check_origin},
    live::frames::time,
    middleware::ClientAddr,
    routes::auth::client_info,
};
use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /api/auth/password` (no `Debug`: it holds passwords).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    /// The password now.
    #[schema(min_length = 1, max_length = 1024)]
    old_password: String,
    /// The new password: 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// `POST /api/auth/password/forgot`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordBody {
    /// The account's email address.
    #[schema(format = Email, max_length = 254)]
    email: String,
}

/// `POST /api/auth/password/reset` (no `Debug`: it holds a token and a password).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordBody {
    /// The token of the mailed link (the part after `#token=`).
    #[schema(max_length = 256)]
    token: String,
    /// The new password: 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// `POST /api/auth/email/verify` (no `Debug`: it holds a token).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailBody {
    /// The token of the mailed link (the part after `#token=`).
    #[schema(max_length = 256)]
    token: String,
}

/// How many sessions a call ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsEndedView {
    /// Sessions signed out by this call.
    sessions_ended: usize,
}

/// An accepted request whose outcome is mailed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    /// Always `accepted`.
    status: &'static str,
    /// What happens next, for people.
    message: &'static str,
}

/// One of my sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct MySessionView {
    id: String,
    /// When it was opened (the login).
    created_at: Option<DateTime<Utc>>,
    /// Its last login or token refresh (within one access-token lifetime of its last use).
    last_used_at: Option<DateTime<Utc>>,
    /// When it ends unless it is used.
    expires_at: Option<DateTime<Utc>>,
    /// The address it was opened from.
    ip: String,
    /// The browser or app it was opened with (its User-Agent, at most 256 characters).
    user_agent: String,
    /// Whether this is the session making the request.
    current: bool,
}

/// Answer of `GET /api/auth/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MySessionsView {
    /// Newest first.
    sessions: Vec<MySessionView>,
}

/// Answer of `POST /api/auth/email/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailVerifiedView {
    /// The verified address.
    email: String,
    /// Always true.
    email_verified: bool,
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` calls it with"
)]
fn from_auth(status: tonic::Status) -> ApiError {
    ApiError::from_grpc("auth", &status)
}

/// Marks a response as never to be stored by a browser or a proxy.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Records the sessions auth ended, so their tokens are refused and their sockets close
/// on this broker at once; returns how many there were.
fn record_ended(state: &AppState, ended: &pb::EndedSessions) -> usize {
    let forget_after = ended
        .forget_after
        .as_ref()
        .map_or(i64::MAX, |at| at.seconds);
    let ids: Vec<Uuid> = ended
        .session_ids
        .iter()
        .filter_map(|id| Uuid::try_parse(id).ok())
        .collect();
    for id in &ids {
        state.sessions.record_revoked(*id, forget_after);
    }
    ids.len()
}

fn sessions_ended(count: usize) -> Response {
    no_store(
        ApiJson(SessionsEndedView {
            sessions_ended: count,
        })
        .into_response(),
    )
}

/// Change the password; every other session of the caller ends at once.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", security(("bearer" = []), ("session_cookie" = [])), request_body = ChangePasswordBody,
    responses((status = 200, body = SessionsEndedView, description = "changed; the other sessions are signed out"),
        (status = 400, body = ErrorBody, description = "the new password breaks the rules, or the body is malformed"),
        (status = 401, body = ErrorBody, description = "not signed in, or the old password is wrong"),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    caller: AuthUser,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> Result<Response, ApiError> {
    let request = pb::ChangePasswordRequest {
        access_token: caller.token,
        old_password: body.old_password,
        new_password: body.new_password,
        client: Some(client_info(client, &headers)),
    };
    let ended = state
        .auth
        .clone()
        .change_password(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    Ok(sessions_ended(record_ended(&state, &ended)))
}

/// Ask for a password reset link by mail. The answer is the same whether or not an
/// account has the address.
#[utoipa::path(post, path = "/api/auth/password/forgot", tag = "auth", request_body = ForgotPasswordBody,
    responses((status = 202, body = AcceptedView, description = "if an account has this (verified) address, a link is on its way"),
        (status = 400, body = ErrorBody, description = "not an email address, or the body is malformed"),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn forgot_password(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ForgotPasswordBody>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let request = pb::RequestPasswordResetRequest {
        email: body.email,
        client: Some(client_info(client, &headers)),
    };
    state
        .auth
        .clone()
        .request_password_reset(request)
        .await
        .map_err(from_auth)?;
    let view = AcceptedView {
        status: "accepted",
        message: "if an account has this address, we sent it a link to choose a new password",
    };
    Ok(no_store(
        (StatusCode::ACCEPTED, ApiJson(view)).into_response(),
    ))
}

/// Set a new password with the token of a mailed reset link; every session ends.
#[utoipa::path(post, path = "/api/auth/password/reset", tag = "auth", request_body = ResetPasswordBody,
    responses((status = 200, body = SessionsEndedView, description = "set; sign in with the new password"),
        (status = 404, body = ErrorBody, description = "the link is wrong, used or expired (one answer for all)")))]
pub async fn reset_password(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ResetPasswordBody>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let request = pb::ResetPasswordRequest {
        token: body.token,
        new_password: body.new_password,
        client: Some(client_info(client, &headers)),
    };
    let ended = state
        .auth
        .clone()
        .reset_password(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    Ok(sessions_ended(record_ended(&state, &ended)))
}

/// My active sessions: where and with what each was opened, and when last used.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = MySessionsView), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn my_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let request = pb::ListSessionsRequest {
        user_id: caller.claims.sub.to_string(),
    };
    let answer = state
        .auth
        .clone()
        .list_sessions(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    let current = caller.claims.sid.to_string();
    let sessions = answer
        .sessions
        .into_iter()
        .map(|session| {
            let client = session.client.unwrap_or_default();
            MySessionView {
                current: session.id == current,
                created_at: time(session.created_at.as_ref()),
                last_used_at: time(session.last_used_at.as_ref()),
                expires_at: time(session.expires_at.as_ref()),
                id: session.id,
                ip: client.ip,
                user_agent: client.user_agent,
            }
        })
        .collect();
    Ok(no_store(
        ApiJson(MySessionsView { sessions }).into_response(),
    ))
}

/// End one of my sessions: its tokens stop working and its sockets close at once.
/// Ending the current one signs out here too.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = Uuid, Path, description = "session id")),
    responses((status = 204, description = "ended"),
        (status = 400, body = ErrorBody, description = "not a session id"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such active session of mine"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn end_session(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let request = pb::EndSessionRequest {
        user_id: caller.claims.sub.to_string(),
        session_id: id.to_string(),
    };
    let ended = state
        .auth
        .clone()
        .end_session(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => ApiError::not_found("you have no active session with this id"),
            _ => from_auth(status),
        })?
        .into_inner();
    record_ended(&state, &ended);
    let mut response = no_store(StatusCode::NO_CONTENT.into_response());
    if id == caller.claims.sid {
        crate::routes::account::clear_session_cookies(&mut response);
    }
    Ok(response)
}

/// Sign out everywhere else: every session of mine but this one ends at once.
#[utoipa::path(post, path = "/api/auth/sessions/end-others", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, body = SessionsEndedView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn end_other_sessions(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let request = pb::EndOtherSessionsRequest {
        user_id: caller.claims.sub.to_string(),
        keep_session_id: caller.claims.sid.to_string(),
    };
    let ended = state
        .auth
        .clone()
        .end_other_sessions(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    Ok(sessions_ended(record_ended(&state, &ended)))
}

/// Verify my email address with the token of the mailed link (no sign-in needed: the
/// link may be opened on another device).
#[utoipa::path(post, path = "/api/auth/email/verify", tag = "auth", request_body = VerifyEmailBody,
    responses((status = 200, body = EmailVerifiedView),
        (status = 404, body = ErrorBody, description = "the link is wrong, used or expired (one answer for all)")))]
pub async fn verify_email(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerifyEmailBody>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let answer = state
        .auth
        .clone()
        .verify_email(pb::VerifyEmailRequest { token: body.token })
        .await
        .map_err(from_auth)?
        .into_inner();
    if let Ok(user) = Uuid::parse_str(&answer.user_id) {
        state.recent_verified.put(user, true);
    }
    let view = EmailVerifiedView {
        email: answer.email,
        email_verified: true,
    };
    Ok(no_store(ApiJson(view).into_response()))
}

/// Mail me a new verification link.
#[utoipa::path(post, path = "/api/auth/email/resend", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 202, body = AcceptedView, description = "a new link is on its way"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the address is verified already"),
        (status = 429, body = ErrorBody, description = "asked too often; see Retry-After"),
        (status = 503, body = ErrorBody)))]
pub async fn resend_verification(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let request = pb::ResendVerificationRequest {
        user_id: caller.claims.sub.to_string(),
    };
    state
        .auth
        .clone()
        .resend_verification(request)
        .await
        .map_err(from_auth)?;
    let view = AcceptedView {
        status: "accepted",
        message: "we sent a new verification link to your address",
    };
    Ok(no_store(
        (StatusCode::ACCEPTED, ApiJson(view)).into_response(),
    ))
}

/// Whether the caller's address is verified; `None` when auth cannot say right now (the
/// rest of `/api/auth/me` answers from the token alone).
pub(crate) async fn email_verified(state: &AppState, user: Uuid) -> Option<bool> {
    if let Some(verified) = state.recent_verified.get(&user) {
        return Some(verified);
    }
    let mut request = tonic::Request::new(pb::GetEmailStatusRequest {
        user_id: user.to_string(),
    });
    request.set_timeout(std::time::Duration::from_millis(500));
    match state.auth.clone().get_email_status(request).await {
        Ok(answer) => {
            let verified = answer.into_inner().verified;
            state.recent_verified.put(user, verified);
            Some(verified)
        }
        Err(status) => {
            tracing::debug!(%status, "cannot tell whether the caller's address is verified");
            None
        }
    }
}
