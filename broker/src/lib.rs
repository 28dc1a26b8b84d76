//! The broker: microchat's only public entry. It serves the REST API, the WebSocket and
//! the ops endpoints over HTTP, authenticates callers itself (see [`sessions`]), and
//! forwards the work to the gRPC services behind it. It owns no state.
//!
//! [`Broker::build`] binds the port; [`Broker::run`] serves until shutdown.

mod config;
pub mod error;
mod extract;
mod middleware;
mod openapi;
pub mod rate_limit;
mod routes;
pub mod sessions;

pub use config::Config;

use anyhow::Context;
use platform::{grpc::TracedChannel, shutdown::Shutdown};
use proto::auth::v1::auth_client::AuthClient;
use sessions::Sessions;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic_health::pb::health_client::HealthClient;

/// Largest gRPC answer the broker accepts from a service.
const MAX_GRPC_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    config: Arc<Config>,
    auth: AuthClient<TracedChannel>,
    health: HealthClient<TracedChannel>,
    sessions: Arc<Sessions>,
}

/// A built broker, bound to its port, not yet serving.
pub struct Broker {
    listener: TcpListener,
    state: AppState,
}

impl Broker {
    /// Prepares the gRPC clients (they connect lazily) and binds the HTTP port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Install the recorder before the first request records anything.
        platform::telemetry::prometheus();
        let deadlines = platform::grpc::Deadlines {
            connect: Duration::from_secs(1),
            request: config.grpc_timeout,
        };
        let channel = platform::grpc::channel(&config.auth_url, deadlines)
            .with_context(|| format!("invalid auth URL {:?}", config.auth_url))?;
        let auth =
            AuthClient::new(channel.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the broker to {}", config.listen))?;
        let state = AppState {
            sessions: Arc::new(Sessions::new(auth.clone())),
            health: HealthClient::new(channel),
            auth,
            config: Arc::new(config),
        };
        Ok(Self { listener, state })
    }

    /// The address the HTTP server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let limiters = rate_limit::Limiters::default();
        let app = routes::router(self.state.clone(), &limiters);
        let revocations =
            tokio::spawn(Arc::clone(&self.state.sessions).follow_revocations(shutdown.clone()));
        let housekeeping = tokio::spawn(forget_idle_clients(limiters, shutdown.clone()));
        tracing::info!(%addr, "broker serving HTTP");
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("broker HTTP server")?;
        shutdown.cancel();
        revocations.await.context("revocation follower")?;
        housekeeping.await.context("rate-limit housekeeping")?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

async fn forget_idle_clients(limiters: rate_limit::Limiters, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => limiters.forget_idle_clients(),
        }
    }
}
