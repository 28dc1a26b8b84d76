//! Connection set-up for the two SQL backends every store supports: PostgreSQL for the
//! dev stack and the cluster, SQLite for the embedded run. The URL scheme picks one.

use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, sync::Arc, time::Duration};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which backend a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`
    Postgres,
    /// `sqlite://` or `sqlite:`
    Sqlite,
}

/// The backend of `url`, or `None` for an unsupported scheme.
pub fn backend(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else {
        None
    }
}

/// An open pool of either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(Sqlite),
}

/// A SQLite pool and the turn its writers take.
///
/// SQLite lets one connection write at a time. A connection that finds the write lock
/// taken waits in SQLite's busy handler, which sleeps and tries again (1, 2, 5, 10 … up
/// to 100 ms a sleep) rather than queueing: the lock sits free while the waiters sleep,
/// and whoever wakes first takes it, however long the others have waited. In a login
/// storm auth's and chat's pool connections slept there 1,200 times a second, and logins
/// waited seconds for commits that take a millisecond (docs/PERFORMANCE.md). So this
/// process's writers of one database take turns in order first (a fair semaphore of one
/// permit, shared by every pool of this process on that file: chat's writer and its main
/// pool), and only another process (`microchat admin`) still meets the busy handler.
#[derive(Debug, Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    writes: Arc<Semaphore>,
}

/// How long a writer waits for its turn before it is refused as unavailable: SQLite's
/// own busy timeout, which it stood in.
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(5);

impl Sqlite {
    /// `pool` with a turn of its own: the only pool of this process writing its database.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            writes: Arc::new(Semaphore::new(1)),
        }
    }

    /// Another pool on the same database, taking the same turns as this one.
    pub fn beside(&self, pool: SqlitePool) -> Self {
        Self {
            pool,
            writes: Arc::clone(&self.writes),
        }
    }

    /// The sqlx pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for this database's write turn (in order of asking), held until the permit
    /// is dropped; after [`WRITE_TURN_TIMEOUT`], `PoolTimedOut` (a 503 for the caller).
    pub async fn write_turn(&self) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        let turn = Arc::clone(&self.writes).acquire_owned();
        match tokio::time::timeout(WRITE_TURN_TIMEOUT, turn).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => unreachable!("the write turn's semaphore is never closed"),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

/// Opens the pool a database URL names (`postgres://` or `sqlite://`).
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    connect_paged(url, SQLITE_PAGE_SIZE).await
}

/// As [`connect`], creating a missing SQLite database with pages of `sqlite_page_size`
/// bytes (see [`connect_sqlite_paged`]). An error names the database (never a password).
pub async fn connect_paged(url: &str, sqlite_page_size: u32) -> anyhow::Result<Pool> {
    let pool = match backend(url) {
        Some(Backend::Postgres) => connect_postgres(url, 16).await.map(Pool::Postgres),
        Some(Backend::Sqlite) => connect_sqlite_paged(url, sqlite_page_size)
            .await
            .map(|pool| Pool::Sqlite(Sqlite::new(pool))),
        None => anyhow::bail!("unsupported database URL (use postgres:// or sqlite://)"),
    };
    pool.map_err(|error| naming(url, error))
}

/// Opens the pool a database URL names and applies the migrations of its backend.
pub async fn connect_migrated(
    url: &str,
    postgres: sqlx::migrate::Migrator,
    sqlite: sqlx::migrate::Migrator,
) -> anyhow::Result<Pool> {
    let pool = connect(url).await?;
    let migrated = match &pool {
        Pool::Postgres(pool) => postgres.run(pool).await,
        Pool::Sqlite(pool) => sqlite.run(pool.pool()).await,
    };
    migrated.map_err(|error| naming(url, error))?;
    Ok(pool)
}

/// `error` as an error of the database `url` names (see [`describe`]).
pub fn naming(url: &str, error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {error}", describe(url))
}

