//! The embedded run's durable event bus: named queues bound by routing-key patterns, like
//! RabbitMQ queues bound to a topic exchange, kept in one SQLite database
//! (`<data dir>/events.db`). It gives the all-in-one the promise of the RabbitMQ path:
//!
//! - [`EventBus::publish`] returns only once the events are committed with
//!   `synchronous=FULL` (on disk, as a publisher confirm means), so the relay deletes its
//!   outbox rows only after that; a relay that publishes a batch again after a crash adds
//!   nothing for events still queued (one row per queue and event id);
//! - a consumer [claims](EmbeddedQueue::claim) due events and settles each one: an ack
//!   deletes it, a retry gives it a later due time, parking keeps it with the reason until
//!   an operator replays it. All three are rows, so they survive a crash or a restart;
//! - what a consumer had claimed and not settled when its process died is delivered again
//!   on the next start: each bind raises the queue's epoch, and only rows claimed by the
//!   current epoch are held. Delivery is at least once; consumers de-duplicate by event id.
//!
//! Why a queue of its own instead of keeping outbox rows until the listener settles their
//! event: the relay would then wait for the slowest handler (a mail retried for minutes)
//! before it could move on, and every producer's database would carry the consumer's
//! retry and parking state. Here the producers' outboxes drain as fast as the bus commits,
//! whatever the listener is doing (docs/RELIABILITY.md).

use super::{BusError, EventBus, Published, topic_matches};
use async_trait::async_trait;
use sqlx::SqlitePool;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio::sync::Notify;
use uuid::Uuid;

/// The schema of `events.db`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/embedded_bus");

/// Rows per multi-row insert: 5 parameters each, well under SQLite's 32,766.
const ROWS_PER_INSERT: usize = 1_000;

/// A queue's bindings and the signal that wakes its consumer.
#[derive(Debug, Default)]
struct Binding {
    patterns: Vec<String>,
    /// Woken after events for the queue are committed, a retry is scheduled or parked
    /// events are replayed.
    wake: Arc<Notify>,
}

/// The embedded durable bus; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    pool: SqlitePool,
    bindings: Arc<RwLock<HashMap<String, Binding>>>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus").finish_non_exhaustive()
    }
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl EmbeddedBus {
    /// Opens (creating if missing) the bus database at `url` (`sqlite://…`), applies its
    /// schema and loads the bindings earlier runs declared. A file that is not a sound
    /// SQLite database is an error naming it, and is left as it is.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = crate::sql::connect_sqlite_durable(url)
            .await
            .map_err(|error| crate::sql::naming(url, error))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|error| crate::sql::naming(url, error))?;
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT queue, pattern FROM bindings ORDER BY queue, pattern")
                .fetch_all(&pool)
                .await?;
        let mut bindings: HashMap<String, Binding> = HashMap::new();
        for (queue, pattern) in stored {
            bindings.entry(queue).or_default().patterns.push(pattern);
        }
        Ok(Self {
            pool,
            bindings: Arc::new(RwLock::new(bindings)),
        })
    }

    /// Declares `queue` with exactly these `patterns` (replacing earlier ones) and starts
    /// a new consumer epoch for it: whatever an earlier consumer had claimed is free again.
    /// One consumer per queue.
    pub async fn bind(&self, queue: &str, patterns: &[&str]) -> Result<EmbeddedQueue, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bindings WHERE queue = $1")
            .bind(queue)
            .execute(&mut *tx)
            .await?;
        for pattern in patterns {
            sqlx::query("INSERT INTO bindings (queue, pattern) VALUES ($1, $2)")
                .bind(queue)
                .bind(*pattern)
                .execute(&mut *tx)
                .await?;
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO consumers (queue, epoch) VALUES ($1, 1) \
             ON CONFLICT (queue) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
        )
        .bind(queue)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let wake = {
            let mut bindings = self.write_bindings();
            let binding = bindings.entry(queue.to_owned()).or_default();
            binding.patterns = patterns.iter().map(|p| (*p).to_owned()).collect();
            Arc::clone(&binding.wake)
        };
        // Events may already wait (a restart): the consumer looks at once.
        wake.notify_one();
        Ok(EmbeddedQueue {
            pool: self.pool.clone(),
            name: Arc::from(queue),
            epoch,
            wake,
        })
    }

    fn write_bindings(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Binding>> {
        self.bindings
            .write()
            .expect("the bindings lock is never held across a panic")
    }

    /// The queues each event goes to, and the signals of those queues; `None` while no
    /// queue is declared.
    fn route<'e>(&self, events: &'e [Published]) -> Option<Routed<'e>> {
        let bindings = self
            .bindings
            .read()
            .expect("the bindings lock is never held across a panic");
        if bindings.is_empty() {
            return None;
        }
        let mut rows = Vec::new();
        let mut woken = Vec::new();
        for (queue, binding) in bindings.iter() {
            let before = rows.len();
            rows.extend(
                events
                    .iter()
                    .filter(|event| {
                        binding
                            .patterns
                            .iter()
                            .any(|p| topic_matches(p, &event.routing_key))
                    })
                    .map(|event| (queue.clone(), event)),
            );
            if rows.len() > before {
                woken.push(Arc::clone(&binding.wake));
            }
        }
        Some((rows, woken))
    }
}

