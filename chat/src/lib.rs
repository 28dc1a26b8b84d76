//! The chat service: public rooms, 1:1 conversations, messages with cursor-paginated
//! history, read receipts, typing, presence (open sockets per user), and a live event
//! stream per broker. Every conversation id from a caller is checked against the
//! caller's membership. Serves gRPC (`microchat.chat.v1.Chat`) plus gRPC health.
//!
//! [`ChatService::build`] opens the store and binds the port; [`ChatService::run`] serves
//! until shutdown.

pub mod attachments;
mod config;
mod conversations;
pub mod domain;
mod events;
mod grpc;
pub mod live;
pub mod mentions;
mod messages;
pub mod search;
pub mod store;
mod wire;
mod writer;

pub use config::Config;
pub use conversations::{Chat, ChatError, HistoryQuery, SearchRequest};

use anyhow::Context;
use platform::{
    events::{EventBus, outbox::spawn_relay},
    grpc::BoundServer,
    service_auth::Service,
    shutdown::Shutdown,
};
use proto::chat::v1::chat_server::ChatServer;
use std::{net::SocketAddr, path::Path, sync::Arc};

/// Largest gRPC message chat accepts: a chunk of an upload and its envelope (a
/// 4,000-character message is at most 16 KiB).
const MAX_MESSAGE_BYTES: usize = proto::chat::v1::MAX_CHUNK_BYTES + 64 * 1024;

/// How often unclaimed uploads are looked for: a quarter of the time they may wait, from
/// once a second to once a minute.
fn expiry_interval(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    )
}

/// A built chat service, bound to its port, not yet serving.
pub struct ChatService {
    /// The gRPC server: its port, who may call it, and where callers in this process
    /// reach it.
    grpc: BoundServer,
    chat: Arc<Chat>,
    bus: Option<Arc<dyn EventBus>>,
    live_fanout: Option<(String, String)>,
    sweep_interval: std::time::Duration,
    expiry_interval: std::time::Duration,
}

impl ChatService {
    /// Opens the database (applying migrations) and binds the port.
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        service_keys: &platform::service_auth::ServiceKeys,
    ) -> anyhow::Result<Self> {
        platform::telemetry::prometheus();
        let store = store::connect(&config.database_url(data_dir))
            .await
            .context("opening the chat database")?;
        let objects = config
            .attachment_objects(data_dir)
            .context("opening the attachments' object store")?;
        let limits = config.attachment_limits();
        let workers = config.thumbnail_workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let files = attachments::Files {
            objects,
            thumbnailer: attachments::Thumbnailer::new(workers, limits.max_pixels),
            limits,
        };
        let chat = Arc::new(Chat::new(store, live::LiveHub::default(), files));
        let grpc = BoundServer::bind(config.listen, Service::Chat, service_keys).await?;
        Ok(Self {
            grpc,
            chat,
            bus: None,
            live_fanout: None,
            sweep_interval: config.attachment_sweep_interval,
            expiry_interval: expiry_interval(config.attachment_unclaimed_ttl),
        })
    }

    /// Relays the outbox to `bus` while serving. Without a bus, events wait in the
    /// outbox until chat runs with one.
    pub fn publish_events_to(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Shares live events with the other chat instances through RabbitMQ at `amqp_url`
    /// (the exchange of [`Config::live_exchange`]): needed as soon as more than one
    /// instance serves, so that every broker sees every event.
    pub fn share_live_events(mut self, amqp_url: String, config: &Config) -> Self {
        self.live_fanout = Some((amqp_url, config.live_exchange.clone()));
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
        if let Some((url, exchange)) = self.live_fanout {
            self.chat.live().fan_out(url, exchange, shutdown.clone());
        }
        let relay = spawn_relay(
            self.bus,
            self.chat.store().outbox(),
            self.chat.outbox_waker().clone(),
            "chat",
            shutdown.clone(),
        );
        tokio::spawn(attachments::maintain(
            Arc::clone(&self.chat),
            self.expiry_interval,
            self.sweep_interval,
            shutdown.clone(),
        ));
        let api = ChatServer::new(grpc::ChatApi::new(self.chat, shutdown.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        self.grpc.serve(api, shutdown.clone()).await?;
        if let Some(relay) = relay {
            relay.await.context("outbox relay")?;
        }
        tracing::info!("chat stopped");
        Ok(())
    }
}
