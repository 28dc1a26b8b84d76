//! The user store contract, written once and checked against both backends: SQLite (the
//! embedded run) and PostgreSQL (dev stack, cluster). Each behaviour below is one
//! function over `&UserStore`; `on_both_backends!` gives it a `#[tokio::test]` per
//! backend (`sqlite::<behaviour>` and `postgres::<behaviour>`), each on a database of its own.
//! Without a reachable PostgreSQL the `postgres::` tests say they are skipped (outside CI).

use auth::{
    domain::{Email, Role, Session, User, Username},
    store::{
        self, NewAccount, NewAccountToken, NewSession, Revocation, StoreError, Taken, TokenPurpose,
        UserStore,
    },
};
use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use platform::{
    events::Event,
    testing::{OutboxRow, TestDatabase, outbox_rows},
};
use proto::events::v1::{self as events, envelope::Payload};
use uuid::Uuid;

/// A migrated store on a database that lives as long as this does.
struct TestStore {
    store: UserStore,
    url: String,
    _database: TestDatabase,
}

impl TestStore {
    /// A store on a fresh SQLite file.
    async fn sqlite() -> Self {
        Self::open(TestDatabase::sqlite("auth")).await
    }

    /// A store on a fresh PostgreSQL database; `None` when no server answers (outside CI).
    async fn postgres() -> Option<Self> {
        Some(Self::open(TestDatabase::postgres().await?).await)
    }

