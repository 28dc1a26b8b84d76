//! The embedded durable bus (`events.db`) as its two sides use it: relays publish, one
//! consumer per queue claims and settles. Each test opens a SQLite file of its own; a
//! "restart" is the bus opened again on the same file, the old handles dropped, as after
//! a crash nothing else remains.

use platform::{
    events::{
        BusError, EmbeddedBus, EventBus, Published,
        embedded::{Claimed, EmbeddedQueue},
    },
    testing::TestDatabase,
};
use std::time::Duration;
use uuid::Uuid;

fn event(key: &str) -> Published {
    Published {
        event_id: Uuid::now_v7(),
        routing_key: key.to_owned(),
        payload: format!("payload of {key}").into_bytes(),
    }
}

async fn open(database: &TestDatabase) -> EmbeddedBus {
    EmbeddedBus::open(database.url())
        .await
        .expect("a fresh or sound file opens")
}

async fn bind(bus: &EmbeddedBus, queue: &str, patterns: &[&str]) -> EmbeddedQueue {
    bus.bind(queue, patterns).await.expect("the queue binds")
}

/// Publishes `event` and claims it, as the only event of the queue.
async fn publish_and_claim(bus: &EmbeddedBus, queue: &EmbeddedQueue, event: &Published) -> Claimed {
    bus.publish(std::slice::from_ref(event))
        .await
        .expect("published");
    let mut claimed = queue.claim(1).await.expect("claim");
    assert_eq!(ids(&claimed), [event.event_id]);
    claimed.remove(0)
}

fn keys(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.routing_key.as_str()).collect()
}

fn ids(claimed: &[Claimed]) -> Vec<Uuid> {
    claimed.iter().map(|c| c.event_id).collect()
}

#[tokio::test]
async fn with_no_queue_bound_events_stay_with_the_publisher() {
    let database = TestDatabase::sqlite("events");
    let bus = open(&database).await;
    let refused = bus.publish(&[event("user.registered")]).await;
    assert!(
        matches!(refused, Err(BusError::Unavailable(_))),
        "nothing may take an event no consumer was ever declared for: {refused:?}"
    );
}

