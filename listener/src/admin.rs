//! The admin API for parked events (`GET /admin/parked`, `POST /admin/parked/replay`), on
//! a port of its own: whoever may scrape the listener's metrics must not replay events.
//! It binds to loopback by default; to bind anywhere else it needs `LISTENER_ADMIN_TOKEN`,
//! which every request then presents as `Authorization: Bearer <token>`.

use crate::{http::error, source::Source};
use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use platform::credentials::{bearer, same_secret};
use serde::Deserialize;
use serde_json::json;
use std::{fmt, net::SocketAddr, str::FromStr, sync::Arc};
use tokio::net::TcpListener;

/// The admin API's shared secret: 16 or more visible ASCII characters. Its `Debug` form
/// hides it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

/// Why a setting is not an admin token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAdminToken(&'static str);

impl FromStr for AdminToken {
    type Err = InvalidAdminToken;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() < 16 || !raw.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InvalidAdminToken(
                "must be 16 or more visible ASCII characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        if raw.contains("REPLACE-ME") {
            return Err(InvalidAdminToken(
                "is still the placeholder of deployments/k8s/secret.yaml",
            ));
        }
        Ok(Self(raw.into()))
    }
}

impl AdminToken {
    /// The token itself, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &str) -> bool {
        same_secret(&self.0, presented)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// The admin API's port, bound, and the token its requests must carry.
pub(crate) struct AdminPort {
    socket: TcpListener,
    token: Option<AdminToken>,
}

impl AdminPort {
    /// Binds `addr`. Beyond loopback only with a token, so no deployment can open the API
    /// to whoever reaches the address.
    pub(crate) async fn bind(addr: SocketAddr, token: Option<AdminToken>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            token.is_some() || addr.ip().is_loopback(),
            "LISTENER_ADMIN_LISTEN={addr} is not a loopback address: set LISTENER_ADMIN_TOKEN, \
             or anyone who reaches it could replay parked events"
        );
        let socket = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the listener's admin API to {addr}"))?;
        Ok(Self { socket, token })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Whether requests must carry the token.
    pub(crate) fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The socket and the routes to serve on it.
    pub(crate) fn into_parts(self, source: Arc<dyn Source>) -> (TcpListener, Router) {
        (self.socket, router(source, self.token))
    }
}

fn router(source: Arc<dyn Source>, token: Option<AdminToken>) -> Router {
    let router = Router::new()
        .route("/admin/parked", get(parked))
        .route("/admin/parked/replay", post(replay))
        .fallback(crate::http::not_found)
        .with_state(source);
    // Around every route and the fallback: without the token, nothing on this port answers.
    match token {
        Some(token) => router.layer(middleware::from_fn_with_state(token, require_token)),
        None => router,
    }
}

async fn require_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if bearer(request.headers()).is_some_and(|presented| token.matches(presented)) {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "the admin API needs Authorization: Bearer <LISTENER_ADMIN_TOKEN>",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[derive(Deserialize)]
struct ParkedQuery {
    limit: Option<usize>,
}

async fn parked(
    State(source): State<Arc<dyn Source>>,
    query: Result<Query<ParkedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "limit: a number from 1 to 1000",
        );
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "invalid", "limit: 1 to 1000");
    }
    match source.parked(limit).await {
        Ok(parked) => Json(json!({ "parked": parked })).into_response(),
        Err(failure) => {
            tracing::warn!(error = %failure, "listing parked events failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event bus is unavailable",
            )
        }
    }
}

async fn replay(State(source): State<Arc<dyn Source>>) -> Response {
    match source.replay_parked().await {
        Ok(replayed) => {
            tracing::info!(replayed, "parked events replayed");
            Json(json!({ "replayed": replayed })).into_response()
        }
        Err(failure) => {
            tracing::warn!(error = %failure, "replaying parked events failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the event bus is unavailable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_visible_and_not_the_placeholder() {
        assert!("short".parse::<AdminToken>().is_err());
        assert!("sixteen chars ok".parse::<AdminToken>().is_err(), "spaces");
        assert!(
            "REPLACE-ME-listener-admin-token"
                .parse::<AdminToken>()
                .is_err()
        );
        assert!("0123456789abcdef".parse::<AdminToken>().is_ok());
    }

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let token: AdminToken = "0123456789abcdef".parse().expect("a valid token");
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcde"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
    }
}
