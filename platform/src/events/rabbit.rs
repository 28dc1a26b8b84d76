//! The RabbitMQ adapter of [`EventBus`] (publisher confirms), and the connection and
//! topology helpers its consumers share.
//!
//! Topology: `microchat.events` is a durable topic exchange whose alternate exchange,
//! `microchat.events.unrouted` (fanout), keeps every event no queue was bound to in the
//! durable queue of the same name — so an event published before its consumer first
//! declared its queue is parked there, not dropped.

use super::{BusError, EventBus, Published};
use async_trait::async_trait;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use std::time::Duration;
use tokio::sync::Mutex;

/// Longest wait for RabbitMQ to accept a connection, or to confirm a batch.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of every event message: an encoded `microchat.events.v1.Envelope`.
pub const CONTENT_TYPE: &str = "application/x-protobuf; proto=microchat.events.v1.Envelope";

/// Connects, failing after [`TIMEOUT`] rather than hanging on a half-open peer.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connected) => connected,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "RabbitMQ did not answer in time",
        ))),
    }
}

/// The name of the alternate exchange and queue holding unroutable events.
pub fn unrouted(exchange: &str) -> String {
    format!("{exchange}.unrouted")
}

/// Declares the event exchange with its alternate exchange and queue (idempotent; every
/// producer and consumer declares the same).
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let unrouted = unrouted(exchange);
    channel
        .exchange_declare(
            unrouted.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            unrouted.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            unrouted.as_str().into(),
            unrouted.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(unrouted.as_str().into()),
    );
    channel
        .exchange_declare(exchange.into(), ExchangeKind::Topic, durable, arguments)
        .await
}

/// Properties of an event message: persistent, with its id and type.
pub fn properties(event: &Published) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(event.event_id.to_string().into())
        .with_type(event.routing_key.as_str().into())
}

/// Publishes to RabbitMQ with publisher confirms. Connects lazily and again after any
/// failure, so a producer starts, and keeps serving, while RabbitMQ is away.
pub struct RabbitBus {
    url: String,
    exchange: String,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RabbitBus")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl RabbitBus {
    /// A bus for `url` publishing to `exchange`; nothing is connected yet.
    pub fn new(url: String, exchange: String) -> Self {
        Self {
            url,
            exchange,
            channel: Mutex::new(None),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel), lapin::Error> {
        let connection = connect(&self.url, "microchat outbox relay").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchange(&channel, &self.exchange).await?;
        tracing::info!(exchange = %self.exchange, "connected to RabbitMQ");
        Ok((connection, channel))
    }

    async fn publish_on(&self, channel: &Channel, events: &[Published]) -> Result<(), BusError> {
        let unavailable = |error: lapin::Error| BusError::Unavailable(error.to_string());
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.payload,
                    properties(event),
                )
                .await
                .map_err(unavailable)?;
            confirms.push(confirm);
        }
        let confirmed = tokio::time::timeout(TIMEOUT, futures::future::try_join_all(confirms))
            .await
            .map_err(|_| BusError::Unavailable("RabbitMQ did not confirm in time".into()))?
            .map_err(unavailable)?;
        match confirmed
            .iter()
            .find(|c| matches!(c, Confirmation::Nack(_)))
        {
            Some(_) => Err(BusError::Refused("RabbitMQ nacked an event".into())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        let mut slot = self.channel.lock().await;
        let channel = match slot.as_ref() {
            Some((connection, channel))
                if connection.status().connected() && channel.status().connected() =>
            {
                channel.clone()
            }
            _ => {
                *slot = None;
                let opened = self
                    .open()
                    .await
                    .map_err(|error| BusError::Unavailable(error.to_string()))?;
                let channel = opened.1.clone();
                *slot = Some(opened);
                channel
            }
        };
        let published = self.publish_on(&channel, events).await;
        if published.is_err() {
            // Start over on a fresh connection next time.
            if let Some((connection, _)) = slot.take() {
                let closing = connection.close(320, "republishing on a new connection".into());
                let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
            }
        }
        published
    }
}
