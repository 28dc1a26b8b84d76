//! SQLite pools: the page size a database is made with, and the one-connection writer
//! pool a store keeps beside its main pool for its hot write path.

use std::time::Duration;

use platform::{
    on_tx,
    sql::{
        Pool, SQLITE_PAGE_SIZE, Sqlite, connect_sqlite, connect_sqlite_paged, connect_sqlite_writer,
    },
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
    (database, Pool::Sqlite(Sqlite::new(sqlite.clone())), sqlite)
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

/// Inserts `name` into `log` in a transaction of `pool` (begun with [`Pool::begin`]).
async fn log_in_turn(pool: &Pool, name: &str) {
    let mut tx = pool.begin().await.expect("the writer gets its turn");
    on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO log (name) VALUES ($1)"
    )
    .bind(name)
    .execute(&mut **c)
    .await
    .map(drop))
    .unwrap();
    tx.commit().await.unwrap();
}

/// Lets every spawned task run until it waits (the tests run on one thread).
async fn let_the_others_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// SQLite lets one connection write at a time, and one that finds the lock taken sleeps
/// in the busy handler and tries again, so whoever wakes first writes next (a login
/// storm's writers slept there 1,200 times a second). The process's writers of one
/// database take turns in the order they asked instead, whichever pool they are on:
/// a store's one-connection writer pool takes the same turns as its main pool.
#[tokio::test]
async fn writers_of_one_database_take_turns_in_the_order_they_asked() {
    let (database, pool, sqlite) = pool_with(
        "turns",
        "log (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)",
    )
    .await;
    let Pool::Sqlite(main) = &pool else {
        unreachable!("pool_with opens SQLite")
    };
    let writer = connect_sqlite_writer(database.url(), SQLITE_PAGE_SIZE)
        .await
        .unwrap()
        .expect("a database file gets a writer pool");
    let writer = Pool::Sqlite(main.beside(writer));

    let first = pool.begin().await.unwrap();
    let mut waiting = Vec::new();
    for (index, name) in ["b", "c", "d", "e", "f"].into_iter().enumerate() {
        // Every other one on the writer pool.
        let on = if index % 2 == 0 { &pool } else { &writer }.clone();
        waiting.push(tokio::spawn(async move { log_in_turn(&on, name).await }));
        let_the_others_run().await;
    }
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "nobody writes while the first transaction is open"
    );
    drop(first);
    for task in waiting {
        task.await.unwrap();
    }
    let order: Vec<String> = sqlx::query_scalar("SELECT name FROM log ORDER BY seq")
        .fetch_all(&sqlite)
        .await
        .unwrap();
    assert_eq!(order, ["b", "c", "d", "e", "f"], "in the order they asked");
}

/// A transaction dropped without a commit rolls back and gives its turn to the next
/// writer, whose transaction commits.
#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_passes_the_turn_on() {
    let (_database, pool, sqlite) = pool_with(
        "dropped",
        "log (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)",
    )
    .await;
    let mut abandoned = pool.begin().await.unwrap();
    on_tx!(&mut abandoned, |c| sqlx::query(
        "INSERT INTO log (name) VALUES ('abandoned')"
    )
    .execute(&mut **c)
    .await
    .map(drop))
    .unwrap();
    let next = {
        let pool = pool.clone();
        tokio::spawn(async move { log_in_turn(&pool, "next").await })
    };
    let_the_others_run().await;
    drop(abandoned);
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the next writer gets the turn")
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM log ORDER BY seq")
        .fetch_all(&sqlite)
        .await
        .unwrap();
    assert_eq!(names, ["next"]);
}

/// A writer that does not get its turn within SQLite's busy timeout (5 s) is refused as
/// unavailable (a 503 and a later retry for its caller), as SQLite refused it before.
#[tokio::test]
async fn a_writer_kept_waiting_past_the_busy_timeout_is_refused_as_unavailable() {
    let (_database, pool, _sqlite) = pool_with("timeout", "log (name TEXT)").await;
    let holder = pool.begin().await.unwrap();
    tokio::time::pause();
    let refused = pool
        .begin()
        .await
        .expect_err("no turn while another transaction holds it");
    assert!(
        platform::sql::is_unavailable(&refused),
        "unavailable, not a failure of the request: {refused}"
    );
    let refused = pool
        .write_turn()
        .await
        .expect_err("a single statement waits for the same turn");
    assert!(platform::sql::is_unavailable(&refused));
    tokio::time::resume();
    drop(holder);
    log_in_turn(&pool, "after").await;
}
