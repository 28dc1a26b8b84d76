//! SQLite pools: the page size a database is made with, and the one-connection writer
//! pool a store keeps beside its main pool for its hot write path.

use platform::{
    sql::{SQLITE_PAGE_SIZE, connect_sqlite, connect_sqlite_paged, connect_sqlite_writer},
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
