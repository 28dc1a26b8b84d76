//! The log store contract, written once and checked against both adapters: SQLite (the
//! embedded run) and MongoDB (dev stack, cluster; here a SecantusDB server, which speaks
//! MongoDB's wire protocol, installed by scripts/test-tools.sh). Each behaviour is one
//! function over `&dyn LogStore`; `on_both_stores!` gives it a `#[tokio::test]` per store
//! (`sqlite::<behaviour>` and `mongo::<behaviour>`), each on a database of its own.
//! Without the server installed the `mongo::` tests say they are skipped (outside CI).

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use logger::{
    domain::{Cursor, Level, LogEntry, LogQuery, RawEntry, floor_millis},
    store::{LogStore, MongoLogStore, QUERY_INDEXES, SqliteLogStore, TTL_INDEX},
};
use mongodb::bson::{Bson, doc};
use platform::testing::MongoServer;
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use uuid::Uuid;

const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "microchat-logger-store-{}",
            Uuid::new_v4().simple()
        ));
        Self(dir)
    }

    fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.0.join("logs.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store on a database that lives as long as this does.
struct TestStore {
    store: Arc<dyn LogStore>,
    _database: Database,
}

enum Database {
    Sqlite(#[allow(dead_code)] TempDir),
    Mongo(#[allow(dead_code)] MongoServer),
}

impl TestStore {
    async fn sqlite() -> Self {
        let dir = TempDir::new();
        let store = SqliteLogStore::connect(&dir.sqlite_url())
            .await
            .expect("a fresh SQLite file opens and migrates");
        Self {
            store: Arc::new(store),
            _database: Database::Sqlite(dir),
        }
    }

    /// `None` when the server is not installed (outside CI).
    async fn mongo() -> Option<Self> {
        let (server, store) = mongo_store(RETENTION).await?;
        Some(Self {
            store: Arc::new(store),
            _database: Database::Mongo(server),
        })
    }
}

async fn mongo_store(retention: Duration) -> Option<(MongoServer, MongoLogStore)> {
    let server = MongoServer::start().await.expect("SecantusDB starts")?;
    let store = MongoLogStore::connect(&server.url(), "logs", retention)
        .await
        .expect("the store connects and creates its indexes");
    Some((server, store))
}

/// One `#[tokio::test]` per behaviour and store.
macro_rules! on_both_stores {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let store = super::TestStore::sqlite().await;
                    super::$behaviour(store.store.clone()).await;
                }
            )*
        }

        mod mongo {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(store) = super::TestStore::mongo().await else {
                        eprintln!("skipped mongo::{}: SecantusDB is not installed", stringify!($behaviour));
                        return;
                    };
                    super::$behaviour(store.store.clone()).await;
                }
            )*
        }
    };
}

on_both_stores!(
    an_entry_reads_back_as_written,
    an_entry_written_again_under_its_id_is_stored_once,
    an_empty_store_has_an_empty_page,
    entries_come_newest_first_with_the_id_breaking_ties,
    each_filter_narrows_the_result,
    filters_combine,
    time_range_includes_since_and_excludes_until,
    limit_bounds_the_page_and_the_last_page_has_no_cursor,
    pages_show_each_entry_once_while_entries_arrive,
    a_full_batch_of_large_entries_is_stored,
    data_keys_with_dots_and_dollars_read_back,
    purge_removes_only_older_entries,
    ping_answers,
);

/// A moment well in the past, to the millisecond, so tests can place entries around it.
fn base_time() -> DateTime<Utc> {
    floor_millis(Utc::now() - TimeDelta::days(1))
}

fn raw(name: &str, level: Level, service: &str, at: DateTime<Utc>) -> RawEntry {
    RawEntry {
        id: String::new(),
        name: name.to_owned(),
        data: String::new(),
        level: Some(level),
        service: service.to_owned(),
        user_id: String::new(),
        trace_id: String::new(),
        created_at: Some(at),
    }
}

