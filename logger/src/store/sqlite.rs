//! The SQLite adapter of [`LogStore`], for the embedded run. SQLite has no TTL: the
//! service purges old entries on a timer ([`LogStore::purge_older_than`]).
//!
//! Levels are stored by name, like in MongoDB, and a minimum level is asked for as the
//! set of names at or above it, so the `(service, level, created_at)` index serves it.

use super::{LogStore, StoreError, timed};
use crate::domain::{
    Cursor, Level, LogData, LogEntry, LogQuery, Name, Page, Service, parse_trace_id,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

/// Rows per INSERT statement: 8 parameters each, well under SQLite's limit of 32,766.
const ROWS_PER_INSERT: usize = 200;
/// Rows deleted per purge statement, so a large purge never holds the write lock long.
const ROWS_PER_PURGE: i64 = 5_000;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if platform::sql::is_unavailable(&error) {
            Self::Unavailable(error.into())
        } else {
            Self::Database(error.into())
        }
    }
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: Uuid,
    name: String,
    data: String,
    level: String,
    service: String,
    user_id: Option<Uuid>,
    trace_id: Option<String>,
    created_at: i64,
}

impl TryFrom<LogRow> for LogEntry {
    type Error = StoreError;

    fn try_from(row: LogRow) -> Result<Self, Self::Error> {
        let broken =
            |what: String| StoreError::Database(format!("entry {}: {what}", row.id).into());
        Ok(Self {
            id: row.id,
            name: Name::parse(&row.name).map_err(|e| broken(e.to_string()))?,
            data: LogData::from_stored_text(&row.data).map_err(|e| broken(e.to_string()))?,
            level: Level::from_stored(&row.level)
                .ok_or_else(|| broken(format!("unknown level {:?}", row.level)))?,
            service: Service::parse(&row.service).map_err(|e| broken(e.to_string()))?,
            user_id: row.user_id,
            trace_id: row
                .trace_id
                .as_deref()
                .map(parse_trace_id)
                .transpose()
                .map_err(|e| broken(e.to_string()))?,
            created_at: DateTime::from_timestamp_millis(row.created_at)
                .ok_or_else(|| broken(format!("time out of range: {}", row.created_at)))?,
        })
    }
}

/// Log entries in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLogStore {
    pool: SqlitePool,
}

impl SqliteLogStore {
    /// Opens (creating when missing) the database at `url` and applies its migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = platform::sql::connect_sqlite(url).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Database(error.into()))?;
        Ok(Self { pool })
    }

    async fn insert_now(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in entries.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO logs (id, name, data, level, service, user_id, trace_id, created_at) ",
            );
            insert.push_values(chunk, |mut row, entry| {
                row.push_bind(entry.id)
                    .push_bind(entry.name.as_str().to_owned())
                    .push_bind(entry.data.to_text())
                    .push_bind(entry.level.as_str())
                    .push_bind(entry.service.as_str().to_owned())
                    .push_bind(entry.user_id)
                    .push_bind(entry.trace_id.map(|id| id.to_string()))
                    .push_bind(entry.created_at.timestamp_millis());
            });
            // An id stored before (a redelivered audit entry) keeps its first entry.
            insert.push(" ON CONFLICT (id) DO NOTHING");
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn query_now(&self, query: &LogQuery) -> Result<Page, StoreError> {
        let rows: Vec<LogRow> = select(query).build_query_as().fetch_all(&self.pool).await?;
        let entries = rows
            .into_iter()
            .map(LogEntry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_fetched(entries, query.limit))
    }

    async fn purge_now(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let deleted = timed(async {
                let done = sqlx::query(
                    "DELETE FROM logs WHERE rowid IN \
                     (SELECT rowid FROM logs WHERE created_at < $1 LIMIT $2)",
                )
                .bind(before.timestamp_millis())
                .bind(ROWS_PER_PURGE)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            })
            .await?;
            purged += deleted;
            if deleted < ROWS_PER_PURGE as u64 {
                return Ok(purged);
            }
        }
    }
}

/// The SELECT of one page: every filter given, newest first, one row past the page.
fn select(query: &LogQuery) -> QueryBuilder<'_, Sqlite> {
    let mut sql = QueryBuilder::new(
        "SELECT id, name, data, level, service, user_id, trace_id, created_at FROM logs WHERE 1 = 1",
    );
    if let Some(service) = &query.service {
        sql.push(" AND service = ").push_bind(service.as_str());
    }
    if let Some(level) = query.min_level {
        sql.push(" AND level IN (");
        let mut names = sql.separated(", ");
        for level in level.and_above() {
            names.push_bind(level.as_str());
        }
        sql.push(")");
    }
    if let Some(user_id) = query.user_id {
        sql.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(trace_id) = &query.trace_id {
        sql.push(" AND trace_id = ").push_bind(trace_id.to_string());
    }
    if let Some(since) = query.since {
        sql.push(" AND created_at >= ")
            .push_bind(since.timestamp_millis());
    }
    if let Some(until) = query.until {
        sql.push(" AND created_at < ")
            .push_bind(until.timestamp_millis());
    }
    if let Some(Cursor { created_at, id }) = query.after {
        // (created_at, id) < cursor, written so the index on created_at bounds the scan.
        let millis = created_at.timestamp_millis();
        sql.push(" AND created_at <= ").push_bind(millis);
        sql.push(" AND (created_at < ").push_bind(millis);
        sql.push(" OR id < ").push_bind(id).push(")");
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(query.fetch_limit()));
    sql
}

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn insert(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        timed(self.insert_now(entries)).await
    }

    async fn query(&self, query: &LogQuery) -> Result<Page, StoreError> {
        timed(self.query_now(query)).await
    }

    async fn purge_older_than(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // Each statement has its own deadline: a large purge takes several.
        self.purge_now(before).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }
}
