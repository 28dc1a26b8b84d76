//! Group commit of messages. Every `SendMessage` hands its message to one writer task,
//! which stores whatever is queued at that moment in a single transaction. At low load a
//! batch is one message and nothing waits; under load, one commit serves many senders,
//! which is what lets one core persist thousands of messages a second (and PostgreSQL
//! pay one WAL flush per batch instead of per message).

use crate::store::{ChatStore, Inserted, NewMessage, StoreError};
use platform::{
    batch::{self, GroupCommit},
    events::outbox::OutboxWaker,
};

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 256;

/// Hands messages to the writer task.
#[derive(Debug, Clone)]
pub struct MessageWriter {
    batches: GroupCommit<NewMessage, Result<Inserted, StoreError>>,
}

impl MessageWriter {
    /// Starts the writer task; it ends when the last `MessageWriter` is dropped.
    /// Wakes `outbox` after each commit that stored events (those of mentions): most
    /// commits store none, and a needless wake-up costs the relay a query.
    pub fn start(store: ChatStore, outbox: OutboxWaker) -> Self {
        let batches = GroupCommit::start(MAX_BATCH, move |messages| {
            write(store.clone(), outbox.clone(), messages)
        });
        Self { batches }
    }

    /// Stores a message (with its mentions' notifications and their events, and the
    /// attachments it claims) if its sender is a member and the attachments are theirs to
    /// claim.
    pub async fn insert(&self, message: NewMessage) -> Result<Inserted, StoreError> {
        self.batches
            .submit(message)
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::PoolClosed)))
    }
}

async fn write(
    store: ChatStore,
    outbox: OutboxWaker,
    messages: Vec<NewMessage>,
) -> Vec<Result<Inserted, StoreError>> {
    metrics::histogram!("chat_message_batch_size").record(messages.len() as f64);
    let (store, messages) = (&store, &messages);
    let outcomes = batch::each_alone_on_failure(
        messages.len(),
        "message",
        || store.insert_messages_mentioning(messages),
        |index| async move {
            store
                .insert_messages_mentioning(std::slice::from_ref(&messages[index]))
                .await
                .map(|mut stored| stored.pop().unwrap_or(Inserted::NotMember))
        },
    )
    .await;
    let notified = outcomes.iter().any(|outcome| {
        matches!(outcome, Ok(Inserted::Stored { notifications, .. }) if !notifications.is_empty())
    });
    if notified {
        outbox.wake();
    }
    outcomes
}