fn entry(raw: &RawEntry) -> LogEntry {
    LogEntry::parse(raw, Utc::now()).expect("a valid test entry")
}

/// Every entry of a query, following cursors.
async fn all_pages(store: &dyn LogStore, mut query: LogQuery) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    loop {
        let page = store.query(&query).await.expect("query");
        entries.extend(page.entries);
        match page.next {
            Some(cursor) => query.after = Some(cursor),
            None => return entries,
        }
    }
}

fn ids(entries: &[LogEntry]) -> Vec<Uuid> {
    entries.iter().map(|entry| entry.id).collect()
}

/// What the store should answer to `query` over `entries`: the matching ones, newest first.
fn expected(entries: &[LogEntry], query: &LogQuery) -> Vec<Uuid> {
    let mut matching: Vec<&LogEntry> = entries
        .iter()
        .filter(|entry| query.matches(entry))
        .collect();
    matching.sort_by_key(|entry| std::cmp::Reverse((entry.created_at, entry.id)));
    matching.iter().map(|entry| entry.id).collect()
}

const USERS: [&str; 2] = [
    "0190b6b4-3f6e-7a3c-9c39-2f1ab0c2d3e4",
    "0190b6b4-3f6e-7a3c-9c39-2f1ab0c2d3e5",
];
const TRACES: [&str; 2] = [
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7a3ce929d0e0e4736",
];

/// Sixty entries across services, levels, users, traces and two minutes.
fn varied_entries() -> Vec<LogEntry> {
    let base = base_time();
    let services = ["auth", "chat", "mail"];
    (0..60)
        .map(|i: usize| {
            let mut raw = raw(
                &format!("event {i}"),
                Level::ALL[i % 5],
                services[i % 3],
                base + TimeDelta::seconds(2 * i64::try_from(i).expect("sixty entries")),
            );
            if !i.is_multiple_of(4) {
                USERS[i % 2].clone_into(&mut raw.user_id);
            }
            if i % 3 != 1 {
                TRACES[i % 2].clone_into(&mut raw.trace_id);
            }
            entry(&raw)
        })
        .collect()
}

async fn an_entry_reads_back_as_written(store: Arc<dyn LogStore>) {
    let written = entry(&RawEntry {
        data: r#"{"username":"ada","attempts":3,"ratio":0.25,"tags":["a","b"],"nested":{"ok":true,"none":null},"text":"héllo ✓"}"#.to_owned(),
        user_id: USERS[0].to_owned(),
        trace_id: TRACES[0].to_owned(),
        ..raw("user registered", Level::Info, "auth", base_time())
    });
    store
        .insert(std::slice::from_ref(&written))
        .await
        .expect("insert");
    let page = store.query(&LogQuery::default()).await.expect("query");
    assert_eq!(page.entries, vec![written]);
    assert_eq!(page.next, None);
}

/// Delivery is at least once: the listener writes a redelivered event's audit entry
/// again, under the event's id, and the store keeps the first one — also when the copy
/// shares a batch with new entries, which are stored.
async fn an_entry_written_again_under_its_id_is_stored_once(store: Arc<dyn LogStore>) {
    const EVENT_ID: &str = "01a23f0c-4370-76fc-b507-dbf82e2a6b82";
    let first = entry(&RawEntry {
        id: EVENT_ID.to_owned(),
        ..raw("audit message.sent", Level::Info, "listener", base_time())
    });
    assert_eq!(first.id.to_string(), EVENT_ID, "the writer's id is kept");
    store
        .insert(std::slice::from_ref(&first))
        .await
        .expect("insert");
    let again = entry(&RawEntry {
        id: EVENT_ID.to_owned(),
        ..raw(
            "audit message.sent (again)",
            Level::Info,
            "listener",
            base_time() + TimeDelta::seconds(1),
        )
    });
    let new = entry(&raw(
        "audit message.read",
        Level::Info,
        "listener",
        base_time() + TimeDelta::seconds(2),
    ));
    store
        .insert(&[again.clone(), new.clone()])
        .await
        .expect("a batch holding an id stored before is not an error");
    store
        .insert(&[again])
        .await
        .expect("nor is a batch of only that");
    let stored = all_pages(&*store, LogQuery::default()).await;
    assert_eq!(
        stored,
        vec![new, first],
        "the first entry of the id, once, and the new one"
    );
}

