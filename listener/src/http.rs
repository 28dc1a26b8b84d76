//! The listener's health and metrics port: `/healthz`, `/readyz`, `/metrics`. Prometheus
//! scrapes it, so it serves nothing that changes state; the parked-event admin API is on
//! a port of its own (`admin.rs`). It binds to loopback by default and is never routed from
//! outside (see deployments/).

use crate::{ProcessedEvents, source::Source};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    source: Arc<dyn Source>,
    processed: ProcessedEvents,
}

pub(crate) fn router(source: Arc<dyn Source>, processed: ProcessedEvents) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(platform::telemetry::metrics))
        .fallback(not_found)
        .with_state(AppState { source, processed })
}

/// An error answer: `{"error": {"code", "message"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// The answer to a route the port does not serve.
pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn readyz(State(state): State<AppState>) -> Response {
    let bus = state.source.is_connected();
    let database = state.processed.ping().await.is_ok();
    let ready = bus && database;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {
            "event_source": if bus { "ok" } else { "not connected" },
            "database": if database { "ok" } else { "unreachable" },
        },
    });
    (status, Json(body)).into_response()
}