/// The database a URL names, for an error message: the SQLite file, or PostgreSQL's host
/// and database without the credentials.
pub fn describe(url: &str) -> String {
    match backend(url) {
        Some(Backend::Sqlite) => match SqliteConnectOptions::from_str(url) {
            Ok(options) => format!("the SQLite database {}", options.get_filename().display()),
            Err(_) => "a SQLite database".to_owned(),
        },
        Some(Backend::Postgres) => {
            let place = url.rsplit_once('@').map_or_else(
                || url.split_once("://").map_or(url, |(_, rest)| rest),
                |(_, place)| place,
            );
            let place = place.split_once('?').map_or(place, |(place, _)| place);
            format!("the PostgreSQL database {place}")
        }
        None => "the database".to_owned(),
    }
}

impl Pool {
    /// Which backend this pool is on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Begins a write transaction on a connection of the pool.
    ///
    /// On SQLite it first waits for the database's write turn ([`Sqlite`]), held until
    /// the transaction ends, and then takes the write lock at once (`BEGIN IMMEDIATE`). A
    /// deferred transaction reads on its snapshot and asks for the lock at its first
    /// write; if another connection committed in between, SQLite cannot move the snapshot
    /// forward and fails the write at once with `SQLITE_BUSY_SNAPSHOT` ("database is
    /// locked", code 517), whatever the busy timeout. The stores' transactions read (a
    /// membership, a quota, a marker) before they write: begun deferred, each could fail
    /// that way beside any other writer.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Transaction::Postgres(pool.begin().await?),
            Self::Sqlite(sqlite) => {
                let turn = sqlite.write_turn().await?;
                let tx = sqlite.pool.begin_with("BEGIN IMMEDIATE").await?;
                Transaction::Sqlite(SqliteTransaction {
                    tx,
                    _turn: Some(turn),
                })
            }
        })
    }

    /// The write turn of a SQLite database ([`Sqlite`]), for a write outside a
    /// transaction (one `INSERT`, `UPDATE` or `DELETE` run on the pool): hold it while the
    /// statement runs. `None` on PostgreSQL, whose writers need no turns.
    pub async fn write_turn(&self) -> Result<Option<OwnedSemaphorePermit>, sqlx::Error> {
        match self {
            Self::Postgres(_) => Ok(None),
            Self::Sqlite(sqlite) => sqlite.write_turn().await.map(Some),
        }
    }

    /// Begins a read-only transaction: its reads see one snapshot of the database. On
    /// SQLite it takes no lock, so writers go on beside it (it must not write: see
    /// [`Pool::begin`]).
    pub async fn begin_read(&self) -> Result<Transaction, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Transaction::Postgres(pool.begin().await?),
            Self::Sqlite(sqlite) => Transaction::Sqlite(SqliteTransaction {
                tx: sqlite.pool.begin().await?,
                _turn: None,
            }),
        })
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Applies the migrations of this pool's backend.
    pub async fn migrate(
        &self,
        postgres: &sqlx::migrate::Migrator,
        sqlite: &sqlx::migrate::Migrator,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Postgres(pool) => postgres.run(pool).await,
            Self::Sqlite(pool) => sqlite.run(pool.pool()).await,
        }
    }
}

/// An open transaction of either backend, from [`Pool::begin`]. Dropped without
/// [`Transaction::commit`], it rolls back.
#[derive(Debug)]
pub enum Transaction {
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// SQLite.
    Sqlite(SqliteTransaction),
}

/// A SQLite transaction and, for a write transaction, the database's write turn
/// ([`Sqlite`]), given back when the transaction ends.
#[derive(Debug)]
pub struct SqliteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    // Dropped after `tx` (fields drop in order): a transaction dropped without a commit
    // has queued its rollback before the next writer's turn begins.
    _turn: Option<OwnedSemaphorePermit>,
}

