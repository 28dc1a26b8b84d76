//! The transactional outbox: producers insert each event in the transaction of its state
//! change, and the [`Relay`] moves committed rows to the [`EventBus`], deleting them only
//! after the bus confirmed them. Every producer's database has the same `outbox` table,
//! created by the one migration in `platform/migrations/` that [`with_migration`] adds to
//! the producer's own:
//!
//! ```sql
//! outbox (seq <auto-increment> PRIMARY KEY, event_id UUID UNIQUE, routing_key TEXT,
//!         payload BYTES, created_at TIMESTAMP)
//! ```

use super::{EventBus, Published, envelope::Event};
use crate::{
    shutdown::Shutdown,
    sql::{Backend, Pool},
};
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Type};
use std::{borrow::Cow, sync::Arc, time::Duration};
use tokio::sync::Notify;
use uuid::Uuid;

/// Most events published in one confirmed batch.
const BATCH: u32 = 512;
/// How often the relay looks for rows without being woken (rows of other replicas,
/// rows left by a crash).
const POLL: Duration = Duration::from_secs(1);
/// Longest pause after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The outbox table's migration, for PostgreSQL and for SQLite.
const MIGRATION_POSTGRES: &str = include_str!("../../migrations/postgres/outbox.sql");
const MIGRATION_SQLITE: &str = include_str!("../../migrations/sqlite/outbox.sql");

/// `migrator` (a producer's own migrations for `backend`) with the outbox table's
/// migration as its version `version`: the schema is written once, here beside the code
/// that reads and writes it, and each producer applies it in its own sequence (the bytes
/// are those the producers' own files had, so databases migrated before keep their
/// checksums).
///
/// # Panics
/// When `migrator` already has a migration `version` (a programming error).
pub fn with_migration(
    mut migrator: sqlx::migrate::Migrator,
    backend: Backend,
    version: i64,
) -> sqlx::migrate::Migrator {
    let sql = match backend {
        Backend::Postgres => MIGRATION_POSTGRES,
        Backend::Sqlite => MIGRATION_SQLITE,
    };
    let mut migrations = migrator.migrations.into_owned();
    assert!(
        migrations
            .iter()
            .all(|migration| migration.version != version),
        "the outbox's migration version {version} is taken by the producer's own"
    );
    migrations.push(sqlx::migrate::Migration::new(
        version,
        Cow::Borrowed("outbox"),
        sqlx::migrate::MigrationType::Simple,
        Cow::Borrowed(sql),
        false,
    ));
    migrations.sort_by_key(|migration| migration.version);
    migrator.migrations = Cow::Owned(migrations);
    migrator
}

/// Applies a producer's own migrations (`postgres` or `sqlite`, whichever `pool` is on)
/// with the outbox table's as their version `version` (see [`with_migration`]).
pub async fn migrate(
    pool: &Pool,
    postgres: sqlx::migrate::Migrator,
    sqlite: sqlx::migrate::Migrator,
    version: i64,
) -> Result<(), sqlx::migrate::MigrateError> {
    let backend = pool.backend();
    let own = match backend {
        Backend::Postgres => postgres,
        Backend::Sqlite => sqlite,
    };
    let migrator = with_migration(own, backend, version);
    pool.migrate(&migrator, &migrator).await
}

/// A producer's outbox: the table in its database that the [`Relay`] drains. A store
/// that writes events hands one out, so the relay reaches the table and nothing else of
/// the store's database.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: Pool,
}

impl Outbox {
    /// The outbox in the database of `pool` (its migration applied).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// How many events wait to be relayed.
    pub async fn pending(&self) -> Result<u64, sqlx::Error> {
        let (count,): (i64,) = crate::on_pool!(&self.pool, |pool| {
            sqlx::query_as("SELECT COUNT(*) FROM outbox")
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Every waiting row as (event id, routing key, envelope bytes), in commit order: for
    /// tests and tools that read what a producer wrote.
    pub async fn rows(&self) -> Result<Vec<(Uuid, String, Vec<u8>)>, sqlx::Error> {
        const SQL: &str = "SELECT event_id, routing_key, payload FROM outbox ORDER BY seq";
        crate::on_pool!(&self.pool, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
    }
}

/// The insert for one event, to run on the producer's transaction.
pub fn insert<'q, DB>(event: &'q Event) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    Uuid: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.id)
    .bind(event.routing_key)
    .bind(event.payload.as_slice())
    .bind(event.occurred_at)
}

/// Most rows [`insert_all`] writes in one statement (SQLite allows 32,766 parameters).
pub const ROWS_PER_INSERT: usize = 1_000;

/// One multi-row insert for `events` (1 to [`ROWS_PER_INSERT`] of them), to run on the
/// producer's transaction: one round trip for a whole batch of state changes instead of
/// one per event. `None` when there is nothing to insert.
pub fn insert_all<'q, DB>(events: &[&'q Event]) -> Option<sqlx::QueryBuilder<'q, DB>>
where
    DB: Database,
    DB::Arguments<'q>: Default,
    Uuid: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    if events.is_empty() {
        return None;
    }
    debug_assert!(
        events.len() <= ROWS_PER_INSERT,
        "callers chunk their events by ROWS_PER_INSERT"
    );
    let mut insert =
        sqlx::QueryBuilder::new("INSERT INTO outbox (event_id, routing_key, payload, created_at) ");
    insert.push_values(events, |mut row, event| {
        row.push_bind(event.id)
            .push_bind(event.routing_key)
            .push_bind(event.payload.as_slice())
            .push_bind(event.occurred_at);
    });
    Some(insert)
}

