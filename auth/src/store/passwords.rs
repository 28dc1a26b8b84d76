//! The store's part in passwords, sessions and email verification: password changes,
//! the one-time tokens of mailed links (only their hashes), and the list of a user's
//! sessions. Same SQL on PostgreSQL and SQLite, like the rest of the store; times are
//! compared in Rust, since SQLite keeps them as text.

use super::{PostgresUserStore, SqliteUserStore, StoreError, sql::UserRow};
use crate::domain::{Account, Session, User};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::events::{Event, outbox};
use uuid::Uuid;

/// What a mailed link's token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Setting a new password without the old one.
    Reset,
    /// Proving the account's email address reaches its owner.
    Verify,
}

impl TokenPurpose {
    /// The value of the `purpose` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Verify => "verify",
        }
    }
}

/// A one-time token to store (its hash only).
#[derive(Debug, Clone)]
pub struct NewAccountToken {
    /// SHA-256 of the token, base64url.
    pub hash: String,
    /// What it is for.
    pub purpose: TokenPurpose,
    /// Whose it is.
    pub user_id: Uuid,
    /// The address it was mailed to.
    pub email: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A stored token, as redeeming it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountToken {
    /// Whose it is.
    pub user_id: Uuid,
    /// The address it was mailed to.
    pub email: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A session with what "my sessions" shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub session: Session,
    /// The last login or refresh.
    pub last_used_at: DateTime<Utc>,
    /// The address it was opened from.
    pub client_ip: String,
    /// The User-Agent it was opened with (bounded).
    pub user_agent: String,
}

/// Passwords, one-time tokens and session lists.
#[async_trait]
pub trait PasswordStore {
    /// The account with this id (not being deleted), with its password hash.
    async fn account_by_id(&self, id: Uuid) -> Result<Option<Account>, StoreError>;
    /// When the account's address was verified: `None` for no such account,
    /// `Some(None)` while unverified.
    async fn email_verified_at(
        &self,
        id: Uuid,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError>;
    /// Replaces the password hash, makes every unused reset token of the user useless,
    /// and writes `event`, atomically; false when there is no such account.
    async fn set_password(&self, id: Uuid, hash: &str, event: &Event) -> Result<bool, StoreError>;
    /// The user's sessions that are not revoked (expired ones included), newest first.
    async fn unrevoked_sessions(&self, user: Uuid) -> Result<Vec<SessionRecord>, StoreError>;
    /// Stores a token's hash, with `event` (the mail that carries it) if given.
    async fn insert_account_token(
        &self,
        token: &NewAccountToken,
        event: Option<&Event>,
    ) -> Result<(), StoreError>;
    /// Uses up an unused, unexpired token of `purpose` and returns it; `None` when it is
    /// unknown, used or expired (nothing changes then). For a reset, also sets
    /// `new_password_hash` and writes the event `event_for` makes, in the same
    /// transaction; for a verification, marks the address verified if the account still
    /// has it. Either way the address is verified afterwards: the link reached it. The
    /// event (if any) is written in the same transaction.
    async fn redeem_account_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
        new_password_hash: Option<&str>,
        event_for: &(dyn for<'u> Fn(&'u User, bool) -> Option<Event> + Send + Sync),
    ) -> Result<Option<AccountToken>, StoreError>;
    /// The unused, unexpired token of `purpose` with this hash, without using it up.
    async fn account_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<AccountToken>, StoreError>;
}

#[derive(sqlx::FromRow)]
struct AccountByIdRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

#[derive(sqlx::FromRow)]
struct SessionListRow {
    id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    client_ip: String,
    user_agent: String,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    user_id: Uuid,
    email: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

/// Marks every unused reset token of a user used (a new password makes them useless),
/// inside the transaction `$tx`.
macro_rules! spend_reset_tokens {
    ($tx:expr, $user:expr, $at:expr) => {
        sqlx::query(
            "UPDATE account_tokens SET used_at = $2 \
             WHERE user_id = $1 AND purpose = 'reset' AND used_at IS NULL",
        )
        .bind($user)
        .bind($at)
        .execute(&mut *$tx)
        .await
    };
}

macro_rules! sql_password_store {
    ($name:ident) => {
        #[async_trait]
        impl PasswordStore for $name {
            async fn account_by_id(&self, id: Uuid) -> Result<Option<Account>, StoreError> {
                let row: Option<AccountByIdRow> = sqlx::query_as(
                    "SELECT id, username, email, created_at, role, deactivated_at, password_hash FROM users \
                     WHERE id = $1 AND deleting_since IS NULL",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|row| Account {
                    user: row.user.into(),
                    password_hash: row.password_hash,
                }))
            }

            async fn email_verified_at(
                &self,
                id: Uuid,
            ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
                let row: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
                    "SELECT email_verified_at FROM users WHERE id = $1 AND deleting_since IS NULL",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(at,)| at))
            }

