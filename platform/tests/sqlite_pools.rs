//! SQLite pools: the page size a database is made with, and the one-connection writer
//! pool a store keeps beside its main pool for its hot write path.

use std::time::Duration;

use platform::{
    on_tx,
    sql::{Pool, SQLITE_PAGE_SIZE, connect_sqlite, connect_sqlite_paged, connect_sqlite_writer},
    testing::TestDatabase,
};
use sqlx::SqlitePool;

async fn page_size(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await
        .expect("PRAGMA page_size answers")
}

#[tokio::test]
async fn a_database_keeps_the_page_size_it_was_made_with() {
    let database = TestDatabase::sqlite("pages");
    let made = connect_sqlite_paged(database.url(), 1024).await.unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&made)
        .await
        .unwrap();
    assert_eq!(page_size(&made).await, 1024);
    made.close().await;

    let reopened = connect_sqlite(database.url()).await.unwrap();
    assert_eq!(
        page_size(&reopened).await,
        1024,
        "an existing database keeps its pages whatever the pool asks for"
    );
    assert_eq!(
        page_size(
            &connect_sqlite(TestDatabase::sqlite("default").url())
                .await
                .unwrap()
        )
        .await,
        i64::from(SQLITE_PAGE_SIZE)
    );
}

#[tokio::test]
async fn the_writer_is_one_connection_to_the_same_database() {
    let database = TestDatabase::sqlite("writer");
    let pool = connect_sqlite(database.url()).await.unwrap();
    let writer = connect_sqlite_writer(database.url(), SQLITE_PAGE_SIZE)
        .await
        .unwrap()
        .expect("a database file gets a writer pool");
    assert_eq!(writer.options().get_max_connections(), 1);

    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&writer)
        .await
        .unwrap();
    let mut tx = writer.begin().await.unwrap();
    sqlx::query("INSERT INTO notes VALUES ('first'), ('second')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let seen: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY body")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seen,
        ["first", "second"],
        "the main pool reads what the writer committed"
    );
}

#[tokio::test]
async fn an_in_memory_database_gets_no_writer_of_its_own() {
    // A second pool on `:memory:` would open a second, empty database.
    let writer = connect_sqlite_writer("sqlite::memory:", SQLITE_PAGE_SIZE)
        .await
        .unwrap();
    assert!(writer.is_none());
}