/// Wakes the relay after a commit that wrote events, so they leave at once instead of at
/// the next poll. Cheap to clone; waking with no relay running does nothing.
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    /// New rows are committed.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    event_id: Uuid,
    routing_key: String,
    payload: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl Row {
    fn published(&self) -> Published {
        Published {
            event_id: self.event_id,
            routing_key: self.routing_key.clone(),
            payload: self.payload.clone(),
        }
    }
}

const SELECT: &str =
    "SELECT seq, event_id, routing_key, payload, created_at FROM outbox ORDER BY seq LIMIT $1";

/// Starts a relay for `outbox` when there is a bus; without one, says that
/// events wait in the outbox (a service started alone without `AMQP_URL`).
pub fn spawn_relay(
    bus: Option<Arc<dyn EventBus>>,
    outbox: Outbox,
    waker: OutboxWaker,
    producer: &'static str,
    shutdown: Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    if let Some(bus) = bus {
        Some(tokio::spawn(
            Relay::new(outbox, bus, waker, producer).run(shutdown),
        ))
    } else {
        tracing::warn!("no event bus (AMQP_URL unset): events wait in the outbox");
        None
    }
}

/// Moves committed outbox rows to the bus.
pub struct Relay {
    pool: Pool,
    bus: Arc<dyn EventBus>,
    waker: OutboxWaker,
    producer: &'static str,
}

impl Relay {
    /// A relay for `outbox`, woken by `waker`.
    pub fn new(
        outbox: Outbox,
        bus: Arc<dyn EventBus>,
        waker: OutboxWaker,
        producer: &'static str,
    ) -> Self {
        Self {
            pool: outbox.pool,
            bus,
            waker,
            producer,
        }
    }

    /// Relays until `shutdown`; each batch is published, confirmed and deleted before the
    /// next one is read.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.relay_batch().await {
                Ok(published) => {
                    backoff = Duration::from_millis(100);
                    if published == BATCH as usize {
                        continue;
                    }
                    tokio::select! {
                        () = self.waker.0.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                Err(error) => {
                    metrics::counter!("outbox_relay_failures_total", "producer" => self.producer)
                        .increment(1);
                    tracing::warn!(error = %error, retry_in = ?backoff, "outbox relay: events wait in the outbox");
                    if !crate::shutdown::pause(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Publishes and deletes one batch; returns how many events it held.
    pub async fn relay_batch(&self) -> anyhow::Result<usize> {
        let rows = match &self.pool {
            Pool::Postgres(pool) => {
                // Rows locked by another replica's relay are skipped, not waited for; the
                // lock is held until they are published and deleted.
                let mut tx = pool.begin().await?;
                let rows: Vec<Row> = sqlx::query_as(&format!("{SELECT} FOR UPDATE SKIP LOCKED"))
                    .bind(i64::from(BATCH))
                    .fetch_all(&mut *tx)
                    .await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                if let Err(error) = self.publish(&rows).await {
                    // Release the rows now, not whenever the dropped transaction's
                    // rollback runs: another relay (or the next try) takes them at once.
                    tx.rollback().await?;
                    return Err(error.into());
                }
                let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
                sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
                    .bind(&seqs)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
            Pool::Sqlite(sqlite) => {
                // One process owns a SQLite file, so one relay reads it, and SQLite commits
                // one writer at a time: the rows read are a contiguous range of seq.
                let pool = sqlite.pool();
                let rows: Vec<Row> = sqlx::query_as(SELECT)
                    .bind(i64::from(BATCH))
                    .fetch_all(pool)
                    .await?;
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(0);
                };
                self.publish(&rows).await?;
                let _turn = sqlite.write_turn().await?;
                sqlx::query("DELETE FROM outbox WHERE seq BETWEEN $1 AND $2")
                    .bind(first.seq)
                    .bind(last.seq)
                    .execute(pool)
                    .await?;
                rows
            }
        };
        let now = Utc::now();
        let lags = metrics::histogram!("outbox_relay_lag_seconds", "producer" => self.producer);
        for row in &rows {
            let lag = (now - row.created_at).to_std().unwrap_or_default();
            lags.record(lag.as_secs_f64());
        }
        metrics::counter!("events_published_total", "producer" => self.producer)
            .increment(rows.len() as u64);
        Ok(rows.len())
    }

    async fn publish(&self, rows: &[Row]) -> Result<(), super::BusError> {
        let batch: Vec<Published> = rows.iter().map(Row::published).collect();
        self.bus.publish(&batch).await
    }
}