    async fn open(database: TestDatabase) -> Self {
        let store = store::connect(database.url())
            .await
            .expect("a fresh test database opens and migrates");
        Self {
            store,
            url: database.url().to_owned(),
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
                    super::$behaviour(&store.store $(, &store.$url)?).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(store) = super::TestStore::postgres().await else {
                        eprintln!(
                            "skipped postgres::{}: PostgreSQL is not reachable",
                            stringify!($behaviour)
                        );
                        return;
                    };
                    super::$behaviour(&store.store $(, &store.$url)?).await;
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
    registering_writes_one_user_registered_event,
    a_refused_registration_writes_no_event,
    an_account_whose_event_cannot_be_written_is_not_kept,
    opening_a_session_writes_user_logged_in,
    sessions_inserted_together_commit_together,
    a_logout_event_is_written_once_with_the_revocation,
    revoking_without_an_event_writes_none,
    a_failed_revocation_writes_no_event(url),
    deleting_an_account_writes_its_event_once,
    first_account_is_the_owner_and_the_next_are_members,
    concurrent_first_registrations_make_exactly_one_owner,
    a_deleted_accounts_username_stays_taken,
    role_changes_report_the_previous_role_and_active_sessions,
    the_last_active_owner_cannot_be_demoted_or_deactivated,
    deactivation_keeps_the_account_and_reactivation_restores_it,
    changes_to_unknown_or_deleted_accounts_find_nothing,
);

// ---------------------------------------------------------------------------------------
// Test data

/// One outbox row, read back as a consumer would see it.
type Written = OutboxRow;

/// The outbox, in commit order.
async fn outbox(store: &UserStore) -> Vec<Written> {
    outbox_rows(&store.outbox()).await
}

/// The routing keys of outbox rows.
fn keys(written: &[Written]) -> Vec<&str> {
    written.iter().map(|row| row.routing_key.as_str()).collect()
}

/// The `user.registered` event of a new account, as the accounts layer makes it.
fn registered(account: &NewAccount) -> Event {
    Event::new(
        "auth",
        Payload::UserRegistered(events::UserRegistered {
            user_id: account.id.to_string(),
            username: account.username.as_str().to_owned(),
            email: account.email.as_str().to_owned(),
            verify_token: String::new(),
        }),
    )
}

fn client(new: &NewSession) -> events::Client {
    events::Client {
        ip: new.client_ip.clone(),
        user_agent: new.user_agent.clone(),
    }
}

/// The `user.logged_in` event of a new session.
fn logged_in(user: &User, new: &NewSession) -> Event {
    Event::new(
        "auth",
        Payload::UserLoggedIn(events::UserLoggedIn {
            user_id: user.id.to_string(),
            username: user.username.clone(),
            email: user.email.clone(),
            session_id: new.session.id.to_string(),
            client: Some(client(new)),
            expires_at: None,
        }),
    )
}

/// The `user.logged_out` event of a session.
fn logged_out(user: &User, new: &NewSession) -> Event {
    Event::new(
        "auth",
        Payload::UserLoggedOut(events::UserLoggedOut {
            user_id: user.id.to_string(),
            username: user.username.clone(),
            email: user.email.clone(),
            session_id: new.session.id.to_string(),
            client: Some(client(new)),
            ..Default::default()
        }),
    )
}

/// The `user.deleted` event of the account the store just deleted.
fn deleted(user: &User) -> Event {
    Event::new(
        "auth",
        Payload::UserDeleted(events::UserDeleted {
            user_id: user.id.to_string(),
            username: user.username.clone(),
            email: user.email.clone(),
        }),
    )
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

/// Inserts an account with its `user.registered` event.
async fn register(store: &UserStore, account: &NewAccount) -> Result<User, StoreError> {
    store
        .insert_account(account, None, &registered(account))
        .await
}

async fn insert_user(store: &UserStore, username: &str) -> User {
    let account = new_account(username, &format!("{username}@example.com"));
    register(store, &account)
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

async fn insert_session(store: &UserStore, refresh_hash: &str) -> Session {
    let unique = Uuid::new_v4().simple().to_string();
    let user = insert_user(store, &format!("user-{}", &unique[..16])).await;
    open_session(store, &user, refresh_hash).await.session
}

/// Opens a session of `user` with its `user.logged_in` event.
async fn open_session(store: &UserStore, user: &User, refresh_hash: &str) -> NewSession {
    let new = new_session(user, refresh_hash);
    store
        .insert_session(&new, &logged_in(user, &new))
        .await
        .expect("a new session is inserted");
    new
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

async fn stored_session(store: &UserStore, id: Uuid) -> (Session, String) {
    store
        .session(id)
        .await
        .expect("the session is readable")
        .expect("the session exists")
}

// ---------------------------------------------------------------------------------------
// Accounts

async fn inserted_account_is_found_by_username_email_and_id(store: &UserStore) {
    let account = new_account("Ada.Lovelace", "Ada@Example.com");
    let user = register(store, &account).await.unwrap();
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

async fn unknown_accounts_are_not_found(store: &UserStore) {
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

async fn username_taken_in_another_case_is_refused(store: &UserStore) {
    let first = insert_user(store, "ada").await;
    let second = register(store, &new_account("ADA", "other@example.com")).await;
    assert!(
        matches!(second, Err(StoreError::Taken(Taken::Username))),
        "got {second:?}"
    );
    // The first account is untouched and nothing was added.
    assert_eq!(store.users_after("", 10).await.unwrap(), vec![first]);
}

async fn email_taken_in_another_case_is_refused(store: &UserStore) {
    let first = insert_user(store, "ada").await;
    let second = register(store, &new_account("grace", "ADA@example.COM")).await;
    assert!(
        matches!(second, Err(StoreError::Taken(Taken::Email))),
        "got {second:?}"
    );
    assert_eq!(store.users_after("", 10).await.unwrap(), vec![first]);
}

async fn users_are_paged_in_username_order(store: &UserStore) {
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

async fn session_is_read_back_with_its_refresh_hash(store: &UserStore) {
    let session = insert_session(store, "hash-1").await;
    assert_eq!(
        stored_session(store, session.id).await,
        (session, "hash-1".to_owned())
    );
    assert!(store.session(Uuid::now_v7()).await.unwrap().is_none());
}

async fn refresh_rotates_only_from_the_current_hash(store: &UserStore) {
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
    // The replaced hash is remembered, with the time of the rotation.
    let (previous, rotated_at) = store
        .previous_refresh(session.id)
        .await
        .unwrap()
        .expect("a rotation remembers the hash it replaced");
    assert_eq!(previous, "hash-1");
    assert!((Utc::now() - rotated_at).num_seconds().abs() < 60);

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

async fn revoked_session_cannot_rotate(store: &UserStore) {
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

async fn revoking_ends_the_session_and_feeds_it_once(store: &UserStore) {
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

async fn revoking_an_unknown_session_feeds_nothing(store: &UserStore) {
    let unknown = Uuid::now_v7();
    assert!(
        !store
            .revoke_session(unknown, revocation_now(unknown), None)
            .await
            .unwrap()
    );
    assert!(store.revocations_since(0).await.unwrap().is_empty());
}

/// Writes a feed row behind the store's back (on a pool of its own), so that the store's
/// own feed insert fails.
async fn insert_feed_row_directly(url: &str, entry: Revocation) {
    const SQL: &str =
        "INSERT INTO revocations (session_id, revoked_at_ms, forget_after) VALUES ($1, $2, $3)";
    let pool = platform::sql::connect(url)
        .await
        .expect("the test database opens");
    let written = platform::on_pool!(&pool, |pool| {
        sqlx::query(SQL)
            .bind(entry.session_id)
            .bind(entry.revoked_at_ms)
            .bind(entry.forget_after)
            .execute(pool)
            .await
            .expect("the feed row is written")
            .rows_affected()
    });
    assert_eq!(written, 1);
}

async fn failed_feed_write_leaves_the_session_active(store: &UserStore, url: &str) {
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

async fn revocations_are_read_from_a_time_on_in_order(store: &UserStore) {
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

async fn pruning_forgets_only_expired_revocations(store: &UserStore) {
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

async fn timestamps_round_trip_to_the_microsecond(store: &UserStore) {
    let created_at = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap()
        + chrono::Duration::microseconds(123_456);
    let account = NewAccount {
        created_at,
        ..new_account("leap", "leap@example.com")
    };
    let user = register(store, &account).await.unwrap();
    assert_eq!(
        store.user(user.id).await.unwrap().unwrap().created_at,
        created_at
    );

    let mut new = new_session(&user, "hash");
    new.session.created_at = created_at;
    new.session.expires_at =
        created_at + chrono::Duration::days(30) + chrono::Duration::microseconds(1);
    store
        .insert_session(&new, &logged_in(&user, &new))
        .await
        .unwrap();
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

async fn migrating_again_keeps_the_data(store: &UserStore) {
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

async fn registering_writes_one_user_registered_event(store: &UserStore) {
    let account = new_account("Ada", "Ada@Example.com");
    let event = registered(&account);
    let user = store.insert_account(&account, None, &event).await.unwrap();

    let written = outbox(store).await;
    assert_eq!(written.len(), 1, "one event: {written:?}");
    assert_eq!(written[0].event_id, event.id);
    assert_eq!(written[0].routing_key, "user.registered");
    assert_eq!(written[0].producer, "auth");
    assert_eq!(
        written[0].payload,
        Payload::UserRegistered(events::UserRegistered {
            user_id: user.id.to_string(),
            username: "ada".into(),
            email: "ada@example.com".into(),
            verify_token: String::new(),
        })
    );
}

async fn a_refused_registration_writes_no_event(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    for (username, email, taken) in [
        ("ADA", "other@example.com", Taken::Username),
        ("grace", "Ada@Example.com", Taken::Email),
    ] {
        let refused = register(store, &new_account(username, email)).await;
        assert!(
            matches!(refused, Err(StoreError::Taken(what)) if what == taken),
            "got {refused:?}"
        );
    }
    let written = outbox(store).await;
    assert_eq!(written.len(), 1, "only ada's registration: {written:?}");
    let Payload::UserRegistered(event) = &written[0].payload else {
        panic!("only a registration was written: {written:?}");
    };
    assert_eq!(event.user_id, ada.id.to_string());
}

async fn an_account_whose_event_cannot_be_written_is_not_kept(store: &UserStore) {
    let ada = new_account("ada", "ada@example.com");
    let event = registered(&ada);
    store.insert_account(&ada, None, &event).await.unwrap();

    // An event id already in the outbox makes the event write fail: the account goes
    // too, and so does its verification link.
    let grace = new_account("grace", "grace@example.com");
    let link = verify_link(&grace, "verify-grace");
    let refused = store.insert_account(&grace, Some(&link), &event).await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "got {refused:?}"
    );
    assert_eq!(store.user(grace.id).await.unwrap(), None);
    assert!(
        store
            .account_by_username(&grace.username)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(outbox(store).await.len(), 1);
    let redeem = || {
        store.redeem_account_token(
            "verify-grace",
            TokenPurpose::Verify,
            Utc::now(),
            None,
            &|_, _| None,
        )
    };
    assert!(
        redeem().await.unwrap().is_none(),
        "the link went with the account"
    );
    // Nothing of it was left behind: the same account registers fine afterwards, its link
    // with it.
    store
        .insert_account(&grace, Some(&link), &registered(&grace))
        .await
        .expect("the username and email are free");
    let redeemed = redeem()
        .await
        .unwrap()
        .expect("the link was stored with the account");
    assert_eq!(redeemed.user_id, grace.id);
}

/// A verification link for `account`, stored under `hash`.
fn verify_link(account: &NewAccount, hash: &str) -> NewAccountToken {
    let created_at = Utc::now().trunc_subsecs(6);
    NewAccountToken {
        hash: hash.to_owned(),
        purpose: TokenPurpose::Verify,
        user_id: account.id,
        email: account.email.as_str().to_owned(),
        created_at,
        expires_at: created_at + chrono::Duration::hours(1),
    }
}

async fn sessions_inserted_together_commit_together(store: &UserStore) {
    let user = insert_user(store, "ada").await;
    let (first, second) = (new_session(&user, "hash-1"), new_session(&user, "hash-2"));
    let (first_event, second_event) = (logged_in(&user, &first), logged_in(&user, &second));
    // The second session reuses the first's id: the batch fails, and neither is kept.
    let mut clash = new_session(&user, "hash-3");
    clash.session.id = first.session.id;
    let clash_event = logged_in(&user, &clash);
    let refused = store
        .insert_sessions([(&first, &first_event), (&clash, &clash_event)])
        .await;
    assert!(refused.is_err(), "a duplicate session id is refused");
    assert!(store.session(first.session.id).await.unwrap().is_none());
    assert_eq!(keys(&outbox(store).await), ["user.registered"]);

    store
        .insert_sessions([(&first, &first_event), (&second, &second_event)])
        .await
        .unwrap();
    for new in [&first, &second] {
        let (session, hash) = store.session(new.session.id).await.unwrap().expect("kept");
        assert_eq!(
            (session.id, hash),
            (new.session.id, new.refresh_hash.clone())
        );
    }
    let written = outbox(store).await;
    assert_eq!(
        keys(&written),
        ["user.registered", "user.logged_in", "user.logged_in"]
    );
}

async fn opening_a_session_writes_user_logged_in(store: &UserStore) {
    let user = insert_user(store, "ada").await;
    let new = new_session(&user, "hash-1");
    let event = logged_in(&user, &new);
    store.insert_session(&new, &event).await.unwrap();

    let written = outbox(store).await;
    assert_eq!(keys(&written), ["user.registered", "user.logged_in"]);
    assert_eq!(written[1].event_id, event.id);
    match &written[1].payload {
        Payload::UserLoggedIn(login) => {
            assert_eq!(login.session_id, new.session.id.to_string());
            assert_eq!(login.user_id, user.id.to_string());
            assert_eq!(login.username, "ada");
            let client = login.client.as_ref().expect("the client is carried");
            assert_eq!(
                (client.ip.as_str(), client.user_agent.as_str()),
                ("203.0.113.7", "store-test/1.0")
            );
        }
        other => panic!("expected user.logged_in, got {other:?}"),
    }

    // A session that cannot be stored (its id is taken) writes no event.
    let again = store.insert_session(&new, &logged_in(&user, &new)).await;
    assert!(
        matches!(again, Err(StoreError::Database(_))),
        "got {again:?}"
    );
    assert_eq!(outbox(store).await.len(), 2);
}

async fn a_logout_event_is_written_once_with_the_revocation(store: &UserStore) {
    let user = insert_user(store, "ada").await;
    let new = open_session(store, &user, "hash-1").await;
    let session = new.session.id;
    let logout = logged_out(&user, &new);
    assert!(
        store
            .revoke_session(session, revocation_now(session), Some(&logout))
            .await
            .unwrap()
    );
    // A second logout of the session (another tab, a retry) brings an event of its own.
    assert!(
        !store
            .revoke_session(
                session,
                revocation_now(session),
                Some(&logged_out(&user, &new))
            )
            .await
            .unwrap(),
        "revoking again does nothing"
    );

    let written = outbox(store).await;
    assert_eq!(
        keys(&written),
        ["user.registered", "user.logged_in", "user.logged_out"],
        "one logout event, from the revocation that happened"
    );
    assert_eq!(written[2].event_id, logout.id);
    match &written[2].payload {
        Payload::UserLoggedOut(event) => {
            assert_eq!(event.session_id, session.to_string());
            assert_eq!(event.user_id, user.id.to_string());
        }
        other => panic!("expected user.logged_out, got {other:?}"),
    }
}

async fn revoking_without_an_event_writes_none(store: &UserStore) {
    let session = insert_session(store, "hash-1").await;
    assert!(
        store
            .revoke_session(session.id, revocation_now(session.id), None)
            .await
            .unwrap()
    );
    assert_eq!(
        keys(&outbox(store).await),
        ["user.registered", "user.logged_in"]
    );
}

async fn a_failed_revocation_writes_no_event(store: &UserStore, url: &str) {
    let user = insert_user(store, "ada").await;
    let new = open_session(store, &user, "hash-1").await;
    let session = new.session.id;
    insert_feed_row_directly(url, revocation(session, 1_000, 2_000)).await;

    let revoked = store
        .revoke_session(
            session,
            revocation_now(session),
            Some(&logged_out(&user, &new)),
        )
        .await;
    assert!(
        matches!(revoked, Err(StoreError::Database(_))),
        "got {revoked:?}"
    );
    assert_eq!(
        keys(&outbox(store).await),
        ["user.registered", "user.logged_in"],
        "no logout without the revocation"
    );
}

async fn deleting_an_account_writes_its_event_once(store: &UserStore) {
    let user = insert_user(store, "grace").await;
    open_session(store, &user, "hash-1").await;
    let made = std::sync::Mutex::new(Vec::new());
    // The event is made from the row the store deleted, as the accounts layer does.
    let event_for = |gone: &User| {
        let event = deleted(gone);
        made.lock().unwrap().push(event.id);
        event
    };
    assert!(store.delete_account(user.id, &event_for).await.unwrap());
    assert!(!store.delete_account(user.id, &event_for).await.unwrap());
    assert!(
        !store
            .delete_account(Uuid::now_v7(), &event_for)
            .await
            .unwrap()
    );

    let written = outbox(store).await;
    assert_eq!(
        keys(&written),
        ["user.registered", "user.logged_in", "user.deleted"],
        "deleted once"
    );
    assert_eq!(written[2].event_id, made.lock().unwrap()[0]);
    assert_eq!(
        written[2].payload,
        Payload::UserDeleted(events::UserDeleted {
            user_id: user.id.to_string(),
            username: "grace".into(),
            email: "grace@example.com".into(),
        })
    );
    assert_eq!(store.user(user.id).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Roles, deactivation and names taken for good

async fn first_account_is_the_owner_and_the_next_are_members(store: &UserStore) {
    let first = insert_user(store, "founder").await;
    let second = insert_user(store, "newcomer").await;
    assert_eq!(first.role, Role::Owner);
    assert_eq!(second.role, Role::Member);
    assert_eq!(
        store.user(first.id).await.unwrap().unwrap().role,
        Role::Owner
    );
    assert_eq!(
        store.user(second.id).await.unwrap().unwrap().role,
        Role::Member
    );
    // The owner leaving does not make the next newcomer an owner.
    assert!(store.delete_account(first.id, &deleted).await.unwrap());
    assert_eq!(insert_user(store, "latecomer").await.role, Role::Member);
}

async fn concurrent_first_registrations_make_exactly_one_owner(store: &UserStore) {
    let accounts: Vec<NewAccount> = (0..6)
        .map(|n| new_account(&format!("racer{n}"), &format!("racer{n}@example.com")))
        .collect();
    let (a, b, c, d, e, f) = tokio::join!(
        register(store, &accounts[0]),
        register(store, &accounts[1]),
        register(store, &accounts[2]),
        register(store, &accounts[3]),
        register(store, &accounts[4]),
        register(store, &accounts[5]),
    );
    let users: Vec<User> = [a, b, c, d, e, f]
        .into_iter()
        .map(|user| user.expect("every racer registers"))
        .collect();
    let owners = users.iter().filter(|user| user.role == Role::Owner).count();
    assert_eq!(owners, 1, "{users:?}");
}

async fn a_deleted_accounts_username_stays_taken(store: &UserStore) {
    let admin = insert_user(store, "admin").await;
    assert!(
        store
            .begin_deletion(admin.id, now())
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.delete_account(admin.id, &deleted).await.unwrap());
    let impostor = new_account("Admin", "someone.else@example.com");
    assert!(matches!(
        register(store, &impostor).await,
        Err(StoreError::Taken(Taken::Username))
    ));
    // The email address is free again: its owner may come back under a new name.
    let returning = new_account("admin2", "admin@example.com");
    assert!(register(store, &returning).await.is_ok());
    let written = outbox(store).await;
    assert_eq!(
        keys(&written),
        ["user.registered", "user.deleted", "user.registered"],
        "the refused registration wrote nothing"
    );
}

async fn role_changes_report_the_previous_role_and_active_sessions(store: &UserStore) {
    insert_user(store, "owner").await;
    let ada = insert_user(store, "ada").await;
    let laptop = open_session(store, &ada, "hash-laptop").await;
    let phone = open_session(store, &ada, "hash-phone").await;
    assert!(
        store
            .revoke_session(phone.session.id, revocation_now(phone.session.id), None)
            .await
            .unwrap()
    );

    let promoted = store
        .change_role(ada.id, Role::Admin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(promoted.previous_role, Role::Member);
    assert_eq!(promoted.user.role, Role::Admin);
    assert_eq!(promoted.active_sessions, [laptop.session.id]);
    assert_eq!(store.user(ada.id).await.unwrap().unwrap().role, Role::Admin);

    let demoted = store
        .change_role(ada.id, Role::Member)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demoted.previous_role, Role::Admin);
    assert_eq!(demoted.user.role, Role::Member);
}

async fn the_last_active_owner_cannot_be_demoted_or_deactivated(store: &UserStore) {
    let founder = insert_user(store, "founder").await;
    let grace = insert_user(store, "grace").await;
    assert!(matches!(
        store.change_role(founder.id, Role::Admin).await,
        Err(StoreError::LastOwner)
    ));
    assert!(matches!(
        store.set_deactivated(founder.id, Some(now())).await,
        Err(StoreError::LastOwner)
    ));
    assert_eq!(
        store.user(founder.id).await.unwrap().unwrap().role,
        Role::Owner
    );

    // A second owner, deactivated, does not count; active, it does.
    store
        .change_role(grace.id, Role::Owner)
        .await
        .unwrap()
        .unwrap();
    store
        .set_deactivated(grace.id, Some(now()))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.change_role(founder.id, Role::Member).await,
        Err(StoreError::LastOwner)
    ));
    store
        .set_deactivated(grace.id, None)
        .await
        .unwrap()
        .unwrap();
    let stepped_down = store
        .change_role(founder.id, Role::Member)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stepped_down.user.role, Role::Member);
    assert!(matches!(
        store.change_role(grace.id, Role::Admin).await,
        Err(StoreError::LastOwner)
    ));
}

async fn deactivation_keeps_the_account_and_reactivation_restores_it(store: &UserStore) {
    insert_user(store, "owner").await;
    let ada = insert_user(store, "ada").await;
    let session = open_session(store, &ada, "hash-1").await;
    let at = now();
    let deactivated = store
        .set_deactivated(ada.id, Some(at))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deactivated.user.deactivated_at, Some(at));
    assert_eq!(deactivated.active_sessions, [session.session.id]);
    // Deactivating again keeps the first time.
    let again = store
        .set_deactivated(ada.id, Some(at + chrono::Duration::minutes(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.user.deactivated_at, Some(at));
    // Still found by name and id (the name stays), marked deactivated.
    let by_name = store
        .account_by_username(&Username::parse("ada").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.user.deactivated_at, Some(at));
    let listed = store.users_after("", 10).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|user| user.id == ada.id && user.deactivated_at == Some(at))
    );

    let reactivated = store.set_deactivated(ada.id, None).await.unwrap().unwrap();
    assert_eq!(reactivated.user.deactivated_at, None);
    assert_eq!(
        store.user(ada.id).await.unwrap().unwrap().deactivated_at,
        None
    );
}

async fn changes_to_unknown_or_deleted_accounts_find_nothing(store: &UserStore) {
    insert_user(store, "owner").await;
    let leaving = insert_user(store, "leaving").await;
    store.begin_deletion(leaving.id, now()).await.unwrap();
    for id in [Uuid::now_v7(), leaving.id] {
        assert_eq!(store.change_role(id, Role::Admin).await.unwrap(), None);
        assert_eq!(store.set_deactivated(id, Some(now())).await.unwrap(), None);
    }
}