/// Each event with a queue it goes to, and the signals of those queues.
type Routed<'e> = (Vec<(String, &'e Published)>, Vec<Arc<Notify>>);

#[async_trait]
impl EventBus for EmbeddedBus {
    /// Commits every event into each queue bound to its routing key, in one transaction.
    /// With no queue declared yet, nothing is taken: the events wait in the outbox (as
    /// RabbitMQ's alternate queue keeps them) until a consumer binds. An event no declared
    /// queue is bound to is dropped, as an exchange drops an unroutable message.
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let Some((rows, woken)) = self.route(events) else {
            return Err(BusError::Unavailable("no queue is bound yet".into()));
        };
        if rows.is_empty() {
            // Nothing to commit: no sync for events no queue takes.
            return Ok(());
        }
        let due_at = now_ms();
        let unavailable = |error: sqlx::Error| BusError::Unavailable(error.to_string());
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO queued (queue, event_id, routing_key, payload, due_at) ",
            );
            insert.push_values(chunk, |mut row, (queue, event)| {
                row.push_bind(queue.as_str())
                    .push_bind(event.event_id)
                    .push_bind(event.routing_key.as_str())
                    .push_bind(event.payload.as_slice())
                    .push_bind(due_at);
            });
            insert.push(" ON CONFLICT (queue, event_id) DO NOTHING");
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        for wake in woken {
            wake.notify_one();
        }
        Ok(())
    }
}

/// An event a consumer holds until it settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The row, to settle it by.
    pub seq: i64,
    /// The event id.
    pub event_id: Uuid,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// How many times it was handled before.
    pub attempts: u32,
}

/// A parked event, as an operator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    /// The event id.
    pub event_id: Uuid,
    /// The routing key.
    pub routing_key: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was parked.
    pub reason: String,
}

/// One queue of the embedded bus, as its consumer sees it; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueue {
    pool: SqlitePool,
    name: Arc<str>,
    epoch: i64,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Clamps a stored attempt count into `u32`.
fn attempts_of(stored: i64) -> u32 {
    u32::try_from(stored.max(0)).unwrap_or(u32::MAX)
}

