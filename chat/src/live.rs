//! The live channel: events that sockets should see now (messages, receipts, typing,
//! presence, membership), published right after the state change commits and fanned
//! out to every subscribed broker. Best-effort by design: history is the truth, and a
//! subscriber that falls behind is told to resync rather than slowing anyone down.

use proto::chat::v1::{LiveEvent, live_event::Event};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events buffered per subscriber before it counts as fallen behind.
const CAPACITY: usize = 64 * 1024;

/// Publishes live events to every subscriber.
#[derive(Debug, Clone)]
pub struct LiveHub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl LiveHub {
    /// Publishes one event; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        metrics::counter!("chat_live_events_total").increment(1);
        let _ = self.sender.send(Arc::new(LiveEvent { event: Some(event) }));
    }

    /// A new subscription, starting with the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }
}
