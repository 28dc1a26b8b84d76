//! The store's part in passwords, sessions and email verification, checked against both
//! backends like the rest of the user store contract (`store.rs`): each behaviour is one
//! function over `&UserStore`, run on SQLite and on PostgreSQL (skipped, saying so,
//! when no PostgreSQL answers outside CI).

use auth::{
    domain::{Email, Session, User, Username},
    store::{self, NewAccount, NewAccountToken, NewSession, TokenPurpose, UserStore},
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use platform::{
    events::Event,
    testing::{TestDatabase, outbox_rows},
};
use proto::events::v1::{self as events, envelope::Payload};
use uuid::Uuid;

macro_rules! on_both_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let database = platform::testing::TestDatabase::sqlite("auth-passwords");
                    let (store, _database) = super::open(database).await;
                    super::$behaviour(&store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(database) = platform::testing::TestDatabase::postgres().await else {
                        eprintln!(
                            "skipped postgres::{}: PostgreSQL is not reachable",
                            stringify!($behaviour)
                        );
                        return;
                    };
                    let (store, _database) = super::open(database).await;
                    super::$behaviour(&store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_reset_token_works_once_and_sets_the_password_with_its_event,
    an_expired_or_unknown_token_changes_nothing,
    a_token_is_only_good_for_its_purpose,
    a_verification_token_verifies_the_address,
    a_new_password_spends_unused_reset_tokens,
    unrevoked_sessions_are_listed_newest_first_with_their_client,
);

async fn open(database: TestDatabase) -> (UserStore, TestDatabase) {
    let store = store::connect(database.url())
        .await
        .expect("a fresh test database opens and migrates");
    (store, database)
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn event(user: &User) -> Event {
    Event::new(
        "auth",
        Payload::PasswordChanged(events::PasswordChanged {
            user_id: user.id.to_string(),
            username: user.username.clone(),
            ..Default::default()
        }),
    )
}

async fn insert_user(store: &UserStore, username: &str) -> User {
    let account = NewAccount {
        id: Uuid::now_v7(),
        username: Username::parse(username).expect("valid"),
        email: Email::parse(&format!("{username}@example.com")).expect("valid"),
        password_hash: "old-hash".to_owned(),
        created_at: now(),
    };
    let registered = Event::new(
        "auth",
        Payload::UserRegistered(events::UserRegistered {
            user_id: account.id.to_string(),
            ..Default::default()
        }),
    );
    store
        .insert_account(&account, None, &registered)
        .await
        .expect("a new account is inserted")
}

async fn insert_token(
    store: &UserStore,
    user: &User,
    hash: &str,
    purpose: TokenPurpose,
    expires_in: Duration,
) {
    let token = NewAccountToken {
        hash: hash.to_owned(),
        purpose,
        user_id: user.id,
        email: user.email.clone(),
        created_at: now(),
        expires_at: now() + expires_in,
    };
    store
        .insert_account_token(&token, None)
        .await
        .expect("the token is stored");
}

async fn password_hash(store: &UserStore, user: &User) -> String {
    store
        .account_by_id(user.id)
        .await
        .expect("readable")
        .expect("the account exists")
        .password_hash
}

async fn redeem_reset(store: &UserStore, hash: &str, new_hash: &str) -> bool {
    store
        .redeem_account_token(
            hash,
            TokenPurpose::Reset,
            now(),
            Some(new_hash),
            &|user, _| Some(event(user)),
        )
        .await
        .expect("the store answers")
        .is_some()
}

async fn events_of(store: &UserStore, key: &str) -> usize {
    outbox_rows(&store.outbox())
        .await
        .iter()
        .filter(|row| row.routing_key == key)
        .count()
}

async fn a_reset_token_works_once_and_sets_the_password_with_its_event(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    insert_token(
        store,
        &ada,
        "reset-1",
        TokenPurpose::Reset,
        Duration::minutes(30),
    )
    .await;
    assert!(
        store
            .account_token("reset-1", TokenPurpose::Reset, now())
            .await
            .expect("reads")
            .is_some()
    );
    assert!(redeem_reset(store, "reset-1", "new-hash").await);
    assert_eq!(password_hash(store, &ada).await, "new-hash");
    assert_eq!(events_of(store, "user.password_changed").await, 1);
    assert!(
        !redeem_reset(store, "reset-1", "third-hash").await,
        "used once"
    );
    assert_eq!(password_hash(store, &ada).await, "new-hash");
    assert_eq!(events_of(store, "user.password_changed").await, 1);
    // The link reached its owner: the address counts as verified.
    assert!(
        store
            .email_verified_at(ada.id)
            .await
            .expect("reads")
            .expect("exists")
            .is_some()
    );
}

async fn an_expired_or_unknown_token_changes_nothing(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    insert_token(
        store,
        &ada,
        "old",
        TokenPurpose::Reset,
        Duration::seconds(-1),
    )
    .await;
    assert!(!redeem_reset(store, "old", "new-hash").await);
    assert!(!redeem_reset(store, "never-issued", "new-hash").await);
    assert_eq!(password_hash(store, &ada).await, "old-hash");
    assert_eq!(events_of(store, "user.password_changed").await, 0);
}

async fn a_token_is_only_good_for_its_purpose(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    insert_token(
        store,
        &ada,
        "verify-1",
        TokenPurpose::Verify,
        Duration::days(2),
    )
    .await;
    assert!(!redeem_reset(store, "verify-1", "new-hash").await);
    assert_eq!(password_hash(store, &ada).await, "old-hash");
    assert!(
        store
            .account_token("verify-1", TokenPurpose::Reset, now())
            .await
            .expect("reads")
            .is_none()
    );
}

async fn a_verification_token_verifies_the_address(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    assert_eq!(
        store.email_verified_at(ada.id).await.expect("reads"),
        Some(None)
    );
    insert_token(
        store,
        &ada,
        "verify-1",
        TokenPurpose::Verify,
        Duration::days(2),
    )
    .await;
    let redeemed = store
        .redeem_account_token("verify-1", TokenPurpose::Verify, now(), None, &|_, _| None)
        .await
        .expect("the store answers")
        .expect("a good token");
    assert_eq!(
        (redeemed.user_id, redeemed.email.as_str()),
        (ada.id, "ada@example.com")
    );
    assert!(
        store
            .email_verified_at(ada.id)
            .await
            .expect("reads")
            .expect("exists")
            .is_some()
    );
    assert_eq!(
        store
            .email_verified_at(Uuid::now_v7())
            .await
            .expect("reads"),
        None
    );
}

async fn a_new_password_spends_unused_reset_tokens(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    insert_token(
        store,
        &ada,
        "reset-1",
        TokenPurpose::Reset,
        Duration::minutes(30),
    )
    .await;
    assert!(
        store
            .set_password(ada.id, "changed-hash", &event(&ada))
            .await
            .expect("writes")
    );
    assert!(!redeem_reset(store, "reset-1", "attacker-hash").await);
    assert_eq!(password_hash(store, &ada).await, "changed-hash");
    assert!(
        !store
            .set_password(Uuid::now_v7(), "x", &event(&ada))
            .await
            .expect("writes")
    );
}

async fn unrevoked_sessions_are_listed_newest_first_with_their_client(store: &UserStore) {
    let ada = insert_user(store, "ada").await;
    let mut ids = Vec::new();
    for agent in ["laptop/1", "phone/2"] {
        let created_at = now();
        let new = NewSession {
            session: Session {
                id: Uuid::now_v7(),
                user_id: ada.id,
                created_at,
                expires_at: created_at + Duration::days(30),
                revoked_at: None,
            },
            refresh_hash: format!("hash-{agent}"),
            client_ip: "203.0.113.7".to_owned(),
            user_agent: agent.to_owned(),
        };
        let logged_in = Event::new(
            "auth",
            Payload::UserLoggedIn(events::UserLoggedIn::default()),
        );
        store
            .insert_session(&new, &logged_in)
            .await
            .expect("inserted");
        ids.push(new.session.id);
    }
    let listed = store.unrevoked_sessions(ada.id).await.expect("reads");
    let agents: Vec<&str> = listed.iter().map(|s| s.user_agent.as_str()).collect();
    assert_eq!(agents, ["phone/2", "laptop/1"]);
    assert_eq!(listed[0].client_ip, "203.0.113.7");
    assert_eq!(listed[0].last_used_at, listed[0].session.created_at);
    let revocation = store::Revocation {
        session_id: ids[1],
        revoked_at_ms: Utc::now().timestamp_millis(),
        forget_after: Utc::now().timestamp() + 900,
    };
    assert!(
        store
            .revoke_session(ids[1], revocation, None)
            .await
            .expect("revokes")
    );
    let listed = store.unrevoked_sessions(ada.id).await.expect("reads");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session.id, ids[0]);
}
