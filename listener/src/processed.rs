//! The ids of events whose work is done (and whether their audit entry is stored), so a
//! redelivered event is acknowledged without doing its work twice. PostgreSQL (dev stack, cluster) or SQLite (embedded).

use chrono::{DateTime, Utc};
use platform::{on_pool, sql::Pool};
use uuid::Uuid;

/// How far the listener got with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Never seen, or its work failed.
    New,
    /// Its work is done; its audit entry is not stored yet.
    WorkDone,
    /// Work done and audited: a redelivery is a duplicate.
    Audited,
}

/// One event whose work is done.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The event.
    pub event_id: Uuid,
    /// Its routing key.
    pub routing_key: &'static str,
    /// When its work was done.
    pub at: DateTime<Utc>,
    /// Whether its audit entry is stored too.
    pub audited: bool,
}

/// The processed-events table.
#[derive(Debug, Clone)]
pub struct ProcessedEvents {
    pool: Pool,
}

impl ProcessedEvents {
    /// The table in `pool`, the listener's database (see [`crate::connect_database`]).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Where each of these events stands, in one query (the lookups of the events in
    /// flight, batched like their records).
    pub async fn progress_of(&self, event_ids: &[Uuid]) -> Result<Vec<Progress>, sqlx::Error> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<(Uuid, bool)> = on_pool!(&self.pool, |pool| {
            let mut select = sqlx::QueryBuilder::new(
                "SELECT event_id, audited FROM processed_events WHERE event_id IN (",
            );
            let mut ids = select.separated(", ");
            for id in event_ids {
                ids.push_bind(*id);
            }
            select.push(")");
            select.build_query_as().fetch_all(pool).await?
        });
        let found: std::collections::HashMap<Uuid, bool> = found.into_iter().collect();
        Ok(event_ids
            .iter()
            .map(|id| match found.get(id) {
                None => Progress::New,
                Some(false) => Progress::WorkDone,
                Some(true) => Progress::Audited,
            })
            .collect())
    }

    /// Records that the event's audit entry is stored.
    pub async fn mark_audited(&self, event_id: Uuid) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE processed_events SET audited = TRUE WHERE event_id = $1";
        let _turn = self.pool.write_turn().await?;
        on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(event_id)
                .execute(pool)
                .await
                .map(drop)
        })
    }

    /// Records that these events' work is done (and whether each one's audit entry is
    /// stored too), in one statement; for each, false when it already was recorded
    /// (another delivery of it finished first).
    pub async fn record(&self, records: &[Record]) -> Result<Vec<bool>, sqlx::Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let _turn = self.pool.write_turn().await?;
        let inserted: Vec<Uuid> = on_pool!(&self.pool, |pool| {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO processed_events (event_id, routing_key, processed_at, audited) ",
            );
            insert.push_values(records, |mut row, record| {
                row.push_bind(record.event_id)
                    .push_bind(record.routing_key)
                    .push_bind(record.at)
                    .push_bind(record.audited);
            });
            insert.push(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
            insert.build_query_scalar().fetch_all(pool).await?
        });
        Ok(records
            .iter()
            .map(|record| inserted.contains(&record.event_id))
            .collect())
    }

    /// Forgets events processed before `before`; returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        const SQL: &str = "DELETE FROM processed_events WHERE processed_at < $1";
        let _turn = self.pool.write_turn().await?;
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, |pool| {
            sqlx::query("SELECT 1").execute(pool).await.map(drop)
        })
    }
}
