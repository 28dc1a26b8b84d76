//! `DELETE /api/users/me`: the caller deletes their account (see [`crate::deletion`]).

use crate::{
    AppState,
    deletion::{self, Outcome},
    error::{ApiError, ErrorBody},
    extract::{AuthUser, REFRESH_COOKIE, SESSION_COOKIE},
    middleware::ClientAddr,
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use cookie::{Cookie, SameSite};
use proto::auth::v1 as pb;
use serde::Deserialize;
use utoipa::ToSchema;

/// `DELETE /api/users/me` (no `Debug`: it holds a password).
#[derive(Deserialize, ToSchema)]
pub struct DeleteAccountBody {
    /// The account's current password: whoever holds a session (a borrowed laptop, a
    /// stolen cookie) cannot delete the account without it.
    #[schema(min_length = 1)]
    password: String,
}

/// Adds Set-Cookie headers that remove the session cookies.
pub fn clear_session_cookies(response: &mut Response) {
    for (name, path) in [(SESSION_COOKIE, "/"), (REFRESH_COOKIE, "/api/auth")] {
        let mut gone = Cookie::build((name, ""))
            .path(path)
            .http_only(true)
            .same_site(SameSite::Strict)
            .build();
        gone.make_removal();
        let value =
            HeaderValue::from_str(&gone.to_string()).expect("a removal cookie is header-safe");
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Answer of a deletion that finishes in the background.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct PendingView {
    /// Always `pending`.
    status: &'static str,
    /// What it means, for people.
    message: &'static str,
}

/// Delete the caller's account: their private conversations, then the account itself.
/// Needs the current password; wrong ones count toward the sign-in throttle.
#[utoipa::path(delete, path = "/api/users/me", tag = "users", request_body = DeleteAccountBody,
    security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Deleted; the session cookies are removed."),
        (status = 202, description = "The account is unusable now; the rest finishes shortly.", body = inline(PendingView)),
        (status = 401, body = ErrorBody, description = "Not signed in, or the wrong password (`wrong_password`).")))]
pub async fn delete_me(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    user: AuthUser,
    body: Bytes,
) -> Result<Response, ApiError> {
    confirm_password(&state, &user, client, &headers, &body).await?;
    let outcome = deletion::delete_account(&state, user.claims.sub).await?;
    state
        .sessions
        .record_revoked(user.claims.sid, user.claims.exp + 1);
    let mut response = match outcome {
        Outcome::Done => StatusCode::NO_CONTENT.into_response(),
        Outcome::Pending => (
            StatusCode::ACCEPTED,
            Json(PendingView {
                status: "pending",
                message: "your account can no longer be used; its deletion will finish shortly",
            }),
        )
            .into_response(),
    };
    clear_session_cookies(&mut response);
    Ok(response)
}

/// Checks the password in a `DeleteAccountBody` with auth (which throttles it like a login).
async fn confirm_password(
    state: &AppState,
    user: &AuthUser,
    client: ClientAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let missing = || {
        ApiError::bad_request(
            "password_required",
            "password: your current password is required to delete your account",
        )
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(missing());
    }
    let body: DeleteAccountBody = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?;
    if body.password.is_empty() {
        return Err(missing());
    }
    let request = pb::ConfirmPasswordRequest {
        user_id: user.claims.sub.to_string(),
        password: body.password,
        client: Some(crate::routes::auth::client_info(client, headers)),
    };
    match state.auth.clone().confirm_password(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::Unauthenticated => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "the password is not right",
        )),
        Err(status) => Err(ApiError::from_grpc("auth", &status)),
    }
}
