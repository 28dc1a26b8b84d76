//! The SQL adapter of [`UserStore`]. PostgreSQL and SQLite take the same statements
//! (`$n` placeholders work in both); only the migrations differ. The implementation is
//! written once and instantiated for each backend by `sql_user_store!`, which keeps each
//! instance fully concrete (no generic sqlx bounds) while never duplicating a query.

use super::{AccountChange, NewAccount, NewSession, Revocation, StoreError, Taken, UserStore};
use crate::domain::{Account, Email, Role, Session, User, Username};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use platform::events::{Event, outbox};
use uuid::Uuid;

/// A row of `users`, as `USER_COLUMNS` selects it.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub(super) id: Uuid,
    pub(super) username: String,
    pub(super) email: String,
    created_at: DateTime<Utc>,
    role: String,
    deactivated_at: Option<DateTime<Utc>>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            username: row.username,
            email: row.email,
            created_at: row.created_at,
            // The schema's CHECK admits only known names; were one ever unknown, the
            // account gets no rights rather than some.
            role: Role::parse(&row.role).unwrap_or_default(),
            deactivated_at: row.deactivated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl From<AccountRow> for Account {
    fn from(row: AccountRow) -> Self {
        Self {
            user: row.user.into(),
            password_hash: row.password_hash,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    refresh_hash: String,
}

#[derive(sqlx::FromRow)]
struct RevocationRow {
    session_id: Uuid,
    revoked_at_ms: i64,
    forget_after: i64,
}

const ACCOUNT_COLUMNS: &str =
    "id, username, email, password_hash, created_at, role, deactivated_at";
/// The columns of a [`UserRow`].
const USER_COLUMNS: &str = "id, username, email, created_at, role, deactivated_at";

/// Takes the lock every role change holds (a row lock on PostgreSQL, the write lock on
/// SQLite), so two owners demoting each other cannot both succeed.
macro_rules! lock_role_changes {
    ($tx:ident) => {
        sqlx::query("UPDATE ownership SET role_changes = role_changes + 1 WHERE id = 1")
            .execute(&mut *$tx)
            .await?;
    };
}

/// The account `id` (not being deleted) as a [`User`], inside the transaction.
macro_rules! active_account {
    ($tx:ident, $id:expr) => {{
        let sql =
            format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleting_since IS NULL");
        let row: Option<UserRow> = sqlx::query_as(&sql)
            .bind($id)
            .fetch_optional(&mut *$tx)
            .await?;
        row.map(User::from)
    }};
}

/// Returns `LastOwner` unless an active owner other than `id` remains.
macro_rules! keep_an_owner {
    ($tx:ident, $id:expr) => {
        let (others,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM users WHERE role = 'owner' AND id <> $1 \
             AND deactivated_at IS NULL AND deleting_since IS NULL",
        )
        .bind($id)
        .fetch_one(&mut *$tx)
        .await?;
        if others == 0 {
            return Err(StoreError::LastOwner);
        }
    };
}

/// The account after a change, with its role before and its active sessions.
macro_rules! account_change {
    ($tx:ident, $id:expr, $before:ident) => {{
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let after: UserRow = sqlx::query_as(&sql).bind($id).fetch_one(&mut *$tx).await?;
        let sessions: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL")
                .bind($id)
                .fetch_all(&mut *$tx)
                .await?;
        AccountChange {
            user: User::from(after),
            previous_role: $before.role,
            active_sessions: sessions.into_iter().map(|(session,)| session).collect(),
        }
    }};
}

macro_rules! sql_user_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $migrations:literal, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub(super) pool: sqlx::Pool<$db>,
        }

        impl $name {
            /// A store on an open pool (migrations are applied by [`UserStore::migrate`]).
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }
        }

        #[async_trait]
        impl UserStore for $name {
            async fn migrate(&self) -> Result<(), StoreError> {
                platform::events::outbox::with_migration(sqlx::migrate!($migrations), platform::sql::Backend::$variant, 3).run(&self.pool).await.map_err(|error| StoreError::Database(error.into()))
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn pool(&self) -> platform::sql::Pool {
                platform::sql::Pool::$variant(self.pool.clone())
            }

            async fn insert_account(&self, account: &NewAccount, event: &Event) -> Result<User, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Names are taken for good: the row outlives the account.
                let reserved = sqlx::query(
                    "INSERT INTO usernames (username, user_id, taken_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(account.username.as_str())
                .bind(account.id)
                .bind(account.created_at)
                .execute(&mut *tx)
                .await?;
                if reserved.rows_affected() == 0 {
                    return Err(StoreError::Taken(Taken::Username));
                }
                // Only one registration ever inserts the ownership row: the install's first.
                let first = sqlx::query("INSERT INTO ownership (id, first_owner) VALUES (1, $1) ON CONFLICT DO NOTHING")
                    .bind(account.id)
                    .execute(&mut *tx)
                    .await?;
                let role = if first.rows_affected() == 1 { Role::Owner } else { Role::Member };
                let inserted = sqlx::query(
                    "INSERT INTO users (id, username, email, password_hash, created_at, role) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(account.id)
                .bind(account.username.as_str())
                .bind(account.email.as_str())
                .bind(&account.password_hash)
                .bind(account.created_at)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {
                        outbox::insert(event).execute(&mut *tx).await?;
                        tx.commit().await?;
                        Ok(User {
                        id: account.id,
                        username: account.username.as_str().to_owned(),
                        email: account.email.as_str().to_owned(),
                        created_at: account.created_at,
                        role,
                        deactivated_at: None,
                        })
                    }
                    Err(error) if platform::sql::is_unique_violation(&error) => {
                        drop(tx);
                        let (same_name,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE username = $1")
                            .bind(account.username.as_str())
                            .fetch_one(&self.pool)
                            .await?;
                        Err(StoreError::Taken(if same_name > 0 { Taken::Username } else { Taken::Email }))
                    }
                    Err(error) => Err(error.into()),
                }
            }

            async fn account_by_username(&self, username: &Username) -> Result<Option<Account>, StoreError> {
                let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE username = $1 AND deleting_since IS NULL");
                let row: Option<AccountRow> =
                    sqlx::query_as(&sql).bind(username.as_str()).fetch_optional(&self.pool).await?;
                Ok(row.map(Account::from))
            }

            async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
                let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE email = $1 AND deleting_since IS NULL");
                let row: Option<AccountRow> =
                    sqlx::query_as(&sql).bind(email.as_str()).fetch_optional(&self.pool).await?;
                Ok(row.map(Account::from))
            }

            async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleting_since IS NULL");
                let row: Option<UserRow> =
                    sqlx::query_as(&sql)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(User::from))
            }

            async fn users_after(&self, after: &str, limit: u32) -> Result<Vec<User>, StoreError> {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users \
                     WHERE username > $1 AND deleting_since IS NULL ORDER BY username LIMIT $2"
                );
                let rows: Vec<UserRow> = sqlx::query_as(&sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(User::from).collect())
            }

            async fn insert_session(&self, new: &NewSession, event: &Event) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, refresh_hash, created_at, expires_at, revoked_at, client_ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(new.session.id)
                .bind(new.session.user_id)
                .bind(&new.refresh_hash)
                .bind(new.session.created_at)
                .bind(new.session.expires_at)
                .bind(new.session.revoked_at)
                .bind(&new.client_ip)
                .bind(&new.user_agent)
                .execute(&mut *tx)
                .await?;
                outbox::insert(event).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(&self, id: Uuid) -> Result<Option<(Session, String)>, StoreError> {
                let row: Option<SessionRow> = sqlx::query_as(
                    "SELECT id, user_id, created_at, expires_at, revoked_at, refresh_hash FROM sessions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| {
                    let session = Session {
                        id: row.id,
                        user_id: row.user_id,
                        created_at: row.created_at,
                        expires_at: row.expires_at,
                        revoked_at: row.revoked_at,
                    };
                    (session, row.refresh_hash)
                }))
            }

            async fn rotate_refresh(
                &self,
                id: Uuid,
                old: &str,
                new: &str,
                expires_at: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE sessions SET refresh_hash = $3, expires_at = $4, \
                     previous_refresh_hash = $2, rotated_at = $5, last_used_at = $5 \
                     WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(old)
                .bind(new)
                .bind(expires_at)
                .bind(Utc::now().trunc_subsecs(6))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn previous_refresh(
                &self,
                id: Uuid,
            ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
                let row: Option<(Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
                    "SELECT previous_refresh_hash, rotated_at FROM sessions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.and_then(|(hash, at)| hash.zip(at)))
            }

            async fn revoke_session(&self, id: Uuid, revocation: Revocation, event: Option<&Event>) -> Result<bool, StoreError> {
                let revoked_at = DateTime::<Utc>::from_timestamp_millis(revocation.revoked_at_ms)
                    .expect("revocation times come from the clock, well inside chrono's range");
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(revoked_at)
                    .execute(&mut *tx)
                    .await?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query("INSERT INTO revocations (session_id, revoked_at_ms, forget_after) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(revocation.revoked_at_ms)
                    .bind(revocation.forget_after)
                    .execute(&mut *tx)
                    .await?;
                if let Some(event) = event {
                    outbox::insert(event).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn revocations_since(&self, since_ms: i64) -> Result<Vec<Revocation>, StoreError> {
                let rows: Vec<RevocationRow> = sqlx::query_as(
                    "SELECT session_id, revoked_at_ms, forget_after FROM revocations \
                     WHERE revoked_at_ms >= $1 ORDER BY revoked_at_ms",
                )
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| Revocation {
                        session_id: row.session_id,
                        revoked_at_ms: row.revoked_at_ms,
                        forget_after: row.forget_after,
                    })
                    .collect())
            }

            async fn begin_deletion(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<Vec<Uuid>>, StoreError> {
                let marked = sqlx::query("UPDATE users SET deleting_since = COALESCE(deleting_since, $2) WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                if marked.rows_affected() == 0 {
                    return Ok(None);
                }
                let sessions: Vec<(Uuid,)> =
                    sqlx::query_as("SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL")
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(Some(sessions.into_iter().map(|(session,)| session).collect()))
            }

            async fn delete_account(
                &self,
                id: Uuid,
                event_for: &(dyn for<'u> Fn(&'u User) -> Event + Send + Sync),
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let sql = format!("DELETE FROM users WHERE id = $1 RETURNING {USER_COLUMNS}");
                let deleted: Option<UserRow> =
                    sqlx::query_as(&sql)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(user) = deleted else {
                    return Ok(false);
                };
                let event = event_for(&User::from(user));
                outbox::insert(&event).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn pending_deletions(&self, begun_before: DateTime<Utc>, limit: u32) -> Result<Vec<Uuid>, StoreError> {
                // Compared here, not in SQL: SQLite keeps timestamps as text.
                let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT id, deleting_since FROM users WHERE deleting_since IS NOT NULL ORDER BY id LIMIT 10000",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .filter(|(_, since)| *since < begun_before)
                    .map(|(id, _)| id)
                    .take(limit as usize)
                    .collect())
            }

            async fn change_role(&self, id: Uuid, role: Role) -> Result<Option<AccountChange>, StoreError> {
                let mut tx = self.pool.begin().await?;
                lock_role_changes!(tx);
                let Some(before) = active_account!(tx, id) else {
                    return Ok(None);
                };
                let loses_ownership = before.role == Role::Owner && role != Role::Owner;
                if loses_ownership && before.deactivated_at.is_none() {
                    keep_an_owner!(tx, id);
                }
                sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                    .bind(id)
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
                let change = account_change!(tx, id, before);
                tx.commit().await?;
                Ok(Some(change))
            }

            async fn set_deactivated(
                &self,
                id: Uuid,
                at: Option<DateTime<Utc>>,
            ) -> Result<Option<AccountChange>, StoreError> {
                let mut tx = self.pool.begin().await?;
                lock_role_changes!(tx);
                let Some(before) = active_account!(tx, id) else {
                    return Ok(None);
                };
                let update = match at {
                    Some(at) => {
                        if before.role == Role::Owner && before.deactivated_at.is_none() {
                            keep_an_owner!(tx, id);
                        }
                        sqlx::query("UPDATE users SET deactivated_at = COALESCE(deactivated_at, $2) WHERE id = $1")
                            .bind(id)
                            .bind(at)
                    }
                    None => sqlx::query("UPDATE users SET deactivated_at = NULL WHERE id = $1").bind(id),
                };
                update.execute(&mut *tx).await?;
                let change = account_change!(tx, id, before);
                tx.commit().await?;
                Ok(Some(change))
            }

            async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM revocations WHERE forget_after <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

sql_user_store!(
    /// The user store on PostgreSQL.
    PostgresUserStore,
    sqlx::Postgres,
    "./migrations/postgres",
    Postgres
);

sql_user_store!(
    /// The user store on SQLite (the embedded run).
    SqliteUserStore,
    sqlx::Sqlite,
    "./migrations/sqlite",
    Sqlite
);
