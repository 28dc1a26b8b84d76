//! The RabbitMQ source. Topology, declared on every (re)connect:
//!
//! - `<queue>` (durable), bound to the event exchange by [`BINDINGS`], consumed with
//!   manual acks and a prefetch limit;
//! - `<queue>.retry.<ms>ms` (durable), one per retry delay, with that message TTL and
//!   `<queue>` as dead-letter target: a failed event waits there, then comes back;
//! - `<queue>.parked` (durable): events that failed every attempt, or can never succeed,
//!   with the reason in their headers, until an operator replays them.
//!
//! One queue per delay (instead of a per-message TTL) because RabbitMQ only expires
//! messages at the head of a queue: mixed delays in one queue would hold short ones back.

use super::{BINDINGS, Parked, ReceivedEvent, Settle, Source, event_id_of};
use crate::config::Config;
use async_trait::async_trait;
use futures::StreamExt;
use lapin::{
    Acker, BasicProperties, Channel, Connection, Consumer,
    message::Delivery as AmqpDelivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use platform::events::rabbit as amqp;
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

const ATTEMPTS_HEADER: &str = "x-microchat-attempts";
const REASON_HEADER: &str = "x-microchat-park-reason";
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Names {
    exchange: String,
    queue: String,
    parked: String,
}

impl Names {
    fn retry(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.queue, delay.as_millis())
    }
}

struct Live {
    // Kept so the connection lives as long as its channels.
    _connection: Connection,
    consumer: Consumer,
    publisher: Channel,
    /// The events of a batch message not handed out yet. They go with the connection:
    /// a batch not acknowledged whole comes again.
    pending: VecDeque<ReceivedEvent>,
}

/// The listener's queues on RabbitMQ.
pub struct RabbitSource {
    url: String,
    names: Arc<Names>,
    prefetch: u16,
    retry_delays: Vec<Duration>,
    live: tokio::sync::Mutex<Option<Live>>,
    connected: AtomicBool,
    drained_unrouted: AtomicBool,
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn attempts_of(properties: &BasicProperties) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPTS_HEADER).cloned());
    let attempts = match value {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => n.into(),
        Some(AMQPValue::LongUInt(n)) => n.into(),
        Some(AMQPValue::ShortInt(n)) => n.into(),
        Some(AMQPValue::ShortShortInt(n)) => n.into(),
        _ => 0,
    };
    u32::try_from(attempts).unwrap_or(0)
}

fn reason_of(properties: &BasicProperties) -> String {
    match properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(REASON_HEADER).cloned())
    {
        Some(AMQPValue::LongString(text)) => text.to_string(),
        _ => String::new(),
    }
}

fn with_attempts(attempts: u32, reason: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(attempts.into()),
    );
    if let Some(reason) = reason {
        let bounded: String = reason.chars().take(1000).collect();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(bounded.into()));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(amqp::CONTENT_TYPE.into())
        .with_headers(headers)
}

/// Publishes on a confirm channel and waits for the confirm.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirmation = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            payload,
            properties,
        )
        .await?
        .await?;
    anyhow::ensure!(!confirmation.is_nack(), "RabbitMQ refused the message");
    Ok(())
}

impl RabbitSource {
    /// A source for `url`; it connects on first use and again after any failure.
    pub fn new(url: String, exchange: String, config: &Config) -> Self {
        let mut retry_delays: Vec<Duration> = (1..config.max_attempts)
            .map(|n| config.retry_delay(n))
            .collect();
        retry_delays.dedup();
        let queue = config.queue.clone();
        Self {
            url,
            names: Arc::new(Names {
                parked: format!("{queue}.parked"),
                exchange,
                queue,
            }),
            prefetch: config.prefetch,
            retry_delays,
            live: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            drained_unrouted: AtomicBool::new(false),
        }
    }

