//! Durable domain events: the envelope helpers, the [`EventBus`] port with its RabbitMQ
//! and embedded (SQLite) adapters, and the transactional outbox with its relay.
//!
//! A producer writes each event into its `outbox` table in the same transaction as the
//! state change ([`outbox::insert`], or [`outbox::insert_all`] for a batch); the [`outbox::Relay`] publishes pending rows
//! to the bus and deletes them only once the bus has confirmed them. A RabbitMQ outage or a
//! crash delays events; it never loses them. Delivery is at least once, so consumers are
//! idempotent by event id.

mod bus;
pub mod embedded;
pub mod envelope;
pub mod outbox;
pub mod rabbit;

pub use bus::{BusError, EventBus, Published, topic_matches};
pub use embedded::EmbeddedBus;
pub use envelope::{Event, routing_key};

use std::sync::Arc;

/// The durable event exchange (topic) every producer publishes to.
pub const DEFAULT_EXCHANGE: &str = "microchat.events";

/// Where events go: RabbitMQ when `AMQP_URL` is set, otherwise the embedded run's durable
/// bus (`events.db` in its data directory; for a service started alone without it,
/// nowhere yet: events wait in the outbox).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "events")]
pub struct BusConfig {
    /// RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f; unset: the embedded
    /// durable bus in the data directory (all-in-one) or events wait in the outbox (a
    /// service alone).
    #[arg(
        long = "amqp-url",
        value_name = "URL",
        env = "AMQP_URL",
        hide_env_values = true
    )]
    pub amqp_url: Option<String>,
    /// The topic exchange for domain events.
    #[arg(
        long = "events-exchange",
        value_name = "NAME",
        env = "EVENTS_EXCHANGE",
        default_value = DEFAULT_EXCHANGE
    )]
    pub exchange: String,
}

impl BusConfig {
    /// The RabbitMQ bus `AMQP_URL` names, if set. It connects lazily: a producer starts
    /// and serves while RabbitMQ is away.
    pub fn rabbit(&self) -> Option<Arc<dyn EventBus>> {
        self.amqp_url.as_ref().map(|url| {
            Arc::new(rabbit::RabbitBus::new(url.clone(), self.exchange.clone()))
                as Arc<dyn EventBus>
        })
    }
}
