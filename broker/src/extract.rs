//! Extractors: JSON bodies whose rejections are API errors, and the authenticated caller.
//!
//! A caller authenticates with `Authorization: Bearer <token>` (API clients) or with the
//! HttpOnly session cookie (browsers). Cookie-authenticated writes must also send the
//! session's CSRF token in `X-CSRF-Token` — a page on another site can make the browser
//! send the cookie, but cannot read the token.

use crate::{AppState, error::ApiError};
use axum::{
    extract::{FromRequest, FromRequestParts},
    http::{HeaderMap, Method, header, request::Parts},
};
use platform::{
    credentials::{bearer, same_secret},
    token::Claims,
};
use std::sync::Arc;

/// Name of the cookie holding the access token.
pub const SESSION_COOKIE: &str = "microchat_session";
/// Name of the cookie holding the refresh token (sent to `/api/auth` only).
pub const REFRESH_COOKIE: &str = "microchat_refresh";
/// Header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A JSON body; malformed, oversized or mistyped bodies become JSON 4xx errors.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A raw body; one over the size limit becomes a JSON 413.
#[derive(Debug, Clone, Default)]
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state).await?;
        Ok(Self(bytes))
    }
}

/// Refuses a body not sent as JSON (415) by the rule [`ApiJson`] applies
/// (`application/json` or `application/*+json`), for routes that read the body themselves.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    let json = essence.is_some_and(|essence| {
        essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON (Content-Type: application/json)",
        ))
    }
}

/// A query string; unparsable ones become JSON 400 errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A path parameter; unparsable ones (e.g. not a UUID) become JSON 400 errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Browsers send `Origin` on cross-origin writes and WebSocket upgrades: refuse those
/// from pages we do not serve (no `Origin`: not a browser, nothing to forge).
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    {
        Some(origin)
            if !state
                .config
                .allowed_origins
                .iter()
                .any(|allowed| allowed == origin) =>
        {
            Err(ApiError::forbidden(
                "origin",
                "requests from this origin are not allowed",
            ))
        }
        _ => Ok(()),
    }
}

/// How the caller presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer`.
    Bearer,
    /// The session cookie.
    Cookie,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// What the verified token says.
    pub claims: Arc<Claims>,
    /// The token itself (to log out with).
    pub token: String,
    /// How it was presented.
    pub credential: Credential,
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (token, credential) = match bearer(&parts.headers) {
            Some(token) => (token, Credential::Bearer),
            None => match cookie(&parts.headers, SESSION_COOKIE) {
                Some(token) => (token, Credential::Cookie),
                None => {
                    return Err(ApiError::unauthorized(
                        "log in first: no bearer token or session cookie",
                    ));
                }
            },
        };
        let claims = state.sessions.authenticate(token).await?;
        let writes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if credential == Credential::Cookie && writes {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok());
            if !sent.is_some_and(|sent| same_secret(sent, &claims.csrf)) {
                return Err(ApiError::forbidden(
                    "csrf",
                    "cookie-authenticated writes need the session's X-CSRF-Token header",
                ));
            }
        }
        Ok(Self {
            claims,
            token: token.to_owned(),
            credential,
        })
    }
}

/// A signed-in caller with an admin or owner role (see [`crate::Shared::current_role`]).
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if state.current_role(&user.claims).await.is_admin() {
            Ok(Self(user))
        } else {
            Err(ApiError::forbidden(
                "admins_only",
                "only administrators may do this",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; microchat_session=tok; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
