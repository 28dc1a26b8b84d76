//! The user store contract, written once and checked against both backends: SQLite (the
//! embedded run) and PostgreSQL (dev stack, cluster). Each behaviour below is one
//! function over `&dyn UserStore`; `on_both_backends!` gives it a `#[tokio::test]` per
//! backend (`sqlite::<behaviour>` and `postgres::<behaviour>`), each on a database of its own.
//! Without a reachable PostgreSQL the `postgres::` tests say they are skipped (outside CI).

use auth::{
    domain::{Email, Session, User, Username},
    store::{self, NewAccount, NewSession, Revocation, StoreError, Taken, UserStore},
};
use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use platform::{
    events::{Event, envelope},
    sql::{Backend, Pool, backend},
    testing::TestPostgres,
};
use proto::events::v1::{self as events, envelope::Payload};
use std::{path::PathBuf, sync::Arc};
use uuid::Uuid;

/// A migrated store on a database that lives as long as this does.
struct TestStore {
    store: Arc<dyn UserStore>,
    url: String,
    _database: Database,
}

/// What keeps a test database alive, and removes it when dropped.
enum Database {
    Sqlite { _dir: TempDir },
    Postgres { _database: TestPostgres },
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestStore {
    /// A store on a fresh SQLite file.
    async fn sqlite() -> Self {
        let dir = TempDir(
            std::env::temp_dir().join(format!("microchat-auth-store-{}", Uuid::new_v4().simple())),
        );
        let url = format!("sqlite://{}", dir.0.join("auth.db").display());
        Self::open(url, Database::Sqlite { _dir: dir }).await
    }

    /// A store on a fresh PostgreSQL database; `None` when no server answers (outside CI).
    async fn postgres() -> Option<Self> {
        let database = TestPostgres::create().await?;
        Some(
            Self::open(
                database.url.clone(),
                Database::Postgres {
                    _database: database,
                },
            )
            .await,
        )
    }

    async fn open(url: String, database: Database) -> Self {
        let store = store::connect(&url)
            .await
            .expect("a fresh test database opens and migrates");
        Self {
            store,
            url,
            _database: database,
        }
    }
}

/// One `#[tokio::test]` per behaviour and backend. A behaviour takes the store, and the
/// database URL too when marked `(url)`.
macro_rules! on_both_backends {
    ($($behaviour:ident $(($url:ident))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let store = super::TestStore::sqlite().await;
                    super::$behaviour(store.store.as_ref() $(, &store.$url)?).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(store) = super::TestStore::postgres().await else {
                        eprintln!("skipped postgres::{}: PostgreSQL is not reachable", stringify!($behaviour));
                        return;
                    };
                    super::$behaviour(store.store.as_ref() $(, &store.$url)?).await;
                }
            )*
        }
    };
}

on_both_backends!(
    inserted_account_is_found_by_username_email_and_id,
    unknown_accounts_are_not_found,
    username_taken_in_another_case_is_refused,
    email_taken_in_another_case_is_refused,
    users_are_paged_in_username_order,
    session_is_read_back_with_its_refresh_hash,
    refresh_rotates_only_from_the_current_hash,
    revoked_session_cannot_rotate,
    revoking_ends_the_session_and_feeds_it_once,
    revoking_an_unknown_session_feeds_nothing,
    failed_feed_write_leaves_the_session_active(url),
    revocations_are_read_from_a_time_on_in_order,
    pruning_forgets_only_expired_revocations,
    timestamps_round_trip_to_the_microsecond,
    migrating_again_keeps_the_data,
    registering_writes_its_event_in_the_same_transaction,
    a_logout_event_is_written_once_with_the_revocation,
    deleting_an_account_writes_its_event_once,
);

// ---------------------------------------------------------------------------------------
// Test data

/// A stand-in event for calls whose event is not what the test looks at.
fn registered() -> Event {
    Event::new(
        "test",
        Payload::UserRegistered(events::UserRegistered {
            user_id: Uuid::now_v7().to_string(),
            username: "someone".into(),
            email: "someone@example.com".into(),
        }),
    )
}

fn logged_in() -> Event {
    Event::new(
        "test",
        Payload::UserLoggedIn(events::UserLoggedIn::default()),
    )
}

