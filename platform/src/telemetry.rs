//! Logging and metrics set-up shared by every binary.
//!
//! Logs: `tracing` to stdout, filtered by `RUST_LOG` (default `info`), as JSON when
//! `LOG_FORMAT=json` (the dev stack and the cluster), human-readable otherwise; and every
//! line at `info` or above to the logger service ([`crate::logship`]), off the request path.
//! Metrics: one Prometheus recorder per process, rendered by each service's `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global `tracing` subscriber once, naming `service` as the source of the
/// lines it ships; later calls (tests, the all-in-one) are no-ops.
pub fn init_tracing(service: &'static str) {
    let filter = filter();
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::logship::ShipLayer::new(service));
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    // Already installed (a second service in the same process, or a test): keep the first.
    drop(result);
}

/// `RUST_LOG`, default `info`.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For tests: ships lines as a service does, and prints them through the test harness
/// (shown only for a failing test). Later calls are no-ops.
pub fn init_tracing_for_tests() {
    let installed = tracing_subscriber::registry()
        .with(filter())
        .with(crate::logship::ShipLayer::new("microchat"))
        .with(fmt::layer().with_target(false).with_test_writer())
        .try_init();
    drop(installed);
}

/// Latency buckets in seconds, from a loopback call to a slow database query.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency bucket list is a non-empty constant");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics will be empty");
        }
        handle
    })
}

/// How often the recorder's upkeep runs (the exporter's own default period): it drains the
/// histogram samples recorded since into their buckets. Without it every sample is kept
/// until `/metrics` is rendered, so a process nobody scrapes grows for ever (issue 29: about
/// 10 MB a minute at 20,000 deliveries/s).
pub const METRICS_UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the recorder's upkeep every [`METRICS_UPKEEP_PERIOD`] until `shutdown`: one per
/// process, next to whatever serves its `/metrics`.
pub async fn keep_metrics(shutdown: crate::shutdown::Shutdown) -> anyhow::Result<()> {
    let handle = prometheus();
    while crate::shutdown::pause(&shutdown, METRICS_UPKEEP_PERIOD).await {
        handle.run_upkeep();
    }
    Ok(())
}

/// The `/metrics` handler of every HTTP server: the Prometheus text exposition of every
/// metric of this process.
pub async fn metrics() -> axum::response::Response {
    use axum::{http::header, response::IntoResponse};
    let body = prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Serves `/metrics` (Prometheus text) and `/healthz` on `socket` until `shutdown`: the
/// ops port of a gRPC service running alone (the all-in-one's broker renders the same
/// process-wide metrics on its own `/metrics`).
pub async fn serve_metrics(
    socket: tokio::net::TcpListener,
    shutdown: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }));
    tracing::info!(addr = %socket.local_addr()?, "serving /metrics");
    axum::serve(socket, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Telemetry settings of a service running alone (the all-in-one wires its own logger).
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// gRPC URL of the logger service that receives this process's log lines, or `off`.
    #[arg(
        long,
        value_name = "URL",
        env = "LOGGER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub logger_url: String,
    /// Address of an HTTP server for /metrics and /healthz [default: none].
    #[arg(long, value_name = "ADDR", env = "METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Telemetry of a running service: log shipping, the metrics port and the recorder's
/// upkeep, until [`Telemetry::finish`].
#[derive(Debug)]
pub struct Telemetry {
    _log_shipping: Option<crate::logship::LogShipping>,
    metrics: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    upkeep: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TelemetryConfig {
    /// Installs logging for `service`, starts shipping its lines (calling the logger as
    /// `keys` allow) and serving its metrics.
    pub async fn start(
        &self,
        service: crate::service_auth::Service,
        keys: &crate::service_auth::ServiceKeys,
        shutdown: &crate::shutdown::Shutdown,
    ) -> anyhow::Result<Telemetry> {
        init_tracing(service.name());
        prometheus();
        let log_shipping = if self.logger_url.eq_ignore_ascii_case("off") {
            None
        } else {
            let credentials = keys
                .identity(service)?
                .calling(crate::service_auth::Service::Logger);
            Some(crate::logship::ship_to(&self.logger_url, credentials))
        };
        let metrics = match self.metrics_listen {
            Some(addr) => {
                let socket = tokio::net::TcpListener::bind(addr).await.map_err(|error| {
                    anyhow::anyhow!("binding the metrics server to {addr}: {error}")
                })?;
                Some(tokio::spawn(serve_metrics(socket, shutdown.clone())))
            }
            None => None,
        };
        Ok(Telemetry {
            _log_shipping: log_shipping,
            metrics,
            upkeep: tokio::spawn(keep_metrics(shutdown.clone())),
        })
    }
}

impl Telemetry {
    /// Ships the last lines and stops the metrics server and the upkeep (after shutdown began).
    pub async fn finish(self) -> anyhow::Result<()> {
        crate::logship::flush(std::time::Duration::from_secs(2)).await;
        if let Some(metrics) = self.metrics {
            metrics.await??;
        }
        self.upkeep.await??;
        Ok(())
    }
}
