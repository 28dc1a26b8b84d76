//! The store's part in passwords and email verification: password changes and the
//! one-time tokens of mailed links (only their hashes). Times are compared in Rust, since
//! SQLite keeps them as text.

use super::{StoreError, UserStore, accounts::UserRow, insert_event};
use crate::domain::User;
use chrono::{DateTime, Utc};
use platform::{events::Event, on_pool, on_tx, sql::Transaction};
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

/// A row of `account_tokens`.
#[derive(sqlx::FromRow)]
struct TokenRow {
    user_id: Uuid,
    email: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for AccountToken {
    fn from(row: TokenRow) -> Self {
        Self {
            user_id: row.user_id,
            email: row.email,
            expires_at: row.expires_at,
        }
    }
}

/// The statement that replaces user `$1`'s password hash with `$2`.
const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";

impl UserStore {
    /// When the account's address was verified: `None` for no such account,
    /// `Some(None)` while unverified.
    pub async fn email_verified_at(
        &self,
        id: Uuid,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
        const SQL: &str =
            "SELECT email_verified_at FROM users WHERE id = $1 AND deleting_since IS NULL";
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Replaces the password hash, makes every unused reset token of the user useless,
    /// and writes `event`, atomically; false when there is no such account.
    pub async fn set_password(
        &self,
        id: Uuid,
        hash: &str,
        event: &Event,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE users SET password_hash = $2 WHERE id = $1 AND deleting_since IS NULL";
        let mut tx = self.pool.begin().await?;
        let updated = on_tx!(&mut tx, |tx| {
            sqlx::query(SQL)
                .bind(id)
                .bind(hash)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Ok(false);
        }
        spend_reset_tokens(&mut tx, id, event.occurred_at).await?;
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a token's hash, with `event` (the mail that carries it) if given.
    pub async fn insert_account_token(
        &self,
        token: &NewAccountToken,
        event: Option<&Event>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_token(&mut tx, token).await?;
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Uses up an unused, unexpired token of `purpose` and returns it; `None` when it is
    /// unknown, used or expired (nothing changes then). For a reset, also sets
    /// `new_password_hash` and writes the event `event_for` makes, in the same
    /// transaction; for a verification, marks the address verified if the account still
    /// has it. Either way the address is verified afterwards: the link reached it. The
    /// event (if any) is written in the same transaction.
    pub async fn redeem_account_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
        new_password_hash: Option<&str>,
        event_for: &(dyn for<'u> Fn(&'u User, bool) -> Option<Event> + Send + Sync),
    ) -> Result<Option<AccountToken>, StoreError> {
        const SPEND: &str = "UPDATE account_tokens SET used_at = $3 \
                             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL \
                             RETURNING user_id, email, expires_at, used_at";
        const USER: &str = "SELECT id, username, email, created_at, role, deactivated_at \
                            FROM users WHERE id = $1 AND deleting_since IS NULL";
        const VERIFY: &str = "UPDATE users \
                              SET email_verified_at = COALESCE(email_verified_at, $2) \
                              WHERE id = $1";
        let mut tx = self.pool.begin().await?;
        // Spent first, in the transaction's first statement: single use even when two
        // requests race (only one marks it), and on SQLite the write lock is taken
        // (waiting its turn) before anything is read, so the transaction never has to
        // upgrade a read snapshot another writer has outdated.
        let row: Option<TokenRow> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(SPEND)
                .bind(hash)
                .bind(purpose.as_str())
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?
        });
        // An expired token is not spent: dropping the transaction rolls it back.
        let Some(row) = row.filter(|row| now < row.expires_at) else {
            return Ok(None);
        };
        let user: Option<UserRow> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(USER)
                .bind(row.user_id)
                .fetch_optional(&mut **tx)
                .await?
        });
        // The account is going, or its address changed since the link was mailed.
        let Some(user) = user.filter(|user| user.email == row.email) else {
            return Ok(None);
        };
        if purpose == TokenPurpose::Reset {
            let Some(new_hash) = new_password_hash else {
                return Ok(None);
            };
            on_tx!(&mut tx, |tx| {
                sqlx::query(SET_PASSWORD_HASH)
                    .bind(user.id)
                    .bind(new_hash)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })?;
            spend_reset_tokens(&mut tx, user.id, now).await?;
        }
        // A reset link that reached its owner verified the address as well.
        on_tx!(&mut tx, |tx| {
            sqlx::query(VERIFY)
                .bind(user.id)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        if let Some(event) = event_for(&User::from(user), true) {
            insert_event(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(Some(row.into()))
    }

    /// The unused, unexpired token of `purpose` with this hash, without using it up.
    pub async fn account_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<AccountToken>, StoreError> {
        const SQL: &str = "SELECT user_id, email, expires_at, used_at FROM account_tokens \
                           WHERE token_hash = $1 AND purpose = $2";
        let row: Option<TokenRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL)
                .bind(hash)
                .bind(purpose.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row
            .filter(|row| row.used_at.is_none() && now < row.expires_at)
            .map(AccountToken::from))
    }
}

/// Marks every unused reset token of `user` used as of `at` (a new password makes them
/// useless), inside the transaction.
async fn spend_reset_tokens(
    tx: &mut Transaction,
    user: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE account_tokens SET used_at = $2 \
                       WHERE user_id = $1 AND purpose = 'reset' AND used_at IS NULL";
    on_tx!(tx, |tx| {
        sqlx::query(SQL)
            .bind(user)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map(drop)
    })
}

/// Stores a token's hash inside the transaction.
pub(super) async fn insert_token(
    tx: &mut Transaction,
    token: &NewAccountToken,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO account_tokens \
                       (token_hash, purpose, user_id, email, created_at, expires_at) \
                       VALUES ($1, $2, $3, $4, $5, $6)";
    on_tx!(tx, |tx| {
        sqlx::query(SQL)
            .bind(&token.hash)
            .bind(token.purpose.as_str())
            .bind(token.user_id)
            .bind(&token.email)
            .bind(token.created_at)
            .bind(token.expires_at)
            .execute(&mut **tx)
            .await
            .map(drop)
    })
}