async fn an_empty_store_has_an_empty_page(store: Arc<dyn LogStore>) {
    let page = store.query(&LogQuery::default()).await.expect("query");
    assert!(page.entries.is_empty());
    assert_eq!(page.next, None);
}

async fn entries_come_newest_first_with_the_id_breaking_ties(store: Arc<dyn LogStore>) {
    let base = base_time();
    let entries: Vec<LogEntry> = (0..12)
        .map(|i| {
            entry(&raw(
                &format!("e{i}"),
                Level::Info,
                "chat",
                base + TimeDelta::milliseconds(i % 3),
            ))
        })
        .collect();
    store.insert(&entries).await.expect("insert");
    let page = store.query(&LogQuery::default()).await.expect("query");
    assert_eq!(ids(&page.entries), expected(&entries, &LogQuery::default()));
    let keys: Vec<_> = page.entries.iter().map(|e| (e.created_at, e.id)).collect();
    assert!(
        keys.windows(2).all(|pair| pair[0] > pair[1]),
        "strictly newest first"
    );
}

async fn each_filter_narrows_the_result(store: Arc<dyn LogStore>) {
    let entries = varied_entries();
    store.insert(&entries).await.expect("insert");
    let queries = [
        LogQuery {
            service: Some(logger::domain::Service::parse("mail").expect("valid")),
            ..LogQuery::default()
        },
        LogQuery {
            min_level: Some(Level::Warn),
            ..LogQuery::default()
        },
        LogQuery {
            user_id: Some(Uuid::parse_str(USERS[1]).expect("valid")),
            ..LogQuery::default()
        },
        LogQuery {
            trace_id: Some(TRACES[0].parse().expect("valid")),
            ..LogQuery::default()
        },
    ];
    for query in queries {
        let found = ids(&all_pages(store.as_ref(), query.clone()).await);
        let wanted = expected(&entries, &query);
        assert!(
            !wanted.is_empty() && wanted.len() < entries.len(),
            "{query:?} narrows"
        );
        assert_eq!(found, wanted, "{query:?}");
    }
    let lowest = LogQuery {
        min_level: Some(Level::Trace),
        limit: 500,
        ..LogQuery::default()
    };
    assert_eq!(
        store.query(&lowest).await.expect("query").entries.len(),
        entries.len()
    );
}

async fn filters_combine(store: Arc<dyn LogStore>) {
    let entries = varied_entries();
    store.insert(&entries).await.expect("insert");
    let query = LogQuery {
        service: Some(logger::domain::Service::parse("auth").expect("valid")),
        min_level: Some(Level::Debug),
        user_id: Some(Uuid::parse_str(USERS[0]).expect("valid")),
        trace_id: Some(TRACES[0].parse().expect("valid")),
        since: Some(base_time() + TimeDelta::seconds(10)),
        until: Some(base_time() + TimeDelta::seconds(100)),
        limit: 3,
        after: None,
    };
    let wanted = expected(&entries, &query);
    assert!(!wanted.is_empty());
    assert_eq!(ids(&all_pages(store.as_ref(), query).await), wanted);
}

