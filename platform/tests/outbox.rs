//! The outbox relay against both databases: every committed event reaches the bus once,
//! in commit order, and leaves the table only after the bus confirmed it. Each behaviour
//! is one function over a [`TestOutbox`]; `on_both_backends!` runs it on a SQLite file
//! and on a PostgreSQL database of its own (`sqlite::<behaviour>`, `postgres::<behaviour>`).
//! Without a reachable PostgreSQL the `postgres::` tests say they are skipped (outside CI).

use async_trait::async_trait;
use platform::{
    events::{
        BusError, Event, EventBus, Published,
        outbox::{self, Outbox, OutboxWaker, Relay},
    },
    shutdown::Shutdown,
    sql::Pool,
    testing::TestDatabase,
};
use proto::events::v1::{MessageRead, MessageSent, UserRegistered, envelope::Payload};
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The table producers create, taken from a producer's migrations so that the relay is
/// tested against the schema that ships (every producer's outbox table is the same).
/// The outbox's own migration alone, as version 1 of an empty sequence.
fn migrator(backend: platform::sql::Backend) -> sqlx::migrate::Migrator {
    outbox::with_migration(sqlx::migrate::Migrator::DEFAULT, backend, 1)
}

/// An empty outbox table in a database that lives as long as this does.
struct TestOutbox {
    pool: Pool,
    _database: TestDatabase,
}

impl TestOutbox {
    /// An outbox in a fresh SQLite file.
    async fn sqlite() -> Self {
        let database = TestDatabase::sqlite("outbox");
        let pool = platform::sql::connect_sqlite(database.url())
            .await
            .expect("a fresh SQLite file opens");
        migrator(platform::sql::Backend::Sqlite)
            .run(&pool)
            .await
            .expect("the outbox table is created");
        Self {
            pool: Pool::Sqlite(platform::sql::Sqlite::new(pool)),
            _database: database,
        }
    }

    /// An outbox in a fresh PostgreSQL database; `None` when no server answers (outside CI).
    async fn postgres() -> Option<Self> {
        let database = TestDatabase::postgres().await?;
        let pool = platform::sql::connect_postgres(database.url(), 8)
            .await
            .expect("a fresh PostgreSQL database opens");
        migrator(platform::sql::Backend::Postgres)
            .run(&pool)
            .await
            .expect("the outbox table is created");
        Some(Self {
            pool: Pool::Postgres(pool),
            _database: database,
        })
    }

    /// Commits `events` in one transaction, as a producer does with its state change.
    async fn commit(&self, events: &[Event]) {
        let mut tx = self.pool.begin().await.expect("a transaction begins");
        for event in events {
            platform::on_tx!(&mut tx, |tx| {
                outbox::insert(event).execute(&mut **tx).await.map(drop)
            })
            .expect("the event is inserted");
        }
        tx.commit().await.expect("the transaction commits");
    }

    /// The ids of the events still in the table, in commit order.
    async fn pending(&self) -> Vec<Uuid> {
        let rows = Outbox::new(self.pool.clone())
            .rows()
            .await
            .expect("the outbox is readable");
        rows.into_iter().map(|(id, _, _)| id).collect()
    }

    /// A relay of this outbox to `bus`.
    fn relay(&self, bus: Arc<dyn EventBus>) -> Relay {
        Relay::new(
            Outbox::new(self.pool.clone()),
            bus,
            OutboxWaker::default(),
            "test",
        )
    }
}

/// One `#[tokio::test]` per behaviour and backend.
macro_rules! on_both_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(&super::TestOutbox::sqlite().await).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(outbox) = super::TestOutbox::postgres().await else {
                        eprintln!(
                            "skipped postgres::{}: PostgreSQL is not reachable",
                            stringify!($behaviour)
                        );
                        return;
                    };
                    super::$behaviour(&outbox).await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_event_is_published_once_in_commit_order_then_deleted,
    events_wait_in_the_outbox_while_the_bus_is_down,
    a_batch_the_bus_only_partly_took_is_published_again_whole,
);

// ---------------------------------------------------------------------------------------
// Test data and buses

/// `n` events of the three shapes producers write, so routing keys differ.
fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let id = Uuid::now_v7().to_string();
            let payload = match i % 3 {
                0 => Payload::UserRegistered(UserRegistered {
                    user_id: id,
                    username: format!("user{i}"),
                    email: format!("user{i}@example.com"),
                    verify_token: String::new(),
                }),
                1 => Payload::MessageSent(MessageSent {
                    message_id: id,
                    conversation_id: Uuid::now_v7().to_string(),
                    sender_id: Uuid::now_v7().to_string(),
                    body_chars: 5,
                }),
                _ => Payload::MessageRead(MessageRead {
                    conversation_id: Uuid::now_v7().to_string(),
                    user_id: Uuid::now_v7().to_string(),
                    up_to: id,
                }),
            };
            Event::new("test", payload)
        })
        .collect()
}

