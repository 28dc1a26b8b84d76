//! The listener's HTTP port: `/healthz`, `/readyz`, `/metrics`, and the admin API for
//! parked events (`GET /admin/parked`, `POST /admin/parked/replay`). It binds to loopback
//! by default and is never routed from outside (see deployments/).

use crate::{ProcessedEvents, source::Source};
use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
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
        .route("/admin/parked", get(parked))
        .route("/admin/parked/replay", post(replay))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(AppState { source, processed })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
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

#[derive(Deserialize)]
struct ParkedQuery {
    limit: Option<usize>,
}

async fn parked(
    State(state): State<AppState>,
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
    match state.source.parked(limit).await {
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

async fn replay(State(state): State<AppState>) -> Response {
    match state.source.replay_parked().await {
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