#[tokio::test]
async fn events_reach_every_queue_bound_to_their_key_in_order() {
    let database = TestDatabase::sqlite("events");
    let bus = open(&database).await;
    let users = bind(&bus, "users", &["user.*"]).await;
    let everything = bind(&bus, "everything", &["#"]).await;
    let batch = [
        event("user.registered"),
        event("message.sent"),
        event("user.deleted"),
    ];
    bus.publish(&batch).await.expect("the bus takes the batch");

    let to_users = users.claim(10).await.expect("claim");
    assert_eq!(keys(&to_users), ["user.registered", "user.deleted"]);
    assert_eq!(to_users[0].payload, batch[0].payload);
    assert_eq!(to_users[0].attempts, 0);
    let to_all = everything.claim(10).await.expect("claim");
    assert_eq!(
        ids(&to_all),
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(
        users.claim(10).await.expect("claim").is_empty(),
        "a claimed event is not handed out twice"
    );
}

#[tokio::test]
async fn an_event_published_again_while_queued_is_queued_once() {
    let database = TestDatabase::sqlite("events");
    let bus = open(&database).await;
    let queue = bind(&bus, "listener", &["#"]).await;
    let batch = [event("user.registered"), event("user.logged_in")];
    bus.publish(&batch).await.expect("first publication");
    // A relay that died before deleting its outbox rows publishes the batch again.
    bus.publish(&batch).await.expect("second publication");
    assert_eq!(queue.claim(10).await.expect("claim").len(), 2);
    assert_eq!(queue.depth().await.expect("depth"), (2, 0));
}

#[tokio::test]
async fn what_a_dead_consumer_held_is_delivered_again_after_a_restart() {
    let database = TestDatabase::sqlite("events");
    let batch = [event("user.registered"), event("user.logged_out")];
    {
        let bus = open(&database).await;
        let queue = bind(&bus, "listener", &["user.*"]).await;
        bus.publish(&batch).await.expect("published");
        let claimed = queue.claim(10).await.expect("claim");
        assert_eq!(claimed.len(), 2);
        queue
            .ack(&[claimed[0].seq])
            .await
            .expect("the first is done");
        // The process dies holding the second one.
    }
    let bus = open(&database).await;
    let queue = bind(&bus, "listener", &["user.*"]).await;
    let again = queue.claim(10).await.expect("claim");
    assert_eq!(ids(&again), [batch[1].event_id], "only the unsettled one");
}

#[tokio::test]
async fn bindings_survive_a_restart_so_events_published_before_the_consumer_binds_wait() {
    let database = TestDatabase::sqlite("events");
    {
        let bus = open(&database).await;
        bind(&bus, "listener", &["user.*"]).await;
    }
    let bus = open(&database).await;
    let early = event("user.registered");
    bus.publish(std::slice::from_ref(&early))
        .await
        .expect("routed by the stored bindings");
    bus.publish(&[event("room.created")])
        .await
        .expect("an event no queue is bound to is dropped, as by an exchange");
    let queue = bind(&bus, "listener", &["user.*"]).await;
    assert_eq!(
        ids(&queue.claim(10).await.expect("claim")),
        [early.event_id]
    );
}

#[tokio::test]
async fn a_retried_event_waits_for_its_due_time_and_keeps_its_attempts_across_a_restart() {
    let database = TestDatabase::sqlite("events");
    let published = event("user.registered");
    {
        let bus = open(&database).await;
        let queue = bind(&bus, "listener", &["#"]).await;
        let claimed = publish_and_claim(&bus, &queue, &published).await;
        queue
            .retry(claimed.seq, 2, Duration::from_millis(400))
            .await
            .expect("retry");
        assert!(
            queue.claim(1).await.expect("claim").is_empty(),
            "not due yet"
        );
    }
    let bus = open(&database).await;
    let queue = bind(&bus, "listener", &["#"]).await;
    assert!(
        queue.claim(1).await.expect("claim").is_empty(),
        "a restart does not make a retry due early"
    );
    // Woken at its due time at the latest.
    tokio::time::timeout(Duration::from_secs(5), queue.wait(Duration::from_secs(60)))
        .await
        .expect("the wait ends at the event's due time");
    let mut again = queue.claim(1).await.expect("claim");
    if again.is_empty() {
        // Woken a moment early by the bind's own signal: once more.
        queue.wait(Duration::from_secs(60)).await;
        again = queue.claim(1).await.expect("claim");
    }
    assert_eq!(ids(&again), [published.event_id]);
    assert_eq!(again[0].attempts, 2);
}

#[tokio::test]
async fn parked_events_survive_a_restart_and_come_back_when_replayed() {
    let database = TestDatabase::sqlite("events");
    let published = event("user.registered");
    {
        let bus = open(&database).await;
        let queue = bind(&bus, "listener", &["#"]).await;
        let claimed = publish_and_claim(&bus, &queue, &published).await;
        queue
            .park(claimed.seq, 5, "the mail server refused it")
            .await
            .expect("park");
    }
    let bus = open(&database).await;
    let queue = bind(&bus, "listener", &["#"]).await;
    assert!(
        queue.claim(10).await.expect("claim").is_empty(),
        "parked is not due"
    );
    let parked = queue.parked(10).await.expect("list");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, published.event_id);
    assert_eq!(parked[0].attempts, 5);
    assert_eq!(parked[0].reason, "the mail server refused it");
    assert_eq!(queue.depth().await.expect("depth"), (1, 1));

    assert_eq!(queue.replay_parked().await.expect("replay"), 1);
    let replayed = queue.claim(10).await.expect("claim");
    assert_eq!(ids(&replayed), [published.event_id]);
    assert_eq!(replayed[0].attempts, 0, "a replay starts counting again");
    assert!(queue.parked(10).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_publication_wakes_the_waiting_consumer() {
    let database = TestDatabase::sqlite("events");
    let bus = open(&database).await;
    let queue = bind(&bus, "listener", &["#"]).await;
    // The bind's own signal (it looks for events left by an earlier run) is used up.
    queue.wait(Duration::from_secs(60)).await;
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.wait(Duration::from_secs(60)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish(&[event("message.sent")])
        .await
        .expect("published");
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken well before its 60 s poll")
        .expect("the waiting task ends");
}

#[tokio::test]
async fn a_damaged_file_is_refused_by_name_and_left_as_it_is() {
    let database = TestDatabase::sqlite("events");
    {
        let bus = open(&database).await;
        bind(&bus, "listener", &["#"]).await;
        bus.publish(&[event("user.registered")])
            .await
            .expect("published");
    }
    let path = database.url().trim_start_matches("sqlite://").to_owned();
    // Everything into the main file, then cut it short.
    let pool = platform::sql::connect_sqlite(database.url())
        .await
        .expect("still sound");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    pool.close().await;
    let whole = std::fs::read(&path).expect("the database file exists");
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&path, cut).expect("the file can be rewritten");
    let _ = std::fs::remove_file(format!("{path}-wal"));

    let error = EmbeddedBus::open(database.url())
        .await
        .expect_err("a truncated database is refused");
    let message = format!("{error:#}");
    assert!(message.contains(&path), "names the file: {message}");
    assert_eq!(
        std::fs::read(&path).expect("still there"),
        cut,
        "the damaged file is not overwritten"
    );

    std::fs::write(&path, b"not a database at all, just some text").expect("rewritten");
    let error = EmbeddedBus::open(database.url())
        .await
        .expect_err("a file that is no database is refused");
    let message = format!("{error:#}");
    assert!(message.contains(&path), "names the file: {message}");
    assert_eq!(
        std::fs::read(&path).expect("still there"),
        b"not a database at all, just some text"
    );
}
