//! The in-process source of the embedded run: a queue of the in-process bus, with retries
//! on timers and a parking list in memory. Like the bus itself it lives and dies with the
//! process: what it holds when the process dies is lost, since the producers' outboxes
//! let go of an event once the bus has it (the embedded run is a development tool; the
//! README's "Three ways to run" says so to its users).

use super::{BINDINGS, Delivery, Parked, Settle, Source, event_id_of};
use async_trait::async_trait;
use platform::events::{InProcessBus, Published};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::mpsc;

/// Events the bus may hold for the listener before publishers wait.
const CAPACITY: usize = 10_000;

struct Item {
    payload: Vec<u8>,
    routing_key: String,
    attempts: u32,
}

struct ParkedItem {
    item: Item,
    reason: String,
}

struct Shared {
    again: mpsc::UnboundedSender<Item>,
    parked: Mutex<Vec<ParkedItem>>,
}

/// The listener's queue on the in-process bus.
pub struct MemorySource {
    incoming: tokio::sync::Mutex<(mpsc::Receiver<Published>, mpsc::UnboundedReceiver<Item>)>,
    shared: Arc<Shared>,
}

impl MemorySource {
    /// Binds the listener's queue; bind before producers start publishing.
    pub fn bind(bus: &InProcessBus) -> Self {
        let (again, retries) = mpsc::unbounded_channel();
        Self {
            incoming: tokio::sync::Mutex::new((bus.bind(BINDINGS, CAPACITY), retries)),
            shared: Arc::new(Shared {
                again,
                parked: Mutex::new(Vec::new()),
            }),
        }
    }

    fn parked_list(&self) -> std::sync::MutexGuard<'_, Vec<ParkedItem>> {
        self.shared
            .parked
            .lock()
            .expect("the parked list lock is never held across a panic")
    }
}

struct MemorySettle(Arc<Shared>);

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }

    async fn retry(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        delay: Duration,
    ) -> anyhow::Result<()> {
        let again = self.0.again.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = again.send(Item {
                payload,
                routing_key,
                attempts,
            });
        });
        Ok(())
    }

    async fn park(
        self: Box<Self>,
        payload: Vec<u8>,
        routing_key: String,
        attempts: u32,
        reason: &str,
    ) -> anyhow::Result<()> {
        self.0
            .parked
            .lock()
            .expect("the parked list lock is never held across a panic")
            .push(ParkedItem {
                item: Item {
                    payload,
                    routing_key,
                    attempts,
                },
                reason: reason.to_owned(),
            });
        Ok(())
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn next(&self) -> Delivery {
        let mut incoming = self.incoming.lock().await;
        let (bus, retries) = &mut *incoming;
        let item = tokio::select! {
            Some(item) = retries.recv() => item,
            Some(event) = bus.recv() => Item {
                payload: event.payload,
                routing_key: event.routing_key,
                attempts: 0,
            },
            // Both ends are held by this source and the bus: neither closes while it runs.
            else => std::future::pending().await,
        };
        Delivery::new(
            item.payload,
            item.routing_key,
            item.attempts,
            Box::new(MemorySettle(Arc::clone(&self.shared))),
        )
    }

    async fn parked(&self, limit: usize) -> anyhow::Result<Vec<Parked>> {
        Ok(self
            .parked_list()
            .iter()
            .take(limit)
            .map(|parked| Parked {
                event_id: event_id_of(&parked.item.payload),
                routing_key: parked.item.routing_key.clone(),
                attempts: parked.item.attempts,
                reason: parked.reason.clone(),
            })
            .collect())
    }

    async fn replay_parked(&self) -> anyhow::Result<usize> {
        let parked = std::mem::take(&mut *self.parked_list());
        let count = parked.len();
        for ParkedItem { mut item, .. } in parked {
            item.attempts = 0;
            let _ = self.shared.again.send(item);
        }
        Ok(count)
    }

    fn is_connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::events::EventBus;

    fn published(key: &str) -> Published {
        Published {
            event_id: uuid::Uuid::now_v7(),
            routing_key: key.into(),
            payload: key.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn retried_events_come_back_and_parked_ones_wait_for_a_replay() {
        let bus = InProcessBus::default();
        let source = MemorySource::bind(&bus);
        bus.publish(&[published("user.registered"), published("message.sent")])
            .await
            .expect("the queue has room");
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
