//! The embedded run's source: the listener's queue on the durable embedded bus
//! ([`platform::events::embedded`], SQLite in the data directory), with the RabbitMQ
//! source's semantics: an ack deletes the event, a retry waits in the queue until its due
//! time, parking keeps it with the reason until an operator replays it. All of it is on
//! disk, so a crash or a stop loses nothing: what this process held unsettled is
//! delivered again on the next start, and the processed-events table (with the logger's
//! one entry per event id) makes the redelivery change nothing.

use super::{BINDINGS, Parked, ReceivedEvent, Settle, Source};
use async_trait::async_trait;
use platform::{
    batch::GroupCommit,
    events::{
        EmbeddedBus,
        embedded::{Claimed, EmbeddedQueue},
    },
};
use std::{collections::VecDeque, time::Duration};

/// Longest wait for new events without being woken (a safety net: publications, retries
/// and replays wake the source themselves).
const POLL: Duration = Duration::from_secs(1);
/// Longest pause after a failure to read the queue.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listener's queue on the embedded bus.
pub struct EmbeddedSource {
    queue: EmbeddedQueue,
    /// Claimed and not handed out yet.
    claimed: tokio::sync::Mutex<VecDeque<Claimed>>,
    /// The acks of the events settled at the same time go in one statement.
    acks: GroupCommit<i64, Result<(), String>>,
    /// Most events claimed at once.
    batch: usize,
}

impl EmbeddedSource {
    /// Binds the listener's queue `name` on `bus`, taking over what an earlier run left
    /// unsettled; up to `prefetch` events are claimed at once.
    pub async fn bind(bus: &EmbeddedBus, name: &str, prefetch: u16) -> anyhow::Result<Self> {
        let queue = bus.bind(name, BINDINGS).await?;
        let acking = queue.clone();
        let acks = GroupCommit::start(usize::from(prefetch), move |seqs: Vec<i64>| {
            let queue = acking.clone();
            async move {
                let outcome = queue.ack(&seqs).await.map_err(|error| error.to_string());
                vec![outcome; seqs.len()]
            }
        });
        Ok(Self {
            queue,
            claimed: tokio::sync::Mutex::new(VecDeque::new()),
            acks,
            batch: usize::from(prefetch),
        })
    }

    fn delivery(&self, event: Claimed) -> ReceivedEvent {
        let settle = EmbeddedSettle {
            seq: event.seq,
            queue: self.queue.clone(),
            acks: self.acks.clone(),
        };
        ReceivedEvent::new(
            event.payload,
            event.routing_key,
            event.attempts,
            Box::new(settle),
        )
    }
}

struct EmbeddedSettle {
    seq: i64,
    queue: EmbeddedQueue,
    acks: GroupCommit<i64, Result<(), String>>,
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        match self.acks.submit(self.seq).await {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => anyhow::bail!("acknowledging the event: {error}"),
            None => anyhow::bail!("the acknowledging task stopped"),
        }
    }

    async fn retry(
        self: Box<Self>,
        _payload: Vec<u8>,
        _routing_key: String,
        attempts: u32,
        delay: Duration,
    ) -> anyhow::Result<()> {
        Ok(self.queue.retry(self.seq, attempts, delay).await?)
    }

    async fn park(
        self: Box<Self>,
        _payload: Vec<u8>,
        _routing_key: String,
        attempts: u32,
        reason: &str,
    ) -> anyhow::Result<()> {
        Ok(self.queue.park(self.seq, attempts, reason).await?)
    }
}

#[async_trait]
impl Source for EmbeddedSource {
    async fn next(&self) -> ReceivedEvent {
        let mut claimed = self.claimed.lock().await;
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(event) = claimed.pop_front() {
                return self.delivery(event);
            }
            match self.queue.claim(self.batch).await {
                Ok(events) if events.is_empty() => self.queue.wait(POLL).await,
                Ok(events) => {
                    backoff = Duration::from_millis(100);
                    claimed.extend(events);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot read the event queue");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn parked(&self, limit: usize) -> anyhow::Result<Vec<Parked>> {
        Ok(self
            .queue
            .parked(limit)
            .await?
            .into_iter()
            .map(|parked| Parked {
                event_id: parked.event_id.to_string(),
                routing_key: parked.routing_key,
                attempts: parked.attempts,
                reason: parked.reason,
            })
            .collect())
    }

    async fn replay_parked(&self) -> anyhow::Result<usize> {
        let replayed = self.queue.replay_parked().await?;
        Ok(usize::try_from(replayed).unwrap_or(usize::MAX))
    }

    fn is_connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::{
        events::{EventBus, Published},
        testing::TestDatabase,
    };

    fn published(key: &str) -> Published {
        Published {
            event_id: uuid::Uuid::now_v7(),
            routing_key: key.into(),
            payload: key.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn retried_events_come_back_and_parked_ones_wait_for_a_replay() {
        let database = TestDatabase::sqlite("events");
        let bus = EmbeddedBus::open(database.url())
            .await
            .expect("the bus opens");
        let source = EmbeddedSource::bind(&bus, "listener", 8)
            .await
            .expect("the queue binds");
        bus.publish(&[published("user.registered"), published("message.sent")])
            .await
            .expect("the bus takes them");
        let first = source.next().await;
        assert_eq!(
            (first.routing_key.as_str(), first.attempts),
            ("user.registered", 0)
        );
        first
            .retry(1, Duration::from_millis(10))
            .await
            .expect("retry");
        let second = source.next().await;
        assert_eq!(second.routing_key, "message.sent");
        second.park(3, "gave up").await.expect("park");
        let again = source.next().await;
        assert_eq!(
            (again.routing_key.as_str(), again.attempts),
            ("user.registered", 1)
        );
        again.ack().await.expect("ack");

        let parked = source.parked(10).await.expect("listing works");
        assert_eq!(parked.len(), 1);
        assert_eq!(
            (
                parked[0].routing_key.as_str(),
                parked[0].attempts,
                parked[0].reason.as_str()
            ),
            ("message.sent", 3, "gave up")
        );
        assert_eq!(
            source.parked(10).await.expect("listing works").len(),
            1,
            "listing keeps them"
        );
        assert_eq!(source.replay_parked().await.expect("replay"), 1);
        let replayed = source.next().await;
        assert_eq!(
            (replayed.routing_key.as_str(), replayed.attempts),
            ("message.sent", 0)
        );
        assert!(source.parked(10).await.expect("listing works").is_empty());
    }
}
