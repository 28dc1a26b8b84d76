//! The RabbitMQ adapter of [`EventBus`] (publisher confirms), and the connection and
//! topology helpers its consumers share.
//!
//! Topology: `microchat.events` is a durable topic exchange whose alternate exchange,
//! `microchat.events.unrouted` (fanout), keeps every event no queue was bound to in the
//! durable queue of the same name — so an event published before its consumer first
//! declared its queue is parked there, not dropped.
//!
//! A lone event is a message of its own (an encoded `Envelope`); consecutive events of one
//! type that leave together are one message (an `EventBatch`, see [`unpack`]), so a
//! backlog costs RabbitMQ one publish, confirm, delivery and ack per batch.

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
use std::{borrow::Cow, time::Duration};
use tokio::sync::Mutex;

/// Longest wait for RabbitMQ to accept a connection, or to confirm a batch.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Content type of every event message: an encoded `microchat.events.v1.Envelope`.
pub const CONTENT_TYPE: &str = "application/x-protobuf; proto=microchat.events.v1.Envelope";

/// Content type of a message holding several events: an encoded
/// `microchat.events.v1.EventBatch`.
pub const BATCH_CONTENT_TYPE: &str = "application/x-protobuf; proto=microchat.events.v1.EventBatch";

/// Most events in one batch message.
pub const EVENTS_PER_MESSAGE: usize = 128;
/// A batch message stops growing at this many bytes of envelopes.
const BYTES_PER_MESSAGE: usize = 128 * 1024;

/// The encoded envelopes a message holds: its body, or the entries of an `EventBatch`.
/// A batch that does not decode comes back with its body, untouched.
pub fn unpack(
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Vec<Vec<u8>>, (prost::DecodeError, Vec<u8>)> {
    use prost::Message as _;
    if content_type != Some(BATCH_CONTENT_TYPE) {
        return Ok(vec![body]);
    }
    match proto::events::v1::EventBatch::decode(body.as_slice()) {
        Ok(batch) => Ok(batch.envelopes),
        Err(error) => Err((error, body)),
    }
}

/// Splits `events` into the messages to publish, in order: runs of consecutive events
/// with the same routing key, each at most [`EVENTS_PER_MESSAGE`] events and about
/// [`BYTES_PER_MESSAGE`] bytes.
fn messages(events: &[Published]) -> Vec<&[Published]> {
    let mut messages = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, event) in events.iter().enumerate() {
        let full = i - start == EVENTS_PER_MESSAGE
            || bytes + event.payload.len() > BYTES_PER_MESSAGE
            || events[start].routing_key != event.routing_key;
        if i > start && full {
            messages.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += event.payload.len();
    }
    if start < events.len() {
        messages.push(&events[start..]);
    }
    messages
}

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

/// Properties of a batch message: persistent, with the type of its events (the id is
/// its first event's).
fn batch_properties(first: &Published) -> BasicProperties {
    properties(first).with_content_type(BATCH_CONTENT_TYPE.into())
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
        for message in messages(events) {
            let (body, properties) = if let [event] = message {
                (Cow::Borrowed(event.payload.as_slice()), properties(event))
            } else {
                use prost::Message as _;
                let batch = proto::events::v1::EventBatch {
                    envelopes: message.iter().map(|event| event.payload.clone()).collect(),
                };
                (
                    Cow::Owned(batch.encode_to_vec()),
                    batch_properties(&message[0]),
                )
            };
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    message[0].routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, bytes: usize) -> Published {
        Published {
            event_id: uuid::Uuid::now_v7(),
            routing_key: key.into(),
            payload: vec![7; bytes],
        }
    }

    fn sizes(events: &[Published]) -> Vec<(String, usize)> {
        messages(events)
            .iter()
            .map(|message| (message[0].routing_key.clone(), message.len()))
            .collect()
    }

    #[test]
    fn consecutive_events_of_one_type_share_a_message() {
        let events: Vec<Published> = (0..3)
            .map(|_| event("message.sent", 100))
            .chain([event("user.registered", 100)])
            .chain((0..2).map(|_| event("message.sent", 100)))
            .collect();
        assert_eq!(
            sizes(&events),
            [
                ("message.sent".to_owned(), 3),
                ("user.registered".to_owned(), 1),
                ("message.sent".to_owned(), 2)
            ]
        );
        let flat: Vec<&Published> = messages(&events).into_iter().flatten().collect();
        assert_eq!(flat, events.iter().collect::<Vec<_>>(), "order is kept");
    }

    #[test]
    fn a_message_holds_at_most_its_count_and_about_its_bytes() {
        let many: Vec<Published> = (0..EVENTS_PER_MESSAGE * 2 + 1)
            .map(|_| event("message.sent", 10))
            .collect();
        let counts: Vec<usize> = sizes(&many).into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [EVENTS_PER_MESSAGE, EVENTS_PER_MESSAGE, 1]);

        let big: Vec<Published> = (0..5)
            .map(|_| event("message.sent", BYTES_PER_MESSAGE / 2))
            .collect();
        let counts: Vec<usize> = sizes(&big).into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [2, 2, 1]);
        let huge = [event("message.sent", BYTES_PER_MESSAGE * 2)];
        assert_eq!(
            sizes(&huge).len(),
            1,
            "an event larger than the cap goes alone"
        );
    }

    #[test]
    fn a_batch_unpacks_into_its_envelopes_and_a_plain_body_into_itself() {
        use prost::Message as _;
        let batch = proto::events::v1::EventBatch {
            envelopes: vec![b"one".to_vec(), b"two".to_vec()],
        };
        assert_eq!(
            unpack(Some(BATCH_CONTENT_TYPE), batch.encode_to_vec()).expect("a valid batch"),
            [b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(
            unpack(Some(CONTENT_TYPE), b"plain".to_vec()).expect("a plain body"),
            [b"plain".to_vec()]
        );
        let broken = vec![0xff, 0xff, 0xff];
        let (_, body) =
            unpack(Some(BATCH_CONTENT_TYPE), broken.clone()).expect_err("not an EventBatch");
        assert_eq!(body, broken, "an unreadable batch comes back whole");
    }
}
