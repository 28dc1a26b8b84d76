//! The auth service: accounts (argon2id passwords), sessions, and EdDSA access tokens
//! with immediate revocation. Serves gRPC (`microchat.auth.v1.Auth`) plus gRPC health.
//!
//! [`AuthService::build`] opens the store, loads the key and binds the port;
//! [`AuthService::run`] serves until shutdown. Splitting the two lets callers learn the bound
//! address (port 0 in tests) before anything is served.

mod accounts;
pub mod admin;
mod config;
pub mod domain;
mod grpc;
pub mod keys;
pub mod password;
mod revocations;
pub mod store;
pub mod throttle;

pub use accounts::{
    Accounts, AuthError, Changed, Client, EndedSessions, Issued, Policy, end_sessions_after,
};
pub use config::Config;

use anyhow::Context;
use keys::SigningKey;
use platform::{
    events::{EventBus, outbox::spawn_relay},
    grpc::BoundServer,
    service_auth::Service,
    shutdown::Shutdown,
};
use proto::auth::v1::auth_server::AuthServer;
use revocations::RevocationFeed;
use std::{net::SocketAddr, path::Path, sync::Arc};

/// Largest gRPC message auth accepts: requests are a few hundred bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A built auth service, bound to its port, not yet serving.
pub struct AuthService {
    /// The gRPC server: its port, who may call it, and where callers in this process
    /// reach it.
    grpc: BoundServer,
    accounts: Arc<Accounts>,
    bus: Option<Arc<dyn EventBus>>,
}

impl AuthService {
    /// Opens the database (applying migrations), loads the signing key, binds the port.
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        service_keys: &platform::service_auth::ServiceKeys,
    ) -> anyhow::Result<Self> {
        platform::telemetry::prometheus();
        let store = store::connect(&config.database_url(data_dir))
            .await
            .context("opening the auth database")?;
        let keys = match &config.signing_key {
            Some(pem) => SigningKey::from_pem(pem)?,
            None => SigningKey::load_or_create(&data_dir.join("auth-signing-key.pem"))?,
        };
        let feed = Arc::new(RevocationFeed::load(&store).await?);
        let policy = Policy {
            access_ttl: config.access_token_ttl,
            session_ttl: config.session_ttl,
            refresh_reuse_grace: config.refresh_reuse_grace,
            throttle: throttle::Limits {
                per_source: config.max_failures_per_source,
                per_account: config.max_failures_per_account,
                per_ip: config.max_failures_per_ip,
                window: config.failure_window,
            },
            password_cost: password::Cost::new(config.argon2_memory_kib, config.argon2_iterations)
                .map_err(|error| {
                    anyhow::anyhow!(
                        "invalid argon2 cost ({error}): memory at least 8 KiB, at least 1 pass"
                    )
                })?,
            reset_link_ttl: config.reset_link_ttl,
            verify_link_ttl: config.verify_link_ttl,
        };
        let accounts = Arc::new(Accounts::new(store, keys, feed, policy).await);
        let grpc = BoundServer::bind(config.listen, Service::Auth, service_keys).await?;
        Ok(Self {
            grpc,
            accounts,
            bus: None,
        })
    }

    /// Relays the outbox to `bus` while serving. Without a bus, events wait in the
    /// outbox until auth runs with one.
    pub fn publish_events_to(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Where callers in this process reach the server while it serves, through the same
    /// stack (guard, limits) as over the network.
    pub fn local(&self) -> platform::grpc::in_process::Local {
        self.grpc.local()
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let follower = tokio::spawn(
            Arc::clone(self.accounts.revocations())
                .follow(self.accounts.store().clone(), shutdown.clone()),
        );
        let relay = spawn_relay(
            self.bus,
            self.accounts.store().outbox(),
            self.accounts.outbox_waker().clone(),
            "auth",
            shutdown.clone(),
        );
        let api = AuthServer::new(grpc::AuthApi::new(self.accounts, shutdown.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        self.grpc.serve(api, shutdown.clone()).await?;
        follower.await.context("revocation follower")?;
        if let Some(relay) = relay {
            relay.await.context("outbox relay")?;
        }
        tracing::info!("auth stopped");
        Ok(())
    }
}