async fn time_range_includes_since_and_excludes_until(store: Arc<dyn LogStore>) {
    let entries = varied_entries();
    store.insert(&entries).await.expect("insert");
    let (since, until) = (entries[10].created_at, entries[20].created_at);
    let query = LogQuery {
        since: Some(since),
        until: Some(until),
        ..LogQuery::default()
    };
    let found = all_pages(store.as_ref(), query.clone()).await;
    assert_eq!(ids(&found), expected(&entries, &query));
    assert_eq!(found.len(), 10);
    assert_eq!(found.last().map(|e| e.created_at), Some(since));
    assert!(found.iter().all(|e| e.created_at < until));
}

async fn limit_bounds_the_page_and_the_last_page_has_no_cursor(store: Arc<dyn LogStore>) {
    let entries = varied_entries();
    store.insert(&entries[..10]).await.expect("insert");
    let first = store
        .query(&LogQuery {
            limit: 4,
            ..LogQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(first.entries.len(), 4);
    assert_eq!(first.next, first.entries.last().map(Cursor::after));
    let exact = store
        .query(&LogQuery {
            limit: 10,
            ..LogQuery::default()
        })
        .await
        .expect("query");
    assert_eq!((exact.entries.len(), exact.next), (10, None));
    let pages = all_pages(
        store.as_ref(),
        LogQuery {
            limit: 3,
            ..LogQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&pages), expected(&entries[..10], &LogQuery::default()));
}

async fn pages_show_each_entry_once_while_entries_arrive(store: Arc<dyn LogStore>) {
    let base = base_time();
    // Several share a millisecond, so pages must break ties by id.
    let existing: Vec<LogEntry> = (0..120)
        .map(|i| {
            entry(&raw(
                &format!("old {i}"),
                Level::Info,
                "chat",
                base + TimeDelta::milliseconds(i / 4),
            ))
        })
        .collect();
    store.insert(&existing).await.expect("insert");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                let fresh = [
                    entry(&raw("new", Level::Info, "chat", Utc::now())),
                    entry(&raw("new", Level::Info, "chat", Utc::now())),
                ];
                store.insert(&fresh).await.expect("concurrent insert");
                written += fresh.len();
                tokio::task::yield_now().await;
            }
            written
        }
    });

    let mut seen = Vec::new();
    let mut query = LogQuery {
        limit: 7,
        ..LogQuery::default()
    };
    loop {
        let page = store.query(&query).await.expect("query");
        seen.extend(page.entries);
        match page.next {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("the writer ran");
    assert!(written > 0, "entries arrived while paging");

    let unique: HashSet<Uuid> = seen.iter().map(|e| e.id).collect();
    assert_eq!(unique.len(), seen.len(), "no entry shown twice");
    let old: Vec<Uuid> = seen
        .iter()
        .filter(|e| e.name.as_str() != "new")
        .map(|e| e.id)
        .collect();
    assert_eq!(
        old,
        expected(&existing, &LogQuery::default()),
        "every old entry once, in order"
    );
}

async fn a_full_batch_of_large_entries_is_stored(store: Arc<dyn LogStore>) {
    let data = format!(
        r#"{{"blob":"{}"}}"#,
        "x".repeat(logger::domain::MAX_DATA_BYTES - 11)
    );
    assert_eq!(data.len(), logger::domain::MAX_DATA_BYTES);
    let base = base_time();
    let batch: Vec<LogEntry> = (0..logger::domain::MAX_BATCH)
        .map(|i| {
            entry(&RawEntry {
                data: data.clone(),
                ..raw(
                    "big",
                    Level::Debug,
                    "loadgen",
                    base + TimeDelta::milliseconds(i64::try_from(i).expect("a batch's index")),
                )
            })
        })
        .collect();
    store.insert(&batch).await.expect("insert");
    let page = store
        .query(&LogQuery {
            limit: 500,
            ..LogQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(page.entries.len(), 500);
    assert_eq!(page.entries[0], batch[batch.len() - 1]);
    let rest = all_pages(
        store.as_ref(),
        LogQuery {
            limit: 500,
            after: page.next,
            ..LogQuery::default()
        },
    )
    .await;
    assert_eq!(rest.len(), 500);
}

async fn data_keys_with_dots_and_dollars_read_back(store: Arc<dyn LogStore>) {
    let written = entry(&RawEntry {
        data: r#"{"a.b":1,"$money":2,"":3,"deep":{"$oid":"not an id","x.y":[{"$z":0}]}}"#
            .to_owned(),
        ..raw("odd keys", Level::Warn, "chat", base_time())
    });
    store
        .insert(std::slice::from_ref(&written))
        .await
        .expect("insert");
    let page = store.query(&LogQuery::default()).await.expect("query");
    assert_eq!(page.entries, vec![written]);
}

async fn purge_removes_only_older_entries(store: Arc<dyn LogStore>) {
    let entries = varied_entries();
    store.insert(&entries).await.expect("insert");
    let cut = entries[25].created_at;
    let purged = store.purge_older_than(cut).await.expect("purge");
    assert_eq!(purged, 25);
    let left = all_pages(
        store.as_ref(),
        LogQuery {
            limit: 500,
            ..LogQuery::default()
        },
    )
    .await;
    assert_eq!(left.len(), 35);
    assert!(left.iter().all(|e| e.created_at >= cut));
    assert_eq!(store.purge_older_than(cut).await.expect("purge"), 0);
}

async fn ping_answers(store: Arc<dyn LogStore>) {
    store.ping().await.expect("ping");
}

#[tokio::test]
async fn sqlite_schema_has_the_query_indexes_and_reopens() {
    let dir = TempDir::new();
    let first = SqliteLogStore::connect(&dir.sqlite_url())
        .await
        .expect("opens");
    let written = entry(&raw("kept", Level::Info, "auth", base_time()));
    first
        .insert(std::slice::from_ref(&written))
        .await
        .expect("insert");
    drop(first);
    let again = SqliteLogStore::connect(&dir.sqlite_url())
        .await
        .expect("reopens, migrations already applied");
    assert_eq!(
        again
            .query(&LogQuery::default())
            .await
            .expect("query")
            .entries,
        vec![written]
    );

    let pool = platform::sql::connect_sqlite(&dir.sqlite_url())
        .await
        .expect("opens");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'logs'",
    )
    .fetch_all(&pool)
    .await
    .expect("schema");
    for index in [
        "logs_by_time",
        "logs_by_service",
        "logs_by_trace",
        "logs_by_user",
    ] {
        assert!(
            names.iter().any(|name| name == index),
            "{index} in {names:?}"
        );
    }
    // Pages come straight off an index, never sorted in a temporary table.
    for filter in [
        "1 = 1",
        "service = 'auth'",
        "service = 'auth' AND level IN ('warn', 'error')",
        "user_id = x'00'",
        "created_at <= 5 AND (created_at < 5 OR id < x'00')",
    ] {
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
            "EXPLAIN QUERY PLAN SELECT id FROM logs WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT 101"
        ))
        .fetch_all(&pool)
        .await
        .expect("plan");
        let steps: Vec<&str> = plan.iter().map(|step| step.3.as_str()).collect();
        assert!(
            steps.iter().any(|step| step.contains("INDEX")),
            "{filter}: {steps:?}"
        );
        assert!(
            !steps.iter().any(|step| step.contains("TEMP B-TREE")),
            "{filter}: {steps:?}"
        );
    }
}

