//! The user store port: what auth needs from its database, whatever the database is.
//! One SQL implementation serves PostgreSQL (dev stack, cluster) and SQLite (embedded);
//! the URL scheme picks which.

mod passwords;
mod sql;

use crate::domain::{Account, Email, Role, Session, User, Username};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::events::Event;
use std::sync::Arc;
use uuid::Uuid;

pub use passwords::{AccountToken, NewAccountToken, PasswordStore, SessionRecord, TokenPurpose};
pub use sql::{PostgresUserStore, SqliteUserStore};

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

/// Accounts, sessions and the revocation feed.
#[async_trait]
pub trait UserStore: PasswordStore + Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The pool, for the outbox relay.
    fn pool(&self) -> platform::sql::Pool;
    /// The outbox its events are written to, for the relay.
    fn outbox(&self) -> platform::events::outbox::Outbox {
        platform::events::outbox::Outbox::new(self.pool())
    }
    /// Inserts an account and its `user.registered` event; `Taken` when the email is in use
    /// or the username is or ever was. The first account of an install becomes its owner.
    async fn insert_account(&self, account: &NewAccount, event: &Event)
    -> Result<User, StoreError>;
    /// The account a username names.
    async fn account_by_username(&self, username: &Username)
    -> Result<Option<Account>, StoreError>;
    /// The account an email names.
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError>;
    /// A user by id.
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// Up to `limit` users with usernames after `after`, in username order.
    async fn users_after(&self, after: &str, limit: u32) -> Result<Vec<User>, StoreError>;
    /// Inserts a session and its `user.logged_in` event.
    async fn insert_session(&self, session: &NewSession, event: &Event) -> Result<(), StoreError>;
    /// A session with its refresh hash.
    async fn session(&self, id: Uuid) -> Result<Option<(Session, String)>, StoreError>;
    /// The hash of the refresh token the last rotation replaced, and when it did.
    async fn previous_refresh(
        &self,
        id: Uuid,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError>;
    /// Replaces the refresh hash if it still is `old` (rotation), remembering `old` as the
    /// previous one; false if it was not.
    async fn rotate_refresh(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Revokes an active session and appends it to the feed, with `event` if given,
    /// atomically; false (and no event) when it was already revoked or does not exist.
    async fn revoke_session(
        &self,
        id: Uuid,
        revocation: Revocation,
        event: Option<&Event>,
    ) -> Result<bool, StoreError>;
    /// Feed entries revoked at or after `since_ms`.
    async fn revocations_since(&self, since_ms: i64) -> Result<Vec<Revocation>, StoreError>;
    /// Marks an account as being deleted (login refused from now on) and returns its
    /// active sessions; `None` when there is no such account. Idempotent.
    async fn begin_deletion(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<Uuid>>, StoreError>;
    /// Removes an account and its sessions, with the event `event_for` makes of it,
    /// atomically; false (and no event) when it was already gone.
    async fn delete_account(
        &self,
        id: Uuid,
        event_for: &(dyn for<'u> Fn(&'u User) -> Event + Send + Sync),
    ) -> Result<bool, StoreError>;
    /// Accounts whose deletion began before `begun_before`, at most `limit`.
    async fn pending_deletions(
        &self,
        begun_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Gives an account `role`; `LastOwner` when that would leave no active owner, `None`
    /// when there is no such account. Role changes run one at a time.
    async fn change_role(&self, id: Uuid, role: Role) -> Result<Option<AccountChange>, StoreError>;
    /// Deactivates an account as of `at` (kept if it already was), or reactivates it
    /// (`None`); `LastOwner` when that would deactivate the last active owner, `None`
    /// when there is no such account.
    async fn set_deactivated(
        &self,
        id: Uuid,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<AccountChange>, StoreError>;
    /// Drops feed entries whose tokens have all expired by `now` (epoch seconds).
    async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError>;
}

/// Opens the store a database URL names and applies its migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn UserStore>> {
    let store: Arc<dyn UserStore> = match platform::sql::connect(url).await? {
        platform::sql::Pool::Postgres(pool) => Arc::new(PostgresUserStore::new(pool)),
        platform::sql::Pool::Sqlite(pool) => Arc::new(SqliteUserStore::new(pool)),
    };
    store.migrate().await?;
    Ok(store)
}
