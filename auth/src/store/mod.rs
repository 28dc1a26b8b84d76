//! The user store: what auth keeps in its database, whatever the database is. One
//! [`UserStore`] serves PostgreSQL (dev stack, cluster) and SQLite (embedded); the URL
//! scheme picks which. Both take the same statements (`$n` placeholders work in both),
//! each written once and dispatched to the pool's backend where it runs
//! ([`platform::on_pool!`], [`platform::on_tx!`]); only the migrations differ.
//!
//! The methods are split by what they change: `accounts` (the `users` rows and their
//! deletion), `roles` (roles and deactivation, which keep an owner), `sessions`
//! (sessions, refresh rotation and the revocation feed) and `passwords` (password
//! changes and the one-time tokens of mailed links).

mod accounts;
mod passwords;
mod roles;
mod sessions;

use crate::domain::{Email, Role, Session, User, Username};
use chrono::{DateTime, Utc};
use platform::{
    events::{Event, outbox},
    sql::{Pool, Transaction},
};
use uuid::Uuid;

pub use passwords::{AccountToken, NewAccountToken, TokenPurpose};
pub use sessions::SessionRecord;

/// Which unique field a new account collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The username is in use.
    Username,
    /// The email address is in use.
    Email,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique field is already in use.
    #[error("{0:?} is already taken")]
    Taken(Taken),
    /// The change would leave the install without an active owner.
    #[error("the last owner must stay an active owner")]
    LastOwner,
    /// The database could not be reached or answered in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database failure: a bug or a broken schema.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if platform::sql::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// A new account to insert.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// UUIDv7.
    pub id: Uuid,
    /// Validated username.
    pub username: Username,
    /// Validated email.
    pub email: Email,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A new session to insert.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session.
    pub session: Session,
    /// SHA-256 of the refresh token, base64url.
    pub refresh_hash: String,
    /// Client address as the broker saw it.
    pub client_ip: String,
    /// Client's User-Agent, truncated.
    pub user_agent: String,
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked session.
    pub session_id: Uuid,
    /// When, in epoch milliseconds.
    pub revoked_at_ms: i64,
    /// Epoch second after which every token of the session has expired.
    pub forget_after: i64,
}

/// What a role change or a (de)activation did to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// The account as it is now.
    pub user: User,
    /// Its role before the change.
    pub previous_role: Role,
    /// Its sessions still active, for ending them when it lost rights.
    pub active_sessions: Vec<Uuid>,
}

/// Accounts, sessions, the revocation feed and the tokens of mailed links, in auth's
/// database. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct UserStore {
    pool: Pool,
}

/// Opens the store a database URL names and applies its migrations.
pub async fn connect(url: &str) -> anyhow::Result<UserStore> {
    let store = UserStore::new(platform::sql::connect(url).await?);
    store.migrate().await?;
    Ok(store)
}

impl UserStore {
    /// A store on an open pool (migrations are applied by [`UserStore::migrate`]).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Applies pending migrations: auth's own, and the outbox's as version 3.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        outbox::migrate(
            &self.pool,
            sqlx::migrate!("./migrations/postgres"),
            sqlx::migrate!("./migrations/sqlite"),
            3,
        )
        .await
        .map_err(|error| StoreError::Database(error.into()))
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.pool.ping().await?)
    }

    /// The outbox its events are written to, for the relay.
    pub fn outbox(&self) -> outbox::Outbox {
        outbox::Outbox::new(self.pool.clone())
    }
}

/// Writes `event` to the outbox in `tx`, so it commits with the state change it tells of.
async fn insert_event(tx: &mut Transaction, event: &Event) -> Result<(), sqlx::Error> {
    platform::on_tx!(tx, |tx| {
        outbox::insert(event).execute(&mut **tx).await.map(drop)
    })
}

/// The sessions of user `$1` that are not revoked, by id.
const ACTIVE_SESSIONS: &str = "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL";