            async fn set_password(
                &self,
                id: Uuid,
                hash: &str,
                event: &Event,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query(
                    "UPDATE users SET password_hash = $2 WHERE id = $1 AND deleting_since IS NULL",
                )
                .bind(id)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Ok(false);
                }
                spend_reset_tokens!(tx, id, event.occurred_at)?;
                outbox::insert(event).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn unrevoked_sessions(
                &self,
                user: Uuid,
            ) -> Result<Vec<SessionRecord>, StoreError> {
                let rows: Vec<SessionListRow> = sqlx::query_as(
                    "SELECT id, user_id, created_at, expires_at, last_used_at, client_ip, user_agent \
                     FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT 1000",
                )
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| SessionRecord {
                        last_used_at: row.last_used_at.unwrap_or(row.created_at),
                        session: Session {
                            id: row.id,
                            user_id: row.user_id,
                            created_at: row.created_at,
                            expires_at: row.expires_at,
                            revoked_at: None,
                        },
                        client_ip: row.client_ip,
                        user_agent: row.user_agent,
                    })
                    .collect())
            }

            async fn insert_account_token(
                &self,
                token: &NewAccountToken,
                event: Option<&Event>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO account_tokens (token_hash, purpose, user_id, email, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token.hash)
                .bind(token.purpose.as_str())
                .bind(token.user_id)
                .bind(&token.email)
                .bind(token.created_at)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await?;
                if let Some(event) = event {
                    outbox::insert(event).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn redeem_account_token(
                &self,
                hash: &str,
                purpose: TokenPurpose,
                now: DateTime<Utc>,
                new_password_hash: Option<&str>,
                event_for: &(dyn for<'u> Fn(&'u User, bool) -> Option<Event> + Send + Sync),
            ) -> Result<Option<AccountToken>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Spent first, in the transaction's first statement: single use even when
                // two requests race (only one marks it), and on SQLite the write lock is
                // taken (waiting its turn) before anything is read, so the transaction
                // never has to upgrade a read snapshot another writer has outdated.
                let row: Option<TokenRow> = sqlx::query_as(
                    "UPDATE account_tokens SET used_at = $3 \
                     WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL \
                     RETURNING user_id, email, expires_at, used_at",
                )
                .bind(hash)
                .bind(purpose.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                // An expired token is not spent: dropping the transaction rolls it back.
                let Some(row) = row.filter(|row| now < row.expires_at) else {
                    return Ok(None);
                };
                let user: Option<UserRow> = sqlx::query_as(
                    "SELECT id, username, email, created_at, role, deactivated_at FROM users \
                     WHERE id = $1 AND deleting_since IS NULL",
                )
                .bind(row.user_id)
                .fetch_optional(&mut *tx)
                .await?;
                // The account is going, or its address changed since the link was mailed.
                let Some(user) = user.filter(|user| user.email == row.email) else {
                    return Ok(None);
                };
                if purpose == TokenPurpose::Reset {
                    let Some(new_hash) = new_password_hash else {
                        return Ok(None);
                    };
                    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                        .bind(user.id)
                        .bind(new_hash)
                        .execute(&mut *tx)
                        .await?;
                    spend_reset_tokens!(tx, user.id, now)?;
                }
                // A reset link that reached its owner verified the address as well.
                sqlx::query(
                    "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $2) WHERE id = $1",
                )
                .bind(user.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let user = User::from(user);
                if let Some(event) = event_for(&user, true) {
                    outbox::insert(&event).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(Some(AccountToken {
                    user_id: row.user_id,
                    email: row.email,
                    expires_at: row.expires_at,
                }))
            }

            async fn account_token(
                &self,
                hash: &str,
                purpose: TokenPurpose,
                now: DateTime<Utc>,
            ) -> Result<Option<AccountToken>, StoreError> {
                let row: Option<TokenRow> = sqlx::query_as(
                    "SELECT user_id, email, expires_at, used_at FROM account_tokens \
                     WHERE token_hash = $1 AND purpose = $2",
                )
                .bind(hash)
                .bind(purpose.as_str())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row
                    .filter(|row| row.used_at.is_none() && now < row.expires_at)
                    .map(|row| AccountToken {
                        user_id: row.user_id,
                        email: row.email,
                        expires_at: row.expires_at,
                    }))
            }
        }
    };
}

sql_password_store!(PostgresUserStore);
sql_password_store!(SqliteUserStore);