    /// Opens a connection with a confirm channel and declares the whole topology.
    async fn open(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = amqp::connect(&self.url, "microchat listener").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_exchange(&channel, &self.names.exchange).await?;
        let queue = self.names.queue.as_str();
        channel
            .queue_declare(queue.into(), durable(), FieldTable::default())
            .await?;
        for key in BINDINGS {
            channel
                .queue_bind(
                    queue.into(),
                    self.names.exchange.as_str().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for delay in &self.retry_delays {
            let mut arguments = FieldTable::default();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.into()),
            );
            channel
                .queue_declare(
                    self.names.retry(*delay).as_str().into(),
                    durable(),
                    arguments,
                )
                .await?;
        }
        channel
            .queue_declare(
                self.names.parked.as_str().into(),
                durable(),
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    async fn connect(&self) -> anyhow::Result<Live> {
        let (connection, publisher) = self.open().await?;
        if !self.drained_unrouted.swap(true, Ordering::SeqCst) {
            match self.drain_unrouted(&publisher).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    count,
                    "re-published events that arrived before the queue was bound"
                ),
                Err(error) => tracing::warn!(%error, "could not re-publish unrouted events"),
            }
        }
        let consuming = connection.create_channel().await?;
        consuming
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = consuming
            .basic_consume(
                self.names.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %self.names.queue, prefetch = self.prefetch, "consuming events from RabbitMQ");
        Ok(Live {
            _connection: connection,
            consumer,
            publisher,
            pending: VecDeque::new(),
        })
    }

    /// Events published before any queue was bound wait in the exchange's alternate
    /// queue; now that ours is bound, publish them again (once per start, as many as
    /// were there: the ones still unroutable go back and stay).
    async fn drain_unrouted(&self, channel: &Channel) -> anyhow::Result<usize> {
        let unrouted = amqp::unrouted(&self.names.exchange);
        let mut moved = 0;
        let mut left: Option<u32> = None;
        while left != Some(0) {
            let Some(message) = channel
                .basic_get(unrouted.as_str().into(), BasicGetOptions::default())
                .await?
            else {
                break;
            };
            // `message_count` is what remains after this one.
            left = Some(left.unwrap_or(message.message_count + 1));
            publish_confirmed(
                channel,
                &self.names.exchange,
                message.delivery.routing_key.as_str(),
                &message.delivery.data,
                message.delivery.properties.clone(),
            )
            .await?;
            message.delivery.ack(BasicAckOptions::default()).await?;
            moved += 1;
            left = left.map(|n| n.saturating_sub(1));
        }
        Ok(moved)
    }
}

/// How an event's message is acknowledged once the event is settled.
enum Acking {
    /// The message holds this event alone.
    Whole(Acker),
    /// The message is a batch: acknowledged when the last of its events is settled.
    Part(Arc<BatchAck>),
}

/// The acknowledgement a batch message's events share.
struct BatchAck {
    acker: Acker,
    unsettled: AtomicUsize,
    failed: AtomicBool,
}

impl Acking {
    /// The event is settled (`ok`), or could not be (its retry or parking was not
    /// confirmed): its message is then left unacknowledged, to come again after a
    /// reconnect like any unacknowledged message, the events already done included
    /// (the processed-events table absorbs those).
    async fn settled(&self, ok: bool) -> anyhow::Result<()> {
        match self {
            Self::Whole(acker) if ok => {
                acker.ack(BasicAckOptions::default()).await?;
            }
            Self::Whole(_) => {}
            Self::Part(batch) => {
                if !ok {
                    batch.failed.store(true, Ordering::SeqCst);
                }
                let last = batch.unsettled.fetch_sub(1, Ordering::AcqRel) == 1;
                if last && !batch.failed.load(Ordering::SeqCst) {
                    batch.acker.ack(BasicAckOptions::default()).await?;
                }
            }
        }
        Ok(())
    }
}

impl RabbitSource {
    /// The events a message holds, each settled on its own. A batch that cannot be read
    /// is parked whole, as an unreadable event is.
    async fn events_of(
        &self,
        delivery: AmqpDelivery,
        publisher: &Channel,
    ) -> Result<VecDeque<ReceivedEvent>, lapin::Error> {
        // Events coming back from a retry queue carry the queue's name as routing key;
        // their original key travels in `type`.
        let routing_key = delivery
            .properties
            .kind()
            .as_ref()
            .map_or_else(|| delivery.routing_key.to_string(), ToString::to_string);
        let attempts = attempts_of(&delivery.properties);
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(ShortString::as_str);
        let envelopes = match amqp::unpack(content_type, delivery.data) {
            Ok(envelopes) if envelopes.is_empty() => {
                // Nothing to do: an empty batch.
                delivery.acker.ack(BasicAckOptions::default()).await?;
                return Ok(VecDeque::new());
            }
            Ok(envelopes) => envelopes,
            Err((_, body)) => vec![body],
        };
        // One event acknowledges its message itself; a batch's events share a count.
        let batch = (envelopes.len() > 1).then(|| {
            Arc::new(BatchAck {
                acker: delivery.acker.clone(),
                unsettled: AtomicUsize::new(envelopes.len()),
                failed: AtomicBool::new(false),
            })
        });
        Ok(envelopes
            .into_iter()
            .map(|payload| {
                let acking = match &batch {
                    Some(batch) => Acking::Part(Arc::clone(batch)),
                    None => Acking::Whole(delivery.acker.clone()),
                };
                let settle = RabbitSettle {
                    acking,
                    publisher: publisher.clone(),
                    names: Arc::clone(&self.names),
                };
                ReceivedEvent::new(payload, routing_key.clone(), attempts, Box::new(settle))
            })
            .collect())
    }
}

