//! The [`EventBus`] port; its adapters are [`super::rabbit`] and [`super::embedded`].

use async_trait::async_trait;

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
}