/// What the bus should receive for `events`: each one as the outbox holds it.
fn published(events: &[Event]) -> Vec<Published> {
    events
        .iter()
        .map(|event| Published {
            event_id: event.id,
            routing_key: event.routing_key.to_owned(),
            payload: event.payload.clone(),
        })
        .collect()
}

fn ids(events: &[Event]) -> Vec<Uuid> {
    events.iter().map(|event| event.id).collect()
}

/// A bus that hands every event it takes to one queue, as a queue bound to `#` would.
struct ChannelBus(mpsc::UnboundedSender<Published>);

#[async_trait]
impl EventBus for ChannelBus {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        for event in events {
            self.0
                .send(event.clone())
                .map_err(|_| BusError::Unavailable("the test's queue is gone".into()))?;
        }
        Ok(())
    }
}

/// A bus with one queue bound to every routing key.
fn bus_with_queue() -> (Arc<dyn EventBus>, mpsc::UnboundedReceiver<Published>) {
    let (sender, queue) = mpsc::unbounded_channel();
    (Arc::new(ChannelBus(sender)), queue)
}

/// Everything a queue holds now.
fn received(queue: &mut mpsc::UnboundedReceiver<Published>) -> Vec<Published> {
    std::iter::from_fn(|| queue.try_recv().ok()).collect()
}

/// Relays batches until the outbox is empty; returns how many events went.
async fn relay_all(relay: &Relay) -> usize {
    let mut relayed = 0;
    loop {
        match relay.relay_batch().await.expect("the bus takes the batch") {
            0 => return relayed,
            batch => relayed += batch,
        }
    }
}

/// A bus that cannot be reached.
struct DownBus;

#[async_trait]
impl EventBus for DownBus {
    async fn publish(&self, _events: &[Published]) -> Result<(), BusError> {
        Err(BusError::Unavailable("down for the test".into()))
    }
}

/// A bus that takes the first `takes` events of a batch, then refuses the rest (a nack
/// in the middle of a batch).
struct PartBus {
    takes: usize,
    inner: Arc<dyn EventBus>,
}

#[async_trait]
impl EventBus for PartBus {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        self.inner.publish(&events[..self.takes]).await?;
        Err(BusError::Refused("nacked for the test".into()))
    }
}

// ---------------------------------------------------------------------------------------
// Behaviours

async fn every_event_is_published_once_in_commit_order_then_deleted(outbox: &TestOutbox) {
    // More than one batch, over several transactions.
    let events = events(700);
    for chunk in events.chunks(250) {
        outbox.commit(chunk).await;
    }
    assert_eq!(outbox.pending().await, ids(&events));
    let (bus, mut queue) = bus_with_queue();
    let relay = outbox.relay(bus);

    assert_eq!(relay_all(&relay).await, events.len());
    assert_eq!(received(&mut queue), published(&events));
    assert!(
        outbox.pending().await.is_empty(),
        "published rows are deleted"
    );

    // Only rows committed since are published next.
    let later = self::events(3);
    outbox.commit(&later).await;
    assert_eq!(relay_all(&relay).await, 3);
    assert_eq!(received(&mut queue), published(&later));
    assert!(outbox.pending().await.is_empty());
}

async fn events_wait_in_the_outbox_while_the_bus_is_down(outbox: &TestOutbox) {
    let events = events(40);
    outbox.commit(&events).await;
    let down = outbox.relay(Arc::new(DownBus));
    for _ in 0..2 {
        assert!(down.relay_batch().await.is_err(), "the bus is down");
        assert_eq!(
            outbox.pending().await,
            ids(&events),
            "nothing leaves unconfirmed"
        );
    }

    // The bus is back (here: another relay, as after a restart).
    let (bus, mut queue) = bus_with_queue();
    assert_eq!(relay_all(&outbox.relay(bus)).await, events.len());
    assert_eq!(received(&mut queue), published(&events));
    assert!(outbox.pending().await.is_empty());
}

async fn a_batch_the_bus_only_partly_took_is_published_again_whole(outbox: &TestOutbox) {
    let events = events(10);
    outbox.commit(&events).await;
    let (bus, mut queue) = bus_with_queue();
    let partly = outbox.relay(Arc::new(PartBus {
        takes: 4,
        inner: Arc::clone(&bus),
    }));
    assert!(
        partly.relay_batch().await.is_err(),
        "the bus refused part of it"
    );
    assert_eq!(outbox.pending().await, ids(&events), "every row stays");
    assert_eq!(received(&mut queue), published(&events[..4]));

    // At least once: the first four arrive again, consumers de-duplicate by event id.
    assert_eq!(relay_all(&outbox.relay(bus)).await, events.len());
    assert_eq!(received(&mut queue), published(&events));
    assert!(outbox.pending().await.is_empty());
}

