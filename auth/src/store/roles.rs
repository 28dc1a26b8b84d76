//! Roles and deactivation. Every change runs under one lock, so the install always keeps
//! an active owner: two owners demoting each other cannot both succeed.

use super::{ACTIVE_SESSIONS, AccountChange, StoreError, UserStore, accounts::UserRow};
use crate::domain::{Role, User};
use chrono::{DateTime, Utc};
use platform::{on_tx, sql::Transaction};
use uuid::Uuid;

impl UserStore {
    /// Gives an account `role`; `LastOwner` when that would leave no active owner, `None`
    /// when there is no such account. Role changes run one at a time.
    pub async fn change_role(
        &self,
        id: Uuid,
        role: Role,
    ) -> Result<Option<AccountChange>, StoreError> {
        const SQL: &str = "UPDATE users SET role = $2 WHERE id = $1";
        let Some((mut tx, before)) = self.begin_role_change(id).await? else {
            return Ok(None);
        };
        let loses_ownership = before.role == Role::Owner && role != Role::Owner;
        if loses_ownership && before.deactivated_at.is_none() {
            keep_an_owner(&mut tx, id).await?;
        }
        on_tx!(&mut tx, |tx| {
            sqlx::query(SQL)
                .bind(id)
                .bind(role.as_str())
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        finish_role_change(tx, id, &before).await.map(Some)
    }

    /// Deactivates an account as of `at` (kept if it already was), or reactivates it
    /// (`None`); `LastOwner` when that would deactivate the last active owner, `None`
    /// when there is no such account.
    pub async fn set_deactivated(
        &self,
        id: Uuid,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<AccountChange>, StoreError> {
        const DEACTIVATE: &str =
            "UPDATE users SET deactivated_at = COALESCE(deactivated_at, $2) WHERE id = $1";
        const REACTIVATE: &str = "UPDATE users SET deactivated_at = NULL WHERE id = $1";
        let Some((mut tx, before)) = self.begin_role_change(id).await? else {
            return Ok(None);
        };
        match at {
            Some(at) => {
                if before.role == Role::Owner && before.deactivated_at.is_none() {
                    keep_an_owner(&mut tx, id).await?;
                }
                on_tx!(&mut tx, |tx| {
                    sqlx::query(DEACTIVATE)
                        .bind(id)
                        .bind(at)
                        .execute(&mut **tx)
                        .await
                        .map(drop)
                })?;
            }
            None => {
                on_tx!(&mut tx, |tx| {
                    sqlx::query(REACTIVATE)
                        .bind(id)
                        .execute(&mut **tx)
                        .await
                        .map(drop)
                })?;
            }
        }
        finish_role_change(tx, id, &before).await.map(Some)
    }

    /// Begins a role change of account `id`: its transaction, holding the lock of role
    /// changes, and the account as it was; `None` when there is no such account.
    async fn begin_role_change(&self, id: Uuid) -> Result<Option<(Transaction, User)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_role_changes(&mut tx).await?;
        Ok(active_account(&mut tx, id)
            .await?
            .map(|before| (tx, before)))
    }
}

/// Ends a role change of account `id` begun by [`UserStore::begin_role_change`]: what
/// changed since `before`, committed.
async fn finish_role_change(
    mut tx: Transaction,
    id: Uuid,
    before: &User,
) -> Result<AccountChange, StoreError> {
    let change = account_change(&mut tx, id, before).await?;
    tx.commit().await?;
    Ok(change)
}

/// Takes the lock every role change holds (a row lock on PostgreSQL, the write lock on
/// SQLite), so two owners demoting each other cannot both succeed.
async fn lock_role_changes(tx: &mut Transaction) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE ownership SET role_changes = role_changes + 1 WHERE id = 1";
    on_tx!(tx, |tx| sqlx::query(SQL).execute(&mut **tx).await.map(drop))
}

/// The account `id` (not being deleted) as a [`User`], inside the transaction.
async fn active_account(tx: &mut Transaction, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    const SQL: &str = "SELECT id, username, email, created_at, role, deactivated_at \
                       FROM users WHERE id = $1 AND deleting_since IS NULL";
    let row: Option<UserRow> = on_tx!(tx, |tx| {
        sqlx::query_as(SQL)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
    });
    Ok(row.map(User::from))
}

/// Returns `LastOwner` unless an active owner other than `id` remains.
async fn keep_an_owner(tx: &mut Transaction, id: Uuid) -> Result<(), StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM users WHERE role = 'owner' AND id <> $1 \
                       AND deactivated_at IS NULL AND deleting_since IS NULL";
    let others: i64 = on_tx!(tx, |tx| {
        sqlx::query_scalar(SQL)
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
    });
    if others == 0 {
        return Err(StoreError::LastOwner);
    }
    Ok(())
}

/// The account after a change, with its role `before` and its active sessions.
async fn account_change(
    tx: &mut Transaction,
    id: Uuid,
    before: &User,
) -> Result<AccountChange, sqlx::Error> {
    const SQL: &str = "SELECT id, username, email, created_at, role, deactivated_at \
                       FROM users WHERE id = $1";
    let after: UserRow = on_tx!(tx, |tx| {
        sqlx::query_as(SQL).bind(id).fetch_one(&mut **tx).await?
    });
    let sessions: Vec<Uuid> = on_tx!(tx, |tx| {
        sqlx::query_scalar(ACTIVE_SESSIONS)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?
    });
    Ok(AccountChange {
        user: User::from(after),
        previous_role: before.role,
        active_sessions: sessions,
    })
}