impl SqliteTransaction {
    /// The sqlx transaction, for [`on_tx!`].
    pub fn sqlx(&mut self) -> &mut sqlx::Transaction<'static, sqlx::Sqlite> {
        &mut self.tx
    }
}

impl Transaction {
    /// Which backend this transaction is on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.commit().await,
            Self::Sqlite(sqlite) => sqlite.tx.commit().await,
        }
    }
}

/// Runs one piece of SQL code on whichever backend a [`Pool`] is: `on_pool!(&pool, |p|
/// ...)`, with `p` the `PgPool` or the `SqlitePool`. The code is written once and
/// compiled for each backend (so it stays fully concrete: no generic sqlx bounds); the
/// match costs one branch. This is how every SQL store of the workspace is written:
/// ordinary methods, each statement dispatched where it runs (see also [`on_tx!`]).
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::sql::Pool::Postgres($p) => $body,
            $crate::sql::Pool::Sqlite(sqlite) => {
                let $p = sqlite.pool();
                $body
            }
        }
    };
}

/// [`on_pool!`] for a [`Transaction`]: `on_tx!(&mut tx, |c| query.execute(&mut **c))`,
/// with `c` the `&mut sqlx::Transaction` of the backend.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::sql::Transaction::Postgres($c) => $body,
            $crate::sql::Transaction::Sqlite(sqlite) => {
                let $c = sqlite.sqlx();
                $body
            }
        }
    };
}

/// True when the error means "the database could not be reached, answer in time or store
/// more" (a full disk), as opposed to an answer about the request: worth a 503 and a
/// later retry, never a 500.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => is_out_of_resources(db.code().as_deref()),
        _ => false,
    }
}

/// SQLite's SQLITE_FULL (13) and SQLITE_IOERR (10, any extended code: a write that failed),
/// and PostgreSQL's class 53, "insufficient resources" (53100 is disk full).
fn is_out_of_resources(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if code.starts_with("53") && code.len() == 5 {
        return true;
    }
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 10 | 13))
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A PostgreSQL pool that fails fast when the server is away instead of hanging.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

/// Bytes per page of a new SQLite database: SQLite's default, right for most stores.
pub const SQLITE_PAGE_SIZE: u32 = 4096;

/// WAL pages after which a commit checkpoints the WAL (SQLite's `wal_autocheckpoint`);
/// also what the WAL file is truncated back to after a checkpoint (`journal_size_limit`,
/// in bytes: these pages at the pool's page size). The log regrows to about that size
/// between checkpoints; what a stalled checkpoint added beyond it is given back.
const WAL_CHECKPOINT_PAGES: u32 = 4000;

/// A SQLite pool in WAL mode, creating the file (and its directory) when missing.
pub async fn connect_sqlite(url: &str) -> Result<SqlitePool, sqlx::Error> {
    connect_sqlite_paged(url, SQLITE_PAGE_SIZE).await
}

/// As [`connect_sqlite`], creating a missing database with pages of `page_size` bytes (a
/// power of two from 512 to 65,536); an existing database keeps the size it was made with.
/// The file is checked first (see [`check_sound`]).
pub async fn connect_sqlite_paged(url: &str, page_size: u32) -> Result<SqlitePool, sqlx::Error> {
    check_sound(sqlite_pool(sqlite_options(url, page_size)?, 8).await?).await
}

/// A second pool of one connection on the SQLite database at `url`, for a store's hot
/// write path (group-committed batches and the outbox relay that follows them).
///
/// In WAL mode a connection empties its whole page cache whenever *another* connection
/// has committed, so writes spread over a pool's connections each read their pages
/// again (the chat benchmark read ~100 MB/s back from its own WAL to write ~3 MB/s of
/// messages), and writers that meet wait in SQLite's sleeping busy handler. One
/// connection keeps its cache across its own commits, and its writers queue in the pool.
/// SQLite lets one writer commit at a time anyway.
///
/// `None` for an in-memory database: a second pool would open another database. (A
/// store wraps it with [`Sqlite::beside`] its main pool, so both take the same turns.)
pub async fn connect_sqlite_writer(
    url: &str,
    page_size: u32,
) -> Result<Option<SqlitePool>, sqlx::Error> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options = sqlite_options(url, page_size)?
        // The hot pages of the message and outbox indexes, kept (16 MiB).
        .pragma("cache_size", "-16384");
    Ok(Some(sqlite_pool(options, 1).await?))
}

