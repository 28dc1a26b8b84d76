//! Where events come from, and what happens to one after its handler ran: acknowledged,
//! retried later, or parked for an operator. RabbitMQ in the dev stack and the cluster;
//! the embedded durable bus (SQLite) in the embedded run.

mod embedded;
mod rabbit;

pub use embedded::EmbeddedSource;
pub use rabbit::RabbitSource;

use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;

/// The routing keys the listener's queue is bound to.
pub const BINDINGS: &[&str] = &["user.*", "message.*", "attachment.*"];

/// One event received from the bus (RabbitMQ or the embedded bus), with what settles it:
/// acknowledged, retried later or parked.
pub struct ReceivedEvent {
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// How many times it was handled before (0 on first delivery).
    pub attempts: u32,
    settle: Box<dyn Settle>,
}

impl ReceivedEvent {
    pub(crate) fn new(
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            payload,
            routing_key,
            attempts,
            settle,
        }
    }

    /// The work is done: forget it.
    pub async fn ack(self) -> anyhow::Result<()> {
        self.settle.ack().await
    }

    /// Hand it back after `delay`, counting `attempts` attempts so far.
    pub async fn retry(self, attempts: u32, delay: Duration) -> anyhow::Result<()> {
        self.settle
            .retry(self.payload, self.routing_key, attempts, delay)
            .await
    }

    /// Give up on it: it waits in the parking queue with the reason.
    pub async fn park(self, attempts: u32, reason: &str) -> anyhow::Result<()> {
        self.settle
            .park(self.payload, self.routing_key, attempts, reason)
            .await
    }
}

/// How a source settles a delivery. Retry and park keep the event durably: on RabbitMQ
/// they hand it on before the delivery is acknowledged, so a crash in between duplicates
/// it, never loses it; on the embedded bus each is one update of its row.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(self: Box<Self>) -> anyhow::Result<()>;
    async fn retry(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        delay: Duration,
    ) -> anyhow::Result<()>;
    async fn park(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        reason: &str,
    ) -> anyhow::Result<()>;
}

/// A parked event, as an operator sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Parked {
    /// The event id (empty if the envelope could not be read).
    pub event_id: String,
    /// The routing key.
    pub routing_key: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was parked.
    pub reason: String,
}

/// A source of deliveries with a parking queue.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The next delivery; waits (reconnecting if need be) until there is one.
    async fn next(&self) -> ReceivedEvent;
    /// Up to `limit` parked events, oldest first; they stay parked.
    async fn parked(&self, limit: usize) -> anyhow::Result<Vec<Parked>>;
    /// Moves every parked event back to the queue, attempts reset; returns how many.
    async fn replay_parked(&self) -> anyhow::Result<usize>;
    /// True while events can arrive (connected to RabbitMQ).
    fn is_connected(&self) -> bool;
}

/// The event id an envelope carries, for listings (empty when it cannot be read).
pub(crate) fn event_id_of(payload: &[u8]) -> String {
    platform::events::envelope::decode(payload)
        .map(|(id, _)| id.to_string())
        .unwrap_or_default()
}