/// A bus that takes its time over each batch (so that two relays' batches overlap) and
/// counts what it was given.
struct SlowBus {
    inner: Arc<dyn EventBus>,
    published: AtomicUsize,
}

#[async_trait]
impl EventBus for SlowBus {
    async fn publish(&self, events: &[Published]) -> Result<(), BusError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.publish(events).await?;
        self.published.fetch_add(events.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn two_postgres_relays_deliver_every_event_exactly_once() {
    let Some(outbox) = TestOutbox::postgres().await else {
        eprintln!("skipped two_postgres_relays_deliver_every_event_exactly_once: no PostgreSQL");
        return;
    };
    let (bus, mut queue) = bus_with_queue();
    let buses: Vec<Arc<SlowBus>> = (0..2)
        .map(|_| {
            Arc::new(SlowBus {
                inner: Arc::clone(&bus),
                published: AtomicUsize::new(0),
            })
        })
        .collect();
    // A backlog both relays start on, then commits that keep coming while they work.
    let mut expected: HashSet<Uuid> = HashSet::new();
    let backlog = events(1_000);
    expected.extend(ids(&backlog));
    outbox.commit(&backlog).await;

    let shutdown = Shutdown::new();
    let wakers = [OutboxWaker::default(), OutboxWaker::default()];
    let relays: Vec<_> = wakers
        .iter()
        .zip(&buses)
        .map(|(waker, bus)| {
            let bus = Arc::clone(bus) as Arc<dyn EventBus>;
            let relay = Relay::new(Outbox::new(outbox.pool.clone()), bus, waker.clone(), "test");
            tokio::spawn(relay.run(shutdown.clone()))
        })
        .collect();
    for _ in 0..20 {
        let events = events(50);
        expected.extend(ids(&events));
        outbox.commit(&events).await;
        wakers.iter().for_each(OutboxWaker::wake);
    }

    let mut seen = HashSet::new();
    while seen.len() < expected.len() {
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
    assert_eq!(seen, expected);
    // Another poll of both relays later, still nothing more.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(
        received(&mut queue).is_empty(),
        "nothing is delivered twice"
    );
    assert!(outbox.pending().await.is_empty());
    let shares: Vec<usize> = buses
        .iter()
        .map(|bus| bus.published.load(Ordering::SeqCst))
        .collect();
    assert!(
        shares.iter().all(|&share| share > 0),
        "both relays worked: {shares:?}"
    );

    shutdown.cancel();
    for relay in relays {
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("a relay stops at shutdown")
            .expect("a relay does not panic");
    }
}

/// The outbox migration's checksum, as databases migrated with the producers' own copies
/// of it (auth's version 3, chat's version 2, before it moved here) recorded it: a change
/// to the file would make every such database refuse to start.
#[test]
fn the_outbox_migration_keeps_the_checksum_databases_recorded() {
    const RECORDED: [(platform::sql::Backend, &str); 2] = [
        (
            platform::sql::Backend::Postgres,
            "15b79c33e2623dbe13bd9050488643a570dd197eabfd7b913e2d6537ee2b754bf392090190d35ea176fc20dd1b3cc710",
        ),
        (
            platform::sql::Backend::Sqlite,
            "eb11146bdb7391076e8d78c873411258f3cae41bd78378c724efd227bfac06a2c2ed88975a0183c56c65bf51c9ad6dbb",
        ),
    ];
    for (backend, recorded) in RECORDED {
        let migrator = migrator(backend);
        let migration = &migrator.migrations[0];
        let checksum: String = migration
            .checksum
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(checksum, recorded, "{backend:?}");
        assert_eq!(migration.description, "outbox");
    }
}

/// The outbox's migration takes its place in the producer's sequence.
#[test]
fn the_outbox_migration_is_ordered_among_the_producers_own() {
    let own = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            [1, 3]
                .into_iter()
                .map(|version| {
                    sqlx::migrate::Migration::new(
                        version,
                        "own".into(),
                        sqlx::migrate::MigrationType::Simple,
                        "SELECT 1".into(),
                        false,
                    )
                })
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    let merged = outbox::with_migration(own, platform::sql::Backend::Sqlite, 2);
    let versions: Vec<i64> = merged.migrations.iter().map(|m| m.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(merged.migrations[1].description, "outbox");
}
