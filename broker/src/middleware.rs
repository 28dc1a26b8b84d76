//! Request middleware: trace ids and client addresses for every request, metrics per
//! route, the request deadline, and `Cache-Control: no-store` on every answer.

use crate::error::ApiError;
use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use platform::trace::{TRACEPARENT, TraceId};
use std::{net::IpAddr, net::SocketAddr, time::Duration, time::Instant};
use tracing::Instrument;

/// Response header naming the request's trace id, for bug reports and `GET /api/logs`.
pub static TRACE_ID_HEADER: HeaderName = HeaderName::from_static("x-trace-id");

/// The client's address: the peer, or the first X-Forwarded-For hop when trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

fn client_addr(request: &Request, trust_forwarded_for: bool) -> ClientAddr {
    let forwarded = trust_forwarded_for
        .then(|| request.headers().get("x-forwarded-for"))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse().ok());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    ClientAddr(forwarded.or(peer).unwrap_or(IpAddr::from([0, 0, 0, 0])))
}

/// Outermost layer: gives the request a trace id (the caller's `traceparent`, or a new
/// one), runs it in a span and trace scope, notes the client address, and names the trace
/// id in the response.
pub async fn trace(
    State(trust_forwarded_for): State<bool>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceId::from_traceparent)
        .unwrap_or_else(TraceId::generate);
    // Writes are logged (and shipped to the logger) at info; reads, the bulk of the
    // traffic, only at debug.
    let writes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    // Cheap clones (a method is a small value, a URI shares its bytes).
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let client = client_addr(&request, trust_forwarded_for);
    request.extensions_mut().insert(client);
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = %id,
        client = %client.0,
    );
    let started = Instant::now();
    let mut response = platform::trace::scope(id, next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status();
    span.in_scope(|| {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        if status.is_server_error() {
            tracing::warn!(%method, path = uri.path(), trace_id = %id, status = status.as_u16(), elapsed_ms, "request failed");
        } else if writes {
            // After the trace scope ended: the trace id goes in as a field.
            tracing::info!(%method, path = uri.path(), trace_id = %id, status = status.as_u16(), elapsed_ms, "request done");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms, "request done");
        }
    });
    let value =
        HeaderValue::from_str(&id.to_string()).expect("a hex trace id is a valid header value");
    response
        .headers_mut()
        .insert(TRACE_ID_HEADER.clone(), value);
    response
}

/// Counts requests and their latency per route, method and status.
pub async fn metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Answers 503 with a JSON message when a request outlives the deadline.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long, please try again",
        )
        .into_response(),
    }
}

/// Marks every answer `Cache-Control: no-store` (unless its handler said otherwise): the
/// broker's answers carry tokens (login, refresh, `/handle`'s `auth`), a session's CSRF
/// token, or one user's messages, none of which a browser or proxy cache may keep. One
/// layer for all, so a route added later cannot forget it.
pub async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