/// The outbox, in order: (routing key, payload).
async fn outbox(store: &dyn UserStore) -> Vec<(String, Payload)> {
    const SQL: &str = "SELECT routing_key, payload FROM outbox ORDER BY seq";
    let rows: Vec<(String, Vec<u8>)> = match store.pool() {
        Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(&pool).await,
        Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(&pool).await,
    }
    .expect("the outbox is readable");
    rows.into_iter()
        .map(|(key, payload)| {
            let (_, envelope) = envelope::decode(&payload).expect("outbox rows are envelopes");
            assert_eq!(envelope.r#type, key);
            (key, envelope.payload.expect("a payload"))
        })
        .collect()
}

/// The routing keys in the outbox, in order.
async fn outbox_keys(store: &dyn UserStore) -> Vec<String> {
    outbox(store)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

/// Now, at the precision both databases keep (as the accounts layer does).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn new_account(username: &str, email: &str) -> NewAccount {
    NewAccount {
        id: Uuid::now_v7(),
        username: Username::parse(username).expect("test usernames are valid"),
        email: Email::parse(email).expect("test emails are valid"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${username}"),
        created_at: now(),
    }
}

async fn insert_user(store: &dyn UserStore, username: &str) -> User {
    let account = new_account(username, &format!("{username}@example.com"));
    store
        .insert_account(&account, &registered())
        .await
        .expect("a new account is inserted")
}

fn new_session(user: &User, refresh_hash: &str) -> NewSession {
    let created_at = now();
    NewSession {
        session: Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at,
            expires_at: created_at + chrono::Duration::days(30),
            revoked_at: None,
        },
        refresh_hash: refresh_hash.to_owned(),
        client_ip: "203.0.113.7".to_owned(),
        user_agent: "store-test/1.0".to_owned(),
    }
}

async fn insert_session(store: &dyn UserStore, refresh_hash: &str) -> Session {
    let unique = Uuid::new_v4().simple().to_string();
    let user = insert_user(store, &format!("user-{}", &unique[..16])).await;
    let new = new_session(&user, refresh_hash);
    store
        .insert_session(&new, &logged_in())
        .await
        .expect("a new session is inserted");
    new.session
}

fn revocation(session_id: Uuid, revoked_at_ms: i64, forget_after: i64) -> Revocation {
    Revocation {
        session_id,
        revoked_at_ms,
        forget_after,
    }
}

/// A revocation made now, whose tokens expire in fifteen minutes.
fn revocation_now(session_id: Uuid) -> Revocation {
    let at = Utc::now();
    revocation(session_id, at.timestamp_millis(), at.timestamp() + 15 * 60)
}

async fn stored_session(store: &dyn UserStore, id: Uuid) -> (Session, String) {
    store
        .session(id)
        .await
        .expect("the session is readable")
        .expect("the session exists")
}

// ---------------------------------------------------------------------------------------
// Accounts

async fn inserted_account_is_found_by_username_email_and_id(store: &dyn UserStore) {
    let account = new_account("Ada.Lovelace", "Ada@Example.com");
    let user = store.insert_account(&account, &registered()).await.unwrap();
    assert_eq!(user.username, "ada.lovelace");
    assert_eq!(user.email, "ada@example.com");

    let by_name = store
        .account_by_username(&Username::parse("ADA.lovelace").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.user, user);
    assert_eq!(by_name.password_hash, account.password_hash);

    let by_email = store
        .account_by_email(&Email::parse("ada@EXAMPLE.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.user, user);

    assert_eq!(store.user(user.id).await.unwrap(), Some(user));
}

async fn unknown_accounts_are_not_found(store: &dyn UserStore) {
    insert_user(store, "ada").await;
    assert!(
        store
            .account_by_username(&Username::parse("grace").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .account_by_email(&Email::parse("grace@example.com").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.user(Uuid::now_v7()).await.unwrap(), None);
}

async fn username_taken_in_another_case_is_refused(store: &dyn UserStore) {
    let first = insert_user(store, "ada").await;
    let second = store
        .insert_account(&new_account("ADA", "other@example.com"), &registered())
        .await;
    assert!(
        matches!(second, Err(StoreError::Taken(Taken::Username))),
        "got {second:?}"
    );
    // The first account is untouched and nothing was added.
    assert_eq!(store.users_after("", 10).await.unwrap(), vec![first]);
}

async fn email_taken_in_another_case_is_refused(store: &dyn UserStore) {
    let first = insert_user(store, "ada").await;
    let second = store
        .insert_account(&new_account("grace", "ADA@example.COM"), &registered())
        .await;
    assert!(
        matches!(second, Err(StoreError::Taken(Taken::Email))),
        "got {second:?}"
    );
    assert_eq!(store.users_after("", 10).await.unwrap(), vec![first]);
}

async fn users_are_paged_in_username_order(store: &dyn UserStore) {
    for name in ["mallory", "bob", "alice", "eve", "carol", "dave", "trent"] {
        insert_user(store, name).await;
    }
    let names = |users: Vec<User>| {
        users
            .into_iter()
            .map(|user| user.username)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.users_after("", 3).await.unwrap()),
        ["alice", "bob", "carol"]
    );
    assert_eq!(
        names(store.users_after("carol", 3).await.unwrap()),
        ["dave", "eve", "mallory"]
    );
    assert_eq!(
        names(store.users_after("mallory", 3).await.unwrap()),
        ["trent"]
    );
    assert!(store.users_after("trent", 3).await.unwrap().is_empty());
    // The cursor need not be a stored name.
    assert_eq!(
        names(store.users_after("c", 2).await.unwrap()),
        ["carol", "dave"]
    );
    assert_eq!(store.users_after("", 100).await.unwrap().len(), 7);
}

// ---------------------------------------------------------------------------------------
// Sessions

async fn session_is_read_back_with_its_refresh_hash(store: &dyn UserStore) {
    let session = insert_session(store, "hash-1").await;
    assert_eq!(
        stored_session(store, session.id).await,
        (session, "hash-1".to_owned())
    );
    assert!(store.session(Uuid::now_v7()).await.unwrap().is_none());
}

async fn refresh_rotates_only_from_the_current_hash(store: &dyn UserStore) {
    let session = insert_session(store, "hash-1").await;
    let later = session.expires_at + chrono::Duration::hours(1);

    assert!(
        !store
            .rotate_refresh(session.id, "not-the-hash", "hash-2", later)
            .await
            .unwrap()
    );
    assert_eq!(
        stored_session(store, session.id).await,
        (session.clone(), "hash-1".to_owned())
    );

    assert!(
        store
            .rotate_refresh(session.id, "hash-1", "hash-2", later)
            .await
            .unwrap()
    );
    let (rotated, hash) = stored_session(store, session.id).await;
    assert_eq!(hash, "hash-2");
    assert_eq!(rotated.expires_at, later);

    // The old hash was used up: replaying it changes nothing.
    assert!(
        !store
            .rotate_refresh(session.id, "hash-1", "hash-3", later)
            .await
            .unwrap()
    );
    assert_eq!(stored_session(store, session.id).await.1, "hash-2");
    assert!(
        !store
            .rotate_refresh(Uuid::now_v7(), "hash-2", "hash-3", later)
            .await
            .unwrap()
    );
}

async fn revoked_session_cannot_rotate(store: &dyn UserStore) {
    let session = insert_session(store, "hash-1").await;
    assert!(
        store
            .revoke_session(session.id, revocation_now(session.id), None)
            .await
            .unwrap()
    );
    let later = session.expires_at + chrono::Duration::hours(1);
    assert!(
        !store
            .rotate_refresh(session.id, "hash-1", "hash-2", later)
            .await
            .unwrap()
    );
    assert_eq!(stored_session(store, session.id).await.1, "hash-1");
}

// ---------------------------------------------------------------------------------------
// Revocations

async fn revoking_ends_the_session_and_feeds_it_once(store: &dyn UserStore) {
    let session = insert_session(store, "hash-1").await;
    let first = revocation_now(session.id);
    assert!(store.revoke_session(session.id, first, None).await.unwrap());

    let (revoked, _) = stored_session(store, session.id).await;
    assert_eq!(
        revoked.revoked_at,
        DateTime::from_timestamp_millis(first.revoked_at_ms)
    );
    assert!(!revoked.is_active(now()));
    assert_eq!(store.revocations_since(0).await.unwrap(), vec![first]);

    // A second logout of the same session is a no-op, not a second feed entry.
    let again = revocation(
        session.id,
        first.revoked_at_ms + 1_000,
        first.forget_after + 1,
    );
    assert!(!store.revoke_session(session.id, again, None).await.unwrap());
    assert_eq!(store.revocations_since(0).await.unwrap(), vec![first]);
    assert_eq!(
        stored_session(store, session.id).await.0.revoked_at,
        revoked.revoked_at
    );
}

async fn revoking_an_unknown_session_feeds_nothing(store: &dyn UserStore) {
    let unknown = Uuid::now_v7();
    assert!(
        !store
            .revoke_session(unknown, revocation_now(unknown), None)
            .await
            .unwrap()
    );
    assert!(store.revocations_since(0).await.unwrap().is_empty());
}

/// Writes a feed row behind the store's back, so that the store's own feed insert fails.
async fn insert_feed_row_directly(url: &str, entry: Revocation) {
    macro_rules! insert {
        ($pool:expr) => {
            sqlx::query("INSERT INTO revocations (session_id, revoked_at_ms, forget_after) VALUES ($1, $2, $3)")
                .bind(entry.session_id)
                .bind(entry.revoked_at_ms)
                .bind(entry.forget_after)
                .execute(&$pool)
                .await
                .expect("the feed row is written")
        };
    }
    match backend(url) {
        Some(Backend::Postgres) => {
            assert_eq!(
                insert!(platform::sql::connect_postgres(url, 1).await.unwrap()).rows_affected(),
                1
            )
        }
        Some(Backend::Sqlite) => {
            assert_eq!(
                insert!(platform::sql::connect_sqlite(url).await.unwrap()).rows_affected(),
                1
            )
        }
        None => unreachable!("test stores are PostgreSQL or SQLite"),
    }
}

async fn failed_feed_write_leaves_the_session_active(store: &dyn UserStore, url: &str) {
    let session = insert_session(store, "hash-1").await;
    let stale = revocation(session.id, 1_000, 2_000);
    insert_feed_row_directly(url, stale).await;

    let revoked = store
        .revoke_session(session.id, revocation_now(session.id), None)
        .await;
    assert!(
        matches!(revoked, Err(StoreError::Database(_))),
        "got {revoked:?}"
    );
    // Both writes or neither: the session is still active and may still be refreshed.
    assert_eq!(stored_session(store, session.id).await.0.revoked_at, None);
    assert_eq!(store.revocations_since(0).await.unwrap(), vec![stale]);
    let later = session.expires_at + chrono::Duration::hours(1);
    assert!(
        store
            .rotate_refresh(session.id, "hash-1", "hash-2", later)
            .await
            .unwrap()
    );
}

async fn revocations_are_read_from_a_time_on_in_order(store: &dyn UserStore) {
    let start = Utc::now().timestamp_millis();
    let mut entries = Vec::new();
    for offset in [0, 1_000, 2_000] {
        let session = insert_session(store, "hash").await;
        let entry = revocation(session.id, start + offset, start / 1_000 + 900);
        assert!(store.revoke_session(session.id, entry, None).await.unwrap());
        entries.push(entry);
    }
    assert_eq!(store.revocations_since(0).await.unwrap(), entries);
    assert_eq!(
        store.revocations_since(start + 1_000).await.unwrap(),
        entries[1..]
    );
    assert_eq!(
        store.revocations_since(start + 1_001).await.unwrap(),
        entries[2..]
    );
    assert!(
        store
            .revocations_since(start + 2_001)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pruning_forgets_only_expired_revocations(store: &dyn UserStore) {
    let start = Utc::now().timestamp_millis();
    let mut entries = Vec::new();
    for (offset, forget_after) in [(0, 100), (1, 200), (2, 300)] {
        let session = insert_session(store, "hash").await;
        let entry = revocation(session.id, start + offset, forget_after);
        assert!(store.revoke_session(session.id, entry, None).await.unwrap());
        entries.push(entry);
    }
    assert_eq!(store.prune_revocations(99).await.unwrap(), 0);
    assert_eq!(store.prune_revocations(200).await.unwrap(), 2);
    assert_eq!(store.revocations_since(0).await.unwrap(), entries[2..]);
    // Forgetting the feed entry does not bring the session back.
    let (session, _) = stored_session(store, entries[0].session_id).await;
    assert!(session.revoked_at.is_some());
    let later = session.expires_at + chrono::Duration::hours(1);
    assert!(
        !store
            .rotate_refresh(session.id, "hash", "hash-2", later)
            .await
            .unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// Storage

async fn timestamps_round_trip_to_the_microsecond(store: &dyn UserStore) {
    let created_at = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap()
        + chrono::Duration::microseconds(123_456);
    let user = store
        .insert_account(
            &NewAccount {
                created_at,
                ..new_account("leap", "leap@example.com")
            },
            &registered(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.user(user.id).await.unwrap().unwrap().created_at,
        created_at
    );

    let mut new = new_session(&user, "hash");
    new.session.created_at = created_at;
    new.session.expires_at =
        created_at + chrono::Duration::days(30) + chrono::Duration::microseconds(1);
    store.insert_session(&new, &logged_in()).await.unwrap();
    assert_eq!(stored_session(store, new.session.id).await.0, new.session);

    let revoked_at = created_at + chrono::Duration::milliseconds(1_789);
    let entry = revocation(
        new.session.id,
        revoked_at.timestamp_millis(),
        revoked_at.timestamp() + 900,
    );
    assert!(
        store
            .revoke_session(new.session.id, entry, None)
            .await
            .unwrap()
    );
    let expected = created_at.trunc_subsecs(3) + chrono::Duration::milliseconds(1_789);
    assert_eq!(
        stored_session(store, new.session.id).await.0.revoked_at,
        Some(expected)
    );
}

async fn migrating_again_keeps_the_data(store: &dyn UserStore) {
    let user = insert_user(store, "ada").await;
    store
        .migrate()
        .await
        .expect("migrations already applied are skipped");
    store.ping().await.expect("the database answers");
    assert_eq!(store.user(user.id).await.unwrap(), Some(user));
}

// ---------------------------------------------------------------------------------------
// Events commit with their state change, and only with it

async fn registering_writes_its_event_in_the_same_transaction(store: &dyn UserStore) {
    let account = new_account("ada", "ada@example.com");
    let event = Event::new(
        "auth",
        Payload::UserRegistered(events::UserRegistered {
            user_id: account.id.to_string(),
            username: "ada".into(),
            email: "ada@example.com".into(),
        }),
    );
    store.insert_account(&account, &event).await.unwrap();
    let written = outbox(store).await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].0, "user.registered");
    assert!(matches!(&written[0].1, Payload::UserRegistered(user) if user.username == "ada"));

    let taken = store
        .insert_account(&new_account("ada", "other@example.com"), &registered())
        .await;
    assert!(matches!(taken, Err(StoreError::Taken(Taken::Username))));
    assert_eq!(
        outbox(store).await.len(),
        1,
        "a refused account writes no event"
    );
}

async fn a_logout_event_is_written_once_with_the_revocation(store: &dyn UserStore) {
    let session = insert_session(store, "hash-1").await;
    assert_eq!(
        outbox_keys(store).await,
        ["user.registered", "user.logged_in"]
    );
    let logout = Event::new(
        "auth",
        Payload::UserLoggedOut(events::UserLoggedOut {
            session_id: session.id.to_string(),
            ..events::UserLoggedOut::default()
        }),
    );
    assert!(
        store
            .revoke_session(session.id, revocation_now(session.id), Some(&logout))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_session(session.id, revocation_now(session.id), Some(&logout))
            .await
            .unwrap(),
        "revoking again does nothing"
    );
    assert_eq!(
        outbox_keys(store).await,
        ["user.registered", "user.logged_in", "user.logged_out"],
        "one logout event, from the revocation that happened"
    );
}

async fn deleting_an_account_writes_its_event_once(store: &dyn UserStore) {
    let user = insert_user(store, "grace").await;
    let event_for = |deleted: &User| {
        Event::new(
            "auth",
            Payload::UserDeleted(events::UserDeleted {
                user_id: deleted.id.to_string(),
                username: deleted.username.clone(),
                email: deleted.email.clone(),
            }),
        )
    };
    assert!(store.delete_account(user.id, &event_for).await.unwrap());
    assert!(!store.delete_account(user.id, &event_for).await.unwrap());
    let written = outbox(store).await;
    assert_eq!(written.len(), 2, "registered, then deleted once");
    match &written[1].1 {
        Payload::UserDeleted(deleted) => {
            assert_eq!(deleted.user_id, user.id.to_string());
            assert_eq!(deleted.username, "grace");
            assert_eq!(deleted.email, "grace@example.com");
        }
        other => panic!("expected user.deleted, got {other:?}"),
    }
}
