//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

use crate::{AppState, error::ApiError};
use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use std::time::Duration;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the services the broker needs answer their gRPC health checks.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (auth, chat) = tokio::join!(
        serving(state.health.clone()),
        serving(state.chat_health.clone())
    );
    let keys = if state.sessions.has_keys() {
        "ok"
    } else {
        "not loaded"
    };
    let live = if state.hub.is_fed() {
        "ok"
    } else {
        "not connected"
    };
    let ready = auth == "ok" && chat == "ok" && live == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {
            "auth": auth,
            "chat": chat,
            "live_events": live,
            "token_keys": keys,
            "revocation_stream": state.sessions.is_following_revocations(),
            "sockets": state.hub.len(),
        },
    });
    (status, Json(body)).into_response()
}

async fn serving(
    mut health: tonic_health::pb::health_client::HealthClient<platform::grpc::TracedChannel>,
) -> &'static str {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_secs(1));
    match health.check(request).await {
        Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => "ok",
        Ok(_) => "not serving",
        Err(_) => "unreachable",
    }
}

/// The OpenAPI document of the public API.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// JSON 405 for known routes called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