#[tokio::test]
async fn mongo_collection_has_the_ttl_and_query_indexes() {
    let Some((_server, store)) = mongo_store(RETENTION).await else {
        eprintln!("skipped: SecantusDB is not installed");
        return;
    };
    let names = store
        .collection()
        .list_index_names()
        .await
        .expect("indexes");
    for index in std::iter::once(TTL_INDEX).chain(QUERY_INDEXES) {
        assert!(
            names.iter().any(|name| name == index),
            "{index} in {names:?}"
        );
    }
    let ttl = ttl_index(&store).await;
    assert_eq!(ttl.keys, doc! { "created_at": 1 });
    assert_eq!(
        ttl.options.as_ref().and_then(|o| o.expire_after),
        Some(RETENTION)
    );
}

/// The TTL index of the store's collection, as MongoDB describes it.
async fn ttl_index(store: &MongoLogStore) -> mongodb::IndexModel {
    let indexes: Vec<mongodb::IndexModel> = store
        .collection()
        .list_indexes()
        .await
        .expect("indexes")
        .try_collect()
        .await
        .expect("indexes");
    indexes
        .into_iter()
        .find(|index| index.options.as_ref().and_then(|o| o.name.as_deref()) == Some(TTL_INDEX))
        .expect("the TTL index")
}

