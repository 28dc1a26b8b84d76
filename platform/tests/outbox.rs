//! The outbox relay against both databases: every committed event reaches the bus once,
//! in order, and leaves the table only after the bus confirmed it.

use async_trait::async_trait;
use platform::{
    events::{BusError, Event, EventBus, InProcessBus, Published, outbox},
    shutdown::Shutdown,
    sql::Pool,
    testing::TestPostgres,
};
use proto::events::v1::{MessageRead, envelope::Payload};
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use uuid::Uuid;

const POSTGRES_TABLE: &str = "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, \
     event_id UUID NOT NULL UNIQUE, routing_key TEXT NOT NULL, payload BYTEA NOT NULL, \
     created_at TIMESTAMPTZ NOT NULL)";
const SQLITE_TABLE: &str = "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     event_id BLOB NOT NULL UNIQUE, routing_key TEXT NOT NULL, payload BLOB NOT NULL, \
     created_at TEXT NOT NULL)";

fn event() -> Event {
    Event::new(
        "test",
        Payload::MessageRead(MessageRead {
            conversation_id: Uuid::now_v7().to_string(),
            user_id: Uuid::now_v7().to_string(),
            up_to: Uuid::now_v7().to_string(),
        }),
    )
}

async fn insert(pool: &Pool, events: &[Event]) {
    match pool {
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("a transaction");
            for event in events {
                outbox::insert(event)
                    .execute(&mut *tx)
                    .await
                    .expect("inserted");
            }
            tx.commit().await.expect("committed");
        }
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin().await.expect("a transaction");
            for event in events {
                outbox::insert(event)
                    .execute(&mut *tx)
                    .await
                    .expect("inserted");
            }
            tx.commit().await.expect("committed");
        }
    }
}

async fn left(pool: &Pool) -> i64 {
    const SQL: &str = "SELECT COUNT(*) FROM outbox";
    match pool {
        Pool::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        Pool::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
    }
    .expect("counted")
}

async fn sqlite() -> (Pool, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("microchat-outbox-{}", Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", dir.join("outbox.db").display());
    let pool = platform::sql::connect_sqlite(&url)
        .await
        .expect("SQLite opens");
    sqlx::query(SQLITE_TABLE)
        .execute(&pool)
        .await
        .expect("table");
    (Pool::Sqlite(pool), dir)
}

async fn postgres() -> Option<(Pool, TestPostgres)> {
    let database = TestPostgres::create().await?;
    let pool = platform::sql::connect_postgres(&database.url, 8)
        .await
        .expect("PostgreSQL opens");
    sqlx::query(POSTGRES_TABLE)
        .execute(&pool)
        .await
        .expect("table");
    Some((Pool::Postgres(pool), database))
}

/// A bus that refuses while `down` is set, else forwards to an in-process bus.
struct Flaky {
    down: AtomicBool,
    inner: InProcessBus,
}

#[async_trait]
impl EventBus for Flaky {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("down for the test".into()));
        }
        self.inner.publish(events).await
    }
}

async fn relays_in_order_and_keeps_rows_until_confirmed(pool: Pool) {
    let inner = InProcessBus::default();
    let mut queue = inner.bind(&["#"], 10_000);
    let bus = Arc::new(Flaky {
        down: AtomicBool::new(true),
        inner,
    });
    let events: Vec<Event> = (0..600).map(|_| event()).collect();
    insert(&pool, &events).await;
    let relay = outbox::Relay::new(
        pool.clone(),
        Arc::clone(&bus) as Arc<dyn EventBus>,
        outbox::OutboxWaker::default(),
        "test",
    );
    assert!(relay.relay_batch().await.is_err(), "the bus is down");
    assert_eq!(left(&pool).await, 600, "nothing leaves unconfirmed");
    bus.down.store(false, Ordering::SeqCst);
    let mut relayed = 0;
    while relayed < events.len() {
        let batch = relay.relay_batch().await.expect("the bus is back");
        assert!(batch > 0, "rows remain");
        relayed += batch;
    }
    assert_eq!(relay.relay_batch().await.expect("nothing left"), 0);
    assert_eq!(left(&pool).await, 0);
    for expected in &events {
        let got = queue.recv().await.expect("delivered");
        assert_eq!(got.event_id, expected.id, "in commit order");
        assert_eq!(got.payload, expected.payload);
    }
    assert!(queue.try_recv().is_err(), "each event once");
}

#[tokio::test]
async fn sqlite_relay_delivers_in_order_and_keeps_rows_until_confirmed() {
    let (pool, dir) = sqlite().await;
    relays_in_order_and_keeps_rows_until_confirmed(pool).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_relay_delivers_in_order_and_keeps_rows_until_confirmed() {
    let Some((pool, _database)) = postgres().await else {
        return;
    };
    relays_in_order_and_keeps_rows_until_confirmed(pool).await;
}

#[tokio::test]
async fn two_postgres_relays_deliver_every_event_exactly_once() {
    let Some((pool, _database)) = postgres().await else {
        return;
    };
    let bus = InProcessBus::default();
    let mut queue = bus.bind(&["#"], 100_000);
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    let shutdown = Shutdown::new();
    let wakers = [
        outbox::OutboxWaker::default(),
        outbox::OutboxWaker::default(),
    ];
    let relays: Vec<_> = wakers
        .iter()
        .map(|waker| {
            tokio::spawn(
                outbox::Relay::new(pool.clone(), Arc::clone(&bus), waker.clone(), "test")
                    .run(shutdown.clone()),
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let events: Vec<Event> = (0..100).map(|_| event()).collect();
        ids.extend(events.iter().map(|event| event.id));
        insert(&pool, &events).await;
        for waker in &wakers {
            waker.wake();
        }
    }
    let mut seen = HashSet::new();
    while seen.len() < ids.len() {
        let got = tokio::time::timeout(Duration::from_secs(10), queue.recv())
            .await
            .expect("every event arrives")
            .expect("the bus is open");
        assert!(
            seen.insert(got.event_id),
            "{} delivered twice",
            got.event_id
        );
    }
    assert_eq!(seen, ids);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(queue.try_recv().is_err(), "nothing more");
    assert_eq!(left(&pool).await, 0);
    shutdown.cancel();
    for relay in relays {
        relay.await.expect("the relay stops");
    }
}
