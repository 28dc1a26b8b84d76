//! The live channel: events that sockets should see now (messages, receipts, typing,
//! presence, membership), published right after the state change commits and fanned
//! out to every subscribed broker. Best-effort by design: history is the truth, and a
//! subscriber that falls behind is told to resync rather than slowing anyone down.
//!
//! One chat instance serves its own subscribers from memory. Several instances (the
//! cluster) share their live events over RabbitMQ ([`LiveHub::fan_out`]): each publishes
//! to the fanout exchange `microchat.live` and feeds its subscribers from its own
//! exclusive queue bound to it, so every broker sees every event exactly once whichever
//! instance it follows and whichever instance took the call. While RabbitMQ is away an
//! instance falls back to serving its own events, and its brokers are told to resync
//! when the link breaks and when it is back.
//!
//! The core publishes [`LiveEvent`]s, plain chat types; the hub maps each to its wire
//! form once, as it publishes it, and from then on carries that one shared copy: to the
//! gRPC streams of this instance, and encoded to RabbitMQ for the others.

use crate::{domain::LiveEvent, wire};
use futures::StreamExt;
use lapin::{
    BasicProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use platform::shutdown::Shutdown;
use prost::Message as _;
use proto::chat::v1 as pb;
use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::{broadcast, mpsc};

/// Events buffered per subscriber before it counts as fallen behind.
const CAPACITY: usize = 64 * 1024;

/// Events waiting to be published to the other instances.
const OUTGOING: usize = 64 * 1024;

/// Events one instance's queue holds before RabbitMQ drops the oldest (an instance that
/// cannot keep up loses old live events, never RabbitMQ's memory).
const QUEUE_LIMIT: i64 = 100_000;

/// The default fanout exchange of live events.
pub const DEFAULT_EXCHANGE: &str = "microchat.live";

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes live events to every subscriber.
#[derive(Debug, Clone)]
pub struct LiveHub {
    local: broadcast::Sender<Arc<pb::LiveEvent>>,
    /// Set once, when the instance starts sharing its events (shared by every clone).
    fanout: Arc<OnceLock<Fanout>>,
}

#[derive(Debug, Clone)]
struct Fanout {
    outgoing: mpsc::Sender<Arc<pb::LiveEvent>>,
    /// Whether events currently go through RabbitMQ (publishing and consuming).
    linked: Arc<AtomicBool>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            local: broadcast::channel(CAPACITY).0,
            fanout: Arc::default(),
        }
    }
}

impl LiveHub {
    /// Publishes one event; nobody listening is fine.
    pub fn publish(&self, event: LiveEvent) {
        metrics::counter!("chat_live_events_total").increment(1);
        // Mapped to the wire once, here: every subscriber shares this copy.
        let event = Arc::new(pb::LiveEvent::from(event));
        if let Some(fanout) = self.fanout.get()
            && fanout.linked.load(Ordering::Acquire)
        {
            match fanout.outgoing.try_send(event) {
                Ok(()) => return,
                Err(refused) => {
                    // Others miss it; this instance's own brokers still get it.
                    metrics::counter!("chat_live_fanout_dropped_total").increment(1);
                    let _ = self.local.send(refused.into_inner());
                    return;
                }
            }
        }
        let _ = self.local.send(event);
    }

    /// A new subscription, starting with the next event, in its wire form.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<pb::LiveEvent>> {
        self.local.subscribe()
    }

    /// Shares live events with every other instance over RabbitMQ at `url`, through the
    /// fanout `exchange`, until `shutdown`; the link is kept up by a background task
    /// (reconnecting with backoff). A second call changes nothing.
    pub fn fan_out(&self, url: String, exchange: String, shutdown: Shutdown) {
        let (outgoing, receiver) = mpsc::channel(OUTGOING);
        let linked = Arc::new(AtomicBool::new(false));
        let fanout = Fanout {
            outgoing,
            linked: linked.clone(),
        };
        if self.fanout.set(fanout).is_err() {
            return;
        }
        let link = Link {
            url,
            exchange,
            local: self.local.clone(),
            linked,
        };
        tokio::spawn(link.run(receiver, shutdown));
    }
}

/// The RabbitMQ side of a fanned-out hub.
struct Link {
    url: String,
    exchange: String,
    local: broadcast::Sender<Arc<pb::LiveEvent>>,
    linked: Arc<AtomicBool>,
}

impl Link {
    async fn run(self, mut outgoing: mpsc::Receiver<Arc<pb::LiveEvent>>, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.linked_until_broken(&mut outgoing, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        retry_in = ?backoff,
                        "live fan-out: RabbitMQ link down, serving local events only"
                    );
                }
            }
            self.unlink(&mut outgoing);
            if !platform::shutdown::pause(&shutdown, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Stops routing through RabbitMQ: what was waiting to go out is served locally, and
    /// brokers are told they may have missed events of other instances.
    fn unlink(&self, outgoing: &mut mpsc::Receiver<Arc<pb::LiveEvent>>) {
        let was_linked = self.linked.swap(false, Ordering::AcqRel);
        while let Ok(event) = outgoing.try_recv() {
            let _ = self.local.send(event);
        }
        if was_linked {
            metrics::gauge!("chat_live_fanout_linked").set(0.0);
            self.resync();
        }
    }

    fn resync(&self) {
        let _ = self.local.send(Arc::new(wire::resync()));
    }

    /// Connects, then relays both ways until the link breaks (an error) or shutdown.
    async fn linked_until_broken(
        &self,
        outgoing: &mut mpsc::Receiver<Arc<pb::LiveEvent>>,
        shutdown: &Shutdown,
    ) -> Result<(), lapin::Error> {
        let connection = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            connected = platform::events::rabbit::connect(
                &self.url,
                "microchat chat live fan-out",
            ) => connected?,
        };
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(QUEUE_LIMIT));
        // Server-named, gone with this connection: one per instance and lifetime.
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel.basic_qos(1024, BasicQosOptions::default()).await?;
        let mut incoming = channel
            .basic_consume(
                queue.name().as_str().into(),
                "chat-live".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.linked.store(true, Ordering::Release);
        metrics::gauge!("chat_live_fanout_linked").set(1.0);
        tracing::info!(
            exchange = %self.exchange,
            queue = %queue.name(),
            "live fan-out: linked to the other chat instances"
        );
        // While unlinked, events of other instances never reached our brokers.
        self.resync();
        let properties =
            BasicProperties::default().with_content_type("application/x-protobuf".into());
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = connection.close(200, "shutting down".into()).await;
                    return Ok(());
                }
                taken = outgoing.recv_many(&mut batch, 256) => {
                    if taken == 0 {
                        return Ok(());
                    }
                    for event in batch.drain(..) {
                        // Not in confirm mode: this resolves as soon as the frame is sent.
                        channel
                            .basic_publish(
                                self.exchange.as_str().into(),
                                "".into(),
                                BasicPublishOptions::default(),
                                &event.encode_to_vec(),
                                properties.clone(),
                            )
                            .await?;
                    }
                }
                delivery = incoming.next() => match delivery {
                    Some(Ok(delivery)) => match pb::LiveEvent::decode(delivery.data.as_slice()) {
                        Ok(event) => {
                            let _ = self.local.send(Arc::new(event));
                        }
                        Err(error) => {
                            metrics::counter!("chat_live_fanout_bad_total").increment(1);
                            tracing::warn!(%error, "live fan-out: undecodable event dropped");
                        }
                    },
                    Some(Err(error)) => return Err(error),
                    None => {
                        return Err(lapin::Error::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the live consumer was cancelled",
                        )));
                    }
                },
            }
        }
    }
}