#[tokio::test]
async fn mongo_reopened_with_another_retention_moves_the_ttl() {
    let Some((server, _store)) = mongo_store(RETENTION).await else {
        eprintln!("skipped: SecantusDB is not installed");
        return;
    };
    let week = Duration::from_secs(7 * 24 * 3600);
    let store = MongoLogStore::connect(&server.url(), "logs", week)
        .await
        .expect("reopens with a new retention");
    let ttl = ttl_index(&store).await;
    assert_eq!(
        ttl.options.as_ref().and_then(|o| o.expire_after),
        Some(week)
    );
}

#[tokio::test]
async fn mongo_documents_are_browsable() {
    let Some((_server, store)) = mongo_store(RETENTION).await else {
        eprintln!("skipped: SecantusDB is not installed");
        return;
    };
    let with_user = entry(&RawEntry {
        data: r#"{"username":"ada","attempts":3}"#.to_owned(),
        user_id: USERS[0].to_owned(),
        trace_id: TRACES[0].to_owned(),
        ..raw("user registered", Level::Info, "auth", base_time())
    });
    let bare = entry(&raw("started", Level::Warn, "mail", base_time()));
    store
        .insert(&[with_user.clone(), bare.clone()])
        .await
        .expect("insert");

    let found = store
        .collection()
        .find_one(doc! { "_id": with_user.id.to_string() })
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.get_str("name"), Ok("user registered"));
    assert_eq!(found.get_str("level"), Ok("info"));
    assert_eq!(found.get_str("service"), Ok("auth"));
    assert_eq!(found.get_str("user_id"), Ok(USERS[0]));
    assert_eq!(found.get_str("trace_id"), Ok(TRACES[0]));
    assert_eq!(
        found.get_document("data"),
        Ok(&doc! { "username": "ada", "attempts": 3 })
    );
    assert_eq!(
        found
            .get_datetime("created_at")
            .map(|at| at.timestamp_millis()),
        Ok(with_user.created_at.timestamp_millis())
    );
    let found = store
        .collection()
        .find_one(doc! { "_id": bare.id.to_string() })
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.get("user_id"), Some(&Bson::Null));
    assert_eq!(found.get("trace_id"), Some(&Bson::Null));
    assert_eq!(found.get_document("data"), Ok(&doc! {}));
}

#[tokio::test]
async fn mongo_ttl_index_expires_entries_past_the_retention() {
    let Some((_server, store)) = mongo_store(RETENTION).await else {
        eprintln!("skipped: SecantusDB is not installed");
        return;
    };
    let now = Utc::now();
    let expired = entry(&raw(
        "expired",
        Level::Info,
        "auth",
        now - TimeDelta::days(15),
    ));
    let kept = entry(&raw("kept", Level::Info, "auth", now - TimeDelta::days(13)));
    store
        .insert(&[expired, kept.clone()])
        .await
        .expect("insert");
    // The server sweeps its TTL indexes once a minute, as MongoDB does.
    let started = std::time::Instant::now();
    loop {
        let page = store.query(&LogQuery::default()).await.expect("query");
        if page.entries.len() == 1 {
            assert_eq!(page.entries, vec![kept]);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the expired entry is still there"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