impl EmbeddedQueue {
    /// Claims up to `limit` due events, oldest due first.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let mut rows: Vec<(i64, Uuid, String, Vec<u8>, i64, i64)> = sqlx::query_as(
            "UPDATE queued SET claimed_by = $1 WHERE seq IN ( \
                 SELECT seq FROM queued \
                 WHERE queue = $2 AND parked_at IS NULL AND due_at <= $3 AND claimed_by <> $1 \
                 ORDER BY due_at, seq LIMIT $4) \
             RETURNING seq, event_id, routing_key, payload, attempts, due_at",
        )
        .bind(self.epoch)
        .bind(&*self.name)
        .bind(now_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        // RETURNING gives no order.
        rows.sort_unstable_by_key(|row| (row.5, row.0));
        Ok(rows
            .into_iter()
            .map(
                |(seq, event_id, routing_key, payload, attempts, _)| Claimed {
                    seq,
                    event_id,
                    routing_key,
                    payload,
                    attempts: attempts_of(attempts),
                },
            )
            .collect())
    }

    /// Waits until events may be due: woken by a publication, a retry or a replay, at the
    /// earliest due time of the events waiting, or after `at_most`.
    pub async fn wait(&self, at_most: Duration) {
        let next_due: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT MIN(due_at) FROM queued \
             WHERE queue = $1 AND parked_at IS NULL AND claimed_by <> $2",
        )
        .bind(&*self.name)
        .bind(self.epoch)
        .fetch_one(&self.pool)
        .await;
        let wait = match next_due {
            Ok(Some(due)) => {
                let until = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(until).min(at_most)
            }
            _ => at_most,
        };
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// Settles these events as done: they leave the queue.
    pub async fn ack(&self, seqs: &[i64]) -> Result<(), sqlx::Error> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut delete = sqlx::QueryBuilder::new("DELETE FROM queued WHERE seq IN (");
        let mut list = delete.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        delete.push(")");
        delete.build().execute(&self.pool).await.map(drop)
    }

    /// Hands the event back, to be delivered again after `delay` with `attempts` counted.
    pub async fn retry(&self, seq: i64, attempts: u32, delay: Duration) -> Result<(), sqlx::Error> {
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        sqlx::query("UPDATE queued SET attempts = $1, due_at = $2, claimed_by = 0 WHERE seq = $3")
            .bind(i64::from(attempts))
            .bind(now_ms().saturating_add(delay))
            .bind(seq)
            .execute(&self.pool)
            .await?;
        // The consumer may be asleep until a later due time.
        self.wake.notify_one();
        Ok(())
    }

    /// Parks the event with the reason (at most 1,000 characters kept).
    pub async fn park(&self, seq: i64, attempts: u32, reason: &str) -> Result<(), sqlx::Error> {
        let reason: String = reason.chars().take(1000).collect();
        sqlx::query(
            "UPDATE queued SET attempts = $1, parked_at = $2, park_reason = $3, claimed_by = 0 \
             WHERE seq = $4",
        )
        .bind(i64::from(attempts))
        .bind(now_ms())
        .bind(reason)
        .bind(seq)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Up to `limit` parked events, parked first listed first; they stay parked.
    pub async fn parked(&self, limit: usize) -> Result<Vec<ParkedEvent>, sqlx::Error> {
        let rows: Vec<(Uuid, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT event_id, routing_key, attempts, park_reason FROM queued \
             WHERE queue = $1 AND parked_at IS NOT NULL ORDER BY parked_at, seq LIMIT $2",
        )
        .bind(&*self.name)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(event_id, routing_key, attempts, reason)| ParkedEvent {
                event_id,
                routing_key,
                attempts: attempts_of(attempts),
                reason: reason.unwrap_or_default(),
            })
            .collect())
    }

    /// Puts every parked event back in the queue, attempts reset, due now; returns how many.
    pub async fn replay_parked(&self) -> Result<u64, sqlx::Error> {
        let replayed = sqlx::query(
            "UPDATE queued SET parked_at = NULL, park_reason = NULL, attempts = 0, \
                 due_at = $1, claimed_by = 0 \
             WHERE queue = $2 AND parked_at IS NOT NULL",
        )
        .bind(now_ms())
        .bind(&*self.name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if replayed > 0 {
            self.wake.notify_one();
        }
        Ok(replayed)
    }

    /// Events in the queue (due or not, claimed or not), and how many of them are parked.
    pub async fn depth(&self) -> Result<(u64, u64), sqlx::Error> {
        let (all, parked): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(parked_at) FROM queued WHERE queue = $1")
                .bind(&*self.name)
                .fetch_one(&self.pool)
                .await?;
        Ok((
            u64::try_from(all).unwrap_or(0),
            u64::try_from(parked).unwrap_or(0),
        ))
    }
}