/// The size of the WAL file of the SQLite database at `url` (0 when there is none).
fn wal_bytes(url: &str) -> u64 {
    let path = format!("{}-wal", url.trim_start_matches("sqlite://"));
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

/// Commits `count` rows of 256 KiB each, one transaction per row.
async fn write_rows(pool: &SqlitePool, count: usize) {
    for _ in 0..count {
        sqlx::query("INSERT INTO blobs VALUES (randomblob(262144))")
            .execute(pool)
            .await
            .expect("the insert commits");
    }
}

/// A reader that holds its snapshot keeps a checkpoint from finishing, so the WAL grows
/// past its checkpoint size (issue 29: auth's stood at 88 MB after a burst of
/// registrations); once the reader is gone, the next checkpoint gives the space back
/// instead of the file keeping its largest size for ever.
#[tokio::test]
async fn a_wal_grown_past_its_checkpoint_by_a_long_reader_shrinks_back() {
    let database = TestDatabase::sqlite("wal");
    let pool = connect_sqlite(database.url()).await.unwrap();
    let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
        .fetch_one(&pool)
        .await
        .unwrap();
    let checkpoint_bytes = 4000 * u64::from(SQLITE_PAGE_SIZE);
    assert_eq!(u64::try_from(limit).unwrap(), checkpoint_bytes);
    sqlx::query("CREATE TABLE blobs (b BLOB)")
        .execute(&pool)
        .await
        .unwrap();

    let mut reader = pool.begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM blobs")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    // 96 × 256 KiB: 24 MiB of pages, past the 16 MiB checkpoint size.
    write_rows(&pool, 96).await;
    let grown = wal_bytes(database.url());
    assert!(
        grown > checkpoint_bytes,
        "the reader held the log: {grown} bytes"
    );
    reader.rollback().await.unwrap();

    // The next commits checkpoint the whole log and start it again from the beginning,
    // truncating the file to the limit.
    write_rows(&pool, 80).await;
    let after = wal_bytes(database.url());
    assert!(
        after <= checkpoint_bytes + 2 * 262_144,
        "the WAL came back to its checkpoint size: {after} bytes (it had grown to {grown})"
    );
}

/// A fresh SQLite database named after `name` holding `table` (its name and columns), as
/// the stores' `Pool` and as the sqlx pool under it.
async fn pool_with(name: &str, table: &str) -> (TestDatabase, Pool, SqlitePool) {
    let database = TestDatabase::sqlite(name);
    let sqlite = connect_sqlite(database.url()).await.unwrap();
    sqlx::query(&format!("CREATE TABLE {table}"))
        .execute(&sqlite)
        .await
        .unwrap();
    (database, Pool::Sqlite(sqlite.clone()), sqlite)
}

/// A store transaction reads (a membership, a quota) and then writes. Begun deferred, it
/// read on a snapshot, and a commit by another connection before its first write made
/// that write fail at once with SQLITE_BUSY_SNAPSHOT ("database is locked", code 517),
/// whatever the busy timeout: seen as a failed upload when two files were sent at once.
/// `Pool::begin` takes the write lock first, so the other writer waits its turn instead.
#[tokio::test]
async fn a_transaction_that_reads_then_writes_commits_beside_another_writer() {
    let (_database, pool, sqlite) = pool_with("snapshot", "counters (n INTEGER NOT NULL)").await;
    sqlx::query("INSERT INTO counters VALUES (0)")
        .execute(&sqlite)
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    let read: i64 = on_tx!(&mut tx, |c| sqlx::query_scalar("SELECT n FROM counters")
        .fetch_one(&mut **c)
        .await)
    .unwrap();
    // Another connection of the pool writes while the transaction holds what it read.
    let other = {
        let sqlite = sqlite.clone();
        tokio::spawn(async move {
            sqlx::query("UPDATE counters SET n = n + 10")
                .execute(&sqlite)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !other.is_finished(),
        "the other writer waits for the transaction's lock"
    );
    on_tx!(&mut tx, |c| sqlx::query("UPDATE counters SET n = $1")
        .bind(read + 1)
        .execute(&mut **c)
        .await
        .map(drop))
    .expect("the transaction writes what it read, beside the other writer");
    tx.commit().await.unwrap();
    other
        .await
        .unwrap()
        .expect("the other writer commits after it");
    let n: i64 = sqlx::query_scalar("SELECT n FROM counters")
        .fetch_one(&sqlite)
        .await
        .unwrap();
    assert_eq!(n, 11, "both writes are kept");
}

/// A read-only transaction takes no lock: writers commit beside it, and it keeps
/// reading its snapshot.
#[tokio::test]
async fn a_read_transaction_leaves_writers_free() {
    let (_database, pool, sqlite) = pool_with("read-snapshot", "notes (body TEXT)").await;
    let count = "SELECT count(*) FROM notes";

    let mut read = pool.begin_read().await.unwrap();
    let before: i64 = on_tx!(&mut read, |c| sqlx::query_scalar(count)
        .fetch_one(&mut **c)
        .await)
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("INSERT INTO notes VALUES ('written meanwhile')").execute(&sqlite),
    )
    .await
    .expect("a writer does not wait for a reader")
    .unwrap();
    let again: i64 = on_tx!(&mut read, |c| sqlx::query_scalar(count)
        .fetch_one(&mut **c)
        .await)
    .unwrap();
    assert_eq!((before, again), (0, 0), "the reader keeps its snapshot");
    drop(read);
}
