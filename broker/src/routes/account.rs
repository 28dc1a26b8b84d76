//! `DELETE /api/users/me`: the caller deletes their account (see [`crate::deletion`]).

use crate::{
    AppState,
    deletion::{self, Outcome},
    error::ApiError,
    extract::{AuthUser, REFRESH_COOKIE, SESSION_COOKIE},
};
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use cookie::{Cookie, SameSite};

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
#[utoipa::path(delete, path = "/api/users/me", tag = "users", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Deleted; the session cookies are removed."),
        (status = 202, description = "The account is unusable now; the rest finishes shortly.", body = inline(PendingView))))]
pub async fn delete_me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Response, ApiError> {
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
