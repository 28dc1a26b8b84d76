//! Group commit of messages. Every `SendMessage` hands its message to one writer task,
//! which stores whatever is queued at that moment in a single transaction. At low load a
//! batch is one message and nothing waits; under load, one commit serves many senders,
//! which is what lets one core persist thousands of messages a second (and PostgreSQL
//! pay one WAL flush per batch instead of per message).

use crate::store::{ChatStore, NewMessage, StoreError};
use platform::events::outbox::OutboxWaker;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 256;
/// Messages waiting for the writer before senders wait for room in the queue.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// Hands messages to the writer task.
#[derive(Debug, Clone)]
pub struct MessageWriter {
    queue: mpsc::Sender<(NewMessage, Reply)>,
}

impl MessageWriter {
    /// Starts the writer task; it ends when the last `MessageWriter` is dropped.
    /// Wakes `outbox` after each commit that stored messages (and so their events).
    pub fn start(store: Arc<dyn ChatStore>, outbox: OutboxWaker) -> Self {
        let (queue, batches) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, outbox, batches));
        Self { queue }
    }

    /// Stores a message with its event if its sender is a member; false when not.
    pub async fn insert(&self, message: NewMessage) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        self.queue
            .send((message, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write(
    store: Arc<dyn ChatStore>,
    outbox: OutboxWaker,
    mut queue: mpsc::Receiver<(NewMessage, Reply)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.drain(..).unzip();
        metrics::histogram!("chat_message_batch_size").record(messages.len() as f64);
        match store.insert_messages(&messages).await {
            Ok(stored) => {
                outbox.wake();
                for (reply, stored) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(stored));
                }
            }
            // The batch failed as a whole: store each alone, so one message's failure
            // is its own and every sender gets an answer of its own.
            Err(error) => {
                tracing::warn!(%error, size = messages.len(), "message batch failed; storing one by one");
                for (message, reply) in messages.iter().zip(replies) {
                    let _ = reply.send(store.insert_message(message).await);
                }
                outbox.wake();
            }
        }
    }
}
