//! The one error type of the broker's HTTP API. Every failure becomes a status and a JSON
//! body `{"error": {"code", "message"}}`; a service that cannot be reached becomes a 503
//! that says which, never a 500.

use axum::{
    Json,
    extract::rejection::{BytesRejection, JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use std::borrow::Cow;
use tonic::Code;

/// An API error: status, machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable, machine-readable code such as `invalid_argument`.
    pub code: &'static str,
    /// What happened, for people.
    pub message: Cow<'static, str>,
    /// Seconds to wait, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code.
    code: &'static str,
    /// Human-readable message.
    message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 with a specific code.
    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 for a route or resource.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests, slow down",
            )
        }
    }

    /// 503: a service behind the broker cannot be reached.
    pub fn unavailable(service: &'static str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("the {service} service is unavailable, please try again shortly"),
        )
    }

    /// 503 with `Retry-After`: the broker refused a send it could not serve in time
    /// (admission control, [`crate::admission`]); nothing was stored.
    pub fn overloaded(retry_after: std::time::Duration) -> Self {
        Self::overloaded_saying(
            retry_after,
            "the server is overloaded and did not send this message; retry after Retry-After seconds",
        )
    }

    /// 503 with `Retry-After`: the broker refused a registration, login or token refresh
    /// it could not serve in time (admission control, [`crate::admission`]); nothing
    /// was done.
    pub fn sign_in_overloaded(retry_after: std::time::Duration) -> Self {
        Self::overloaded_saying(
            retry_after,
            "the server is too busy to sign you in right now; retry after Retry-After seconds",
        )
    }

    fn overloaded_saying(retry_after: std::time::Duration, message: &'static str) -> Self {
        // Retry-After counts whole seconds: round up, so a client never comes back early.
        let seconds = retry_after.as_millis().div_ceil(1000);
        Self {
            retry_after: Some(u64::try_from(seconds).unwrap_or(u64::MAX).max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    /// Translates a gRPC status from `service` into the API's terms.
    pub fn from_grpc(service: &'static str, status: &tonic::Status) -> Self {
        if platform::grpc::is_unavailable(status) {
            return Self::unavailable(service);
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => Self::bad_request("invalid_argument", message),
            Code::AlreadyExists => Self::new(StatusCode::CONFLICT, "conflict", message),
            Code::Unauthenticated => Self::unauthorized(message),
            Code::PermissionDenied => Self::forbidden("forbidden", message),
            Code::NotFound => Self::not_found(message),
            Code::FailedPrecondition => {
                Self::new(StatusCode::CONFLICT, "failed_precondition", message)
            }
            Code::ResourceExhausted => {
                let retry_after = status
                    .metadata()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(60);
                Self {
                    message: message.into(),
                    ..Self::too_many_requests(retry_after)
                }
            }
            _ => {
                tracing::error!(service, code = ?status.code(), message = status.message(), "service failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("the {service} service failed"),
                )
            }
        }
    }
}

/// A send refused by the broker itself (503 `overloaded`) or by chat (its status).
impl From<crate::sends::SendError> for ApiError {
    fn from(error: crate::sends::SendError) -> Self {
        match error {
            crate::sends::SendError::Overloaded(refusal) => Self::overloaded(refusal.retry_after),
            crate::sends::SendError::Chat(status) => Self::from_grpc("chat", &status),
        }
    }
}

/// One status per kind of bad input, the same on every route (and in the OpenAPI document,
/// see [`crate::openapi`]): a body that is not JSON, not the right shape or not the right
/// types is 400, a body over the size limit 413, a body not sent as JSON 415. Axum's own
/// 422 for a well-formed body of the wrong shape would be a fourth answer to the same
/// mistake, so it becomes 400 like the rest.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => Self::bad_request("invalid_body", message),
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("malformed_json", message),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            JsonRejection::BytesRejection(bytes) => bytes.into(),
            _ => Self::bad_request("bad_request", message),
        }
    }
}

/// A body that could not be read: over the size limit (413), or cut off (400).
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let (status, message) = (rejection.status(), rejection.body_text());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(status, "body_too_large", message)
        } else {
            Self::bad_request("unreadable_body", message)
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<axum::extract::ws::rejection::WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> Self {
        Self::new(
            rejection.status(),
            "websocket_upgrade",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.into_owned(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_services_are_503_not_500() {
        for status in [
            tonic::Status::unavailable("down"),
            tonic::Status::deadline_exceeded("slow"),
        ] {
            assert_eq!(
                ApiError::from_grpc("auth", &status).status,
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }

    #[test]
    fn an_overloaded_send_is_503_with_retry_after_rounded_up() {
        let error = ApiError::overloaded(std::time::Duration::from_millis(1_200));
        assert_eq!(
            (error.status, error.code, error.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(2))
        );
        let short = ApiError::overloaded(std::time::Duration::from_millis(50));
        assert_eq!(short.retry_after, Some(1), "never Retry-After: 0");
        let response = short.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn throttling_carries_retry_after() {
        let mut status = tonic::Status::resource_exhausted("slow down");
        status
            .metadata_mut()
            .insert("retry-after", "42".parse().unwrap());
        let error = ApiError::from_grpc("auth", &status);
        assert_eq!(
            (error.status, error.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(42))
        );
    }
}
