//! The [`EventBus`] port and its in-process adapter.

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// An event handed to a bus: what the outbox holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event id (UUIDv7), also the AMQP message id.
    pub event_id: uuid::Uuid,
    /// The routing key.
    pub routing_key: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
}

/// Why a bus did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached now; try again later.
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    /// The bus refused the events (a nack): try again later.
    #[error("the event bus refused the events: {0}")]
    Refused(String),
}

/// Where published events go.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes a batch, in order. `Ok` only once the bus holds every event durably
    /// (publisher confirms); on `Err` any of them may or may not have been published, and
    /// the caller publishes the whole batch again (consumers de-duplicate by event id).
    async fn publish(&self, events: &[Published]) -> Result<(), BusError>;
}

/// AMQP topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| matches(rest, &key[skip..])),
            Some((&word, rest)) => key.split_first().is_some_and(|(&first, tail)| {
                (word == "*" || word == first) && matches(rest, tail)
            }),
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches(&pattern, &key)
}

struct Queue {
    patterns: Vec<String>,
    sender: mpsc::Sender<Published>,
}

/// The bus of the embedded all-in-one: named in-memory queues bound by routing-key
/// patterns, like RabbitMQ queues bound to a topic exchange. Publishing waits while a
/// bound queue is full (back-pressure on the relay, never a dropped event); an event no
/// queue is bound to is dropped, as an exchange drops unroutable messages, so consumers
/// bind before producers start.
#[derive(Clone, Default)]
pub struct InProcessBus {
    queues: Arc<Mutex<Vec<Queue>>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus").finish_non_exhaustive()
    }
}

impl InProcessBus {
    /// A queue holding up to `capacity` events, receiving every event whose routing key
    /// matches one of `patterns`.
    pub fn bind(&self, patterns: &[&str], capacity: usize) -> mpsc::Receiver<Published> {
        let (sender, receiver) = mpsc::channel(capacity);
        self.queues
            .lock()
            .expect("the queue list lock is never held across a panic")
            .push(Queue {
                patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
                sender,
            });
        receiver
    }

    fn senders_for(&self, key: &str) -> Vec<mpsc::Sender<Published>> {
        let mut queues = self
            .queues
            .lock()
            .expect("the queue list lock is never held across a panic");
        queues.retain(|queue| !queue.sender.is_closed());
        queues
            .iter()
            .filter(|queue| queue.patterns.iter().any(|p| topic_matches(p, key)))
            .map(|queue| queue.sender.clone())
            .collect()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        for event in events {
            for sender in self.senders_for(&event.routing_key) {
                sender
                    .send(event.clone())
                    .await
                    .map_err(|_| BusError::Unavailable("the consumer has stopped".into()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("user.registered", "user.registered"));
        assert!(topic_matches("user.*", "user.logged_in"));
        assert!(!topic_matches("user.*", "user"));
        assert!(!topic_matches("user.*", "message.sent"));
        assert!(topic_matches("#", "message.sent"));
        assert!(topic_matches("user.#", "user"));
        assert!(topic_matches("#.sent", "message.sent"));
        assert!(topic_matches("*.*", "a.b"));
        assert!(!topic_matches("*.*", "a.b.c"));
        assert!(topic_matches("a.#.c", "a.b.x.c"));
    }

    fn event(key: &str) -> Published {
        Published {
            event_id: uuid::Uuid::now_v7(),
            routing_key: key.into(),
            payload: key.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn events_reach_every_queue_bound_to_their_key() {
        let bus = InProcessBus::default();
        let mut users = bus.bind(&["user.*"], 8);
        let mut all = bus.bind(&["#"], 8);
        let batch = [event("user.registered"), event("message.sent")];
        bus.publish(&batch).await.expect("bound queues have room");
        assert_eq!(users.recv().await, Some(batch[0].clone()));
        assert!(
            users.try_recv().is_err(),
            "message.sent is not a user event"
        );
        assert_eq!(all.recv().await, Some(batch[0].clone()));
        assert_eq!(all.recv().await, Some(batch[1].clone()));
    }

    #[tokio::test]
    async fn a_dropped_consumer_is_forgotten() {
        let bus = InProcessBus::default();
        drop(bus.bind(&["#"], 1));
        bus.publish(&[event("user.deleted")])
            .await
            .expect("nobody is bound: dropped like an unroutable message");
    }
}
