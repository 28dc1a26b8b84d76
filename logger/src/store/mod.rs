//! The log store port, and its two adapters: MongoDB (the dev stack and the cluster, the
//! official `mongodb` driver) and SQLite (the embedded run, sqlx). The service only sees
//! [`LogStore`]; the configuration picks the adapter.

mod mongo;
mod sqlite;

use crate::domain::{LogEntry, LogQuery, Page};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::{sync::Arc, time::Duration};

pub use mongo::{COLLECTION, MongoLogStore, QUERY_INDEXES, TTL_INDEX};
pub use sqlite::SqliteLogStore;

/// Longest any one store call may take before it counts as the store being away.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The cause of a [`StoreError`], whichever driver raised it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered in time.
    #[error("the log database is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Any other failure: a bug, a broken schema, or a stored value that no longer reads.
    #[error("log database error: {0}")]
    Database(#[source] Cause),
}

/// Where log entries are kept.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Stores every entry, or none when it fails.
    async fn insert(&self, entries: &[LogEntry]) -> Result<(), StoreError>;
    /// The page of entries matching `query`, newest first (by time, then id).
    async fn query(&self, query: &LogQuery) -> Result<Page, StoreError>;
    /// Deletes entries older than `before`; returns how many went.
    async fn purge_older_than(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Runs one store call with [`CALL_TIMEOUT`]; running out of time means unavailable.
async fn timed<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                format!("no answer within {CALL_TIMEOUT:?}").into(),
            ))
        })
}

/// Opens the SQLite store at `url` and applies its migrations.
pub async fn connect_sqlite(url: &str) -> anyhow::Result<Arc<dyn LogStore>> {
    Ok(Arc::new(SqliteLogStore::connect(url).await?))
}

/// Connects to MongoDB at `url` and creates the collection's indexes, the TTL index
/// expiring entries after `retention`.
pub async fn connect_mongo(
    url: &str,
    database: &str,
    retention: Duration,
) -> anyhow::Result<Arc<dyn LogStore>> {
    Ok(Arc::new(
        MongoLogStore::connect(url, database, retention).await?,
    ))
}