/// A pool of one connection on the SQLite database at `url` whose commits are on disk
/// when they return (`synchronous=FULL`: the WAL is synced at each commit), for a store
/// whose commit is a promise to another process, such as the embedded event bus's
/// "published". Its writers queue in the pool, as SQLite commits one at a time anyway.
/// The file is checked first (see [`check_sound`]).
pub async fn connect_sqlite_durable(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = sqlite_options(url, SQLITE_PAGE_SIZE)?.synchronous(SqliteSynchronous::Full);
    check_sound(sqlite_pool(options, 1).await?).await
}

async fn sqlite_pool(
    options: SqliteConnectOptions,
    max_connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Checks a database file before anything uses it: a file that is not a SQLite database,
/// or a damaged one (truncated, overwritten), is refused with SQLite's words and left as
/// it is, instead of failing request by request later. `quick_check` reads every page
/// once, without the index-to-table cross checks of `integrity_check`.
async fn check_sound(pool: SqlitePool) -> Result<SqlitePool, sqlx::Error> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&pool)
        .await?;
    if problems.first().is_some_and(|first| first != "ok") {
        pool.close().await;
        return Err(sqlx::Error::Configuration(
            format!(
                "the file is damaged (SQLite's quick_check: {}); it was left as it is: \
                 restore it from a backup or move it away to start afresh",
                problems.join("; ")
            )
            .into(),
        ));
    }
    Ok(pool)
}

fn sqlite_options(url: &str, page_size: u32) -> Result<SqliteConnectOptions, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // Set before the journal mode (sqlx keeps that order): a database in WAL mode
        // cannot change its page size any more.
        .page_size(page_size)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Rows come back from the connection's thread through a bounded channel (50 by
        // default). A batch's `RETURNING` or an outbox read of a few hundred rows then
        // fills it, and on a busy core the two threads take turns row by row: halving
        // this process's futex calls and context switches in the WebSocket benchmark.
        .row_buffer_size(1024)
        // Read pages straight from the page cache through a mapping instead of a copy
        // per page read (a read-heavy store spent more time copying pages than running
        // its statements); the mapping grows with the file up to this size.
        .pragma("mmap_size", (256u64 << 20).to_string())
        // Checkpoint the WAL every 4,000 pages (16 MB at 4 KiB) instead of 1,000: a checkpoint
        // copies each page changed since the last one once, and the hot pages (the
        // tails of the message and outbox indexes) change in every batch, so fewer
        // checkpoints copy them fewer times.
        .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string())
        // The WAL file never shrinks by itself: a checkpoint that cannot finish while
        // readers are busy lets it grow past the checkpoint size (auth's stood at 88 MB
        // after a burst of 2,000 registrations, issue 29), and it stayed that size. With
        // a limit, SQLite truncates it back whenever the log restarts from the beginning
        // after a complete checkpoint, so the file holds what one checkpoint interval
        // needs (`make soak` samples every WAL file).
        .pragma(
            "journal_size_limit",
            (u64::from(WAL_CHECKPOINT_PAGES) * u64::from(page_size)).to_string(),
        )
        // Statement journals and sorts in memory: a file for each opened, written and
        // closed again showed up in the benchmark's profile.
        .pragma("temp_store", "memory");
    if let Some(dir) = options
        .get_filename()
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_scheme_picks_the_backend() {
        assert_eq!(backend("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend("sqlite://./data/auth.db"), Some(Backend::Sqlite));
        assert_eq!(backend("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(backend("mysql://h/db"), None);
    }
}
