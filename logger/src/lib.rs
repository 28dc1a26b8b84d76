//! The logger service: the structured log and audit store. Every service ships its log
//! lines here in batches (never on a request's path), the listener adds audit entries,
//! and the broker's admin endpoint queries them by service, level, user, trace id and
//! time, newest first. Serves gRPC (`microchat.logger.v1.Logger`) plus gRPC health.
//!
//! Entries live in MongoDB when `LOGGER_MONGO_URL` is set (dev stack, cluster: database
//! `logs`, collection `logs`, a TTL index bounding it), else in SQLite (the embedded run,
//! purged on a timer). [`LoggerService::build`] opens the store and binds the port;
//! [`LoggerService::run`] serves until shutdown.

mod config;
pub mod domain;
mod grpc;
mod retention;
pub mod store;

pub use config::{Backend, Config};

use anyhow::Context;
use platform::{grpc::BoundServer, service_auth::Service, shutdown::Shutdown};
use proto::logger::v1::logger_server::LoggerServer;
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};
use store::LogStore;

/// Largest gRPC message the logger accepts: a batch at every limit of `logger.proto`
/// (1,000 entries, each with 16 KiB of data and a 200-character name) fits, with room to
/// spare. It bounds the memory one stream holds: a batch is checked and stored whole.
pub const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

/// A built logger service, bound to its port, not yet serving.
pub struct LoggerService {
    /// The gRPC server: its port, who may call it, and where callers in this process
    /// reach it.
    grpc: BoundServer,
    store: Arc<dyn LogStore>,
    /// The retention to enforce by purging, for stores without a TTL of their own.
    purge_after: Option<Duration>,
}

impl LoggerService {
    /// Opens the store (creating MongoDB's indexes or applying SQLite's migrations) and
    /// binds the port.
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        service_keys: &platform::service_auth::ServiceKeys,
    ) -> anyhow::Result<Self> {
        platform::telemetry::prometheus();
        let (store, purge_after) = match config.backend(data_dir) {
            Backend::Mongo { url, database } => {
                let store = store::connect_mongo(&url, &database, config.retention)
                    .await
                    .context("opening the MongoDB log store of LOGGER_MONGO_URL")?;
                tracing::info!(%database, "log entries go to MongoDB");
                (store, None)
            }
            Backend::Sqlite(url) => {
                let store = store::connect_sqlite(&url).await.with_context(|| {
                    format!("opening the log store, {}", platform::sql::describe(&url))
                })?;
                tracing::info!("log entries go to SQLite");
                (store, Some(config.retention))
            }
        };
        let grpc = BoundServer::bind(config.listen, Service::Logger, service_keys).await?;
        Ok(Self {
            grpc,
            store,
            purge_after,
        })
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

    /// The store, e.g. for a readiness check ([`LogStore::ping`]).
    pub fn store(&self) -> Arc<dyn LogStore> {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // Its own child token, so an early server failure stops the purge loop too
        // without shutting down the rest of the process.
        let stop_purge = shutdown.child_token();
        let purge = self.purge_after.map(|retention| {
            retention::spawn_purge(self.store.clone(), retention, stop_purge.clone())
        });
        let api = LoggerServer::new(grpc::LoggerApi::new(self.store))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let served = self.grpc.serve(api, shutdown.clone()).await;
        stop_purge.cancel();
        if let Some(purge) = purge {
            purge.await.context("log purge task")?;
        }
        served?;
        tracing::info!("logger stopped");
        Ok(())
    }
}