struct RabbitSettle {
    acking: Acking,
    publisher: Channel,
    names: Arc<Names>,
}

impl RabbitSettle {
    /// Hands the event on durably, then settles it.
    async fn publish_then_settle(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        match publish_confirmed(&self.publisher, "", queue, payload, properties).await {
            Ok(()) => self.acking.settled(true).await,
            Err(error) => {
                self.acking.settled(false).await?;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        self.acking.settled(true).await
    }

    async fn retry(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        delay: Duration,
    ) -> anyhow::Result<()> {
        self.publish_then_settle(
            &self.names.retry(delay),
            &payload,
            with_attempts(attempts, None).with_type(routing_key.into()),
        )
        .await
    }

    async fn park(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        reason: &str,
    ) -> anyhow::Result<()> {
        let properties = with_attempts(attempts, Some(reason)).with_type(routing_key.into());
        self.publish_then_settle(&self.names.parked, &payload, properties)
            .await
    }
}

#[async_trait]
impl Source for RabbitSource {
    async fn next(&self) -> ReceivedEvent {
        let mut backoff = Duration::from_millis(100);
        let mut live = self.live.lock().await;
        loop {
            if live.is_none() {
                match self.connect().await {
                    Ok(opened) => {
                        *live = Some(opened);
                        self.connected.store(true, Ordering::SeqCst);
                        backoff = Duration::from_millis(100);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, retry_in = ?backoff, "cannot reach RabbitMQ");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let current = live.as_mut().expect("connected just above");
            if let Some(delivery) = current.pending.pop_front() {
                return delivery;
            }
            match current.consumer.next().await {
                Some(Ok(delivery)) => match self.events_of(delivery, &current.publisher).await {
                    Ok(mut events) => {
                        let first = events.pop_front();
                        current.pending = events;
                        if let Some(first) = first {
                            return first;
                        }
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the RabbitMQ connection; reconnecting");
                    }
                },
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "lost the RabbitMQ connection; reconnecting");
                }
                None => tracing::warn!("RabbitMQ ended the consumer; reconnecting"),
            }
            *live = None;
            self.connected.store(false, Ordering::SeqCst);
        }
    }

    async fn parked(&self, limit: usize) -> anyhow::Result<Vec<Parked>> {
        // Read without acknowledging, then close the channel: RabbitMQ puts every message
        // back, so listing leaves the parking queue as it was.
        let (connection, channel) = self.open().await?;
        let mut listed = Vec::new();
        while listed.len() < limit {
            let Some(message) = channel
                .basic_get(
                    self.names.parked.as_str().into(),
                    BasicGetOptions::default(),
                )
                .await?
            else {
                break;
            };
            let properties = &message.delivery.properties;
            listed.push(Parked {
                event_id: event_id_of(&message.delivery.data),
                routing_key: properties
                    .kind()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                attempts: attempts_of(properties),
                reason: reason_of(properties),
            });
        }
        let _ = connection.close(200, "listed".into()).await;
        Ok(listed)
    }

    async fn replay_parked(&self) -> anyhow::Result<usize> {
        let (connection, channel) = self.open().await?;
        let mut replayed = 0;
        let mut left: Option<u32> = None;
        while left != Some(0) {
            let Some(message) = channel
                .basic_get(
                    self.names.parked.as_str().into(),
                    BasicGetOptions::default(),
                )
                .await?
            else {
                break;
            };
            left = Some(left.unwrap_or(message.message_count + 1));
            let properties = with_attempts(0, None).with_type(
                message
                    .delivery
                    .properties
                    .kind()
                    .clone()
                    .unwrap_or_else(|| "".into()),
            );
            publish_confirmed(
                &channel,
                "",
                &self.names.queue,
                &message.delivery.data,
                properties,
            )
            .await?;
            message.delivery.ack(BasicAckOptions::default()).await?;
            replayed += 1;
            left = left.map(|n| n.saturating_sub(1));
        }
        let _ = connection.close(200, "replayed".into()).await;
        Ok(replayed)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}
