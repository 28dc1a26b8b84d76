//! Accounts: registering one (its username reserved for good, the install's first made
//! owner), finding one by name, address or id, paging through them, and deleting one in
//! two steps (marked first, so login is refused at once; removed when the other services
//! have forgotten it).

use super::{
    ACTIVE_SESSIONS, NewAccount, StoreError, Taken, UserStore, insert_event,
    passwords::{NewAccountToken, insert_token},
};
use crate::domain::{Account, Email, Role, User, Username};
use chrono::{DateTime, Utc};
use platform::{events::Event, on_pool, on_tx};
use uuid::Uuid;

/// A row of `users` as [`User`] has it (id, username, email, created_at, role,
/// deactivated_at).
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

/// A [`UserRow`] with the password hash.
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

/// The account (not being deleted) a name or an address names, as `$1`, with its hash.
const ACCOUNT_BY_USERNAME: &str = "SELECT id, username, email, password_hash, created_at, role, \
                                   deactivated_at \
                                   FROM users WHERE username = $1 AND deleting_since IS NULL";
/// As [`ACCOUNT_BY_USERNAME`], by email.
const ACCOUNT_BY_EMAIL: &str = "SELECT id, username, email, password_hash, created_at, role, \
                                deactivated_at \
                                FROM users WHERE email = $1 AND deleting_since IS NULL";

impl UserStore {
    /// Inserts an account and its `user.registered` event; `Taken` when the email is in use
    /// or the username is or ever was. The first account of an install becomes its owner.
    pub async fn insert_account(
        &self,
        account: &NewAccount,
        verify_link: Option<&NewAccountToken>,
        event: &Event,
    ) -> Result<User, StoreError> {
        // Names are taken for good: the row outlives the account.
        const RESERVE: &str = "INSERT INTO usernames (username, user_id, taken_at) \
                               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        // Only one registration ever inserts the ownership row: the install's first.
        const CLAIM_OWNERSHIP: &str =
            "INSERT INTO ownership (id, first_owner) VALUES (1, $1) ON CONFLICT DO NOTHING";
        const INSERT: &str = "INSERT INTO users \
                              (id, username, email, password_hash, created_at, role) \
                              VALUES ($1, $2, $3, $4, $5, $6)";
        let mut tx = self.pool.begin().await?;
        let reserved = on_tx!(&mut tx, |tx| {
            sqlx::query(RESERVE)
                .bind(account.username.as_str())
                .bind(account.id)
                .bind(account.created_at)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        if reserved == 0 {
            return Err(StoreError::Taken(Taken::Username));
        }
        let first = on_tx!(&mut tx, |tx| {
            sqlx::query(CLAIM_OWNERSHIP)
                .bind(account.id)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        let role = if first == 1 {
            Role::Owner
        } else {
            Role::Member
        };
        let inserted = on_tx!(&mut tx, |tx| {
            sqlx::query(INSERT)
                .bind(account.id)
                .bind(account.username.as_str())
                .bind(account.email.as_str())
                .bind(&account.password_hash)
                .bind(account.created_at)
                .bind(role.as_str())
                .execute(&mut **tx)
                .await
                .map(drop)
        });
        match inserted {
            Ok(()) => {
                if let Some(link) = verify_link {
                    insert_token(&mut tx, link).await?;
                }
                insert_event(&mut tx, event).await?;
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
                Err(StoreError::Taken(self.taken_by(&account.username).await?))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Which field a registration with `username` collided on, once it has: the username
    /// when an account has it, else the email.
    async fn taken_by(&self, username: &Username) -> Result<Taken, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM users WHERE username = $1";
        let same_name: i64 = on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(SQL)
                .bind(username.as_str())
                .fetch_one(pool)
                .await?
        });
        Ok(if same_name > 0 {
            Taken::Username
        } else {
            Taken::Email
        })
    }

    /// The account a username names.
    pub async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(ACCOUNT_BY_USERNAME)
                .bind(username.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Account::from))
    }

    /// The account an email names.
    pub async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        let row: Option<AccountRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(ACCOUNT_BY_EMAIL)
                .bind(email.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Account::from))
    }

    /// The account with this id (not being deleted), with its password hash.
    pub async fn account_by_id(&self, id: Uuid) -> Result<Option<Account>, StoreError> {
        const SQL: &str = "SELECT id, username, email, created_at, role, deactivated_at, \
                           password_hash \
                           FROM users WHERE id = $1 AND deleting_since IS NULL";
        let row: Option<AccountRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(Account::from))
    }

    /// A user by id.
    pub async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        const SQL: &str = "SELECT id, username, email, created_at, role, deactivated_at \
                           FROM users WHERE id = $1 AND deleting_since IS NULL";
        let row: Option<UserRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(User::from))
    }

    /// Up to `limit` users with usernames after `after`, in username order.
    pub async fn users_after(&self, after: &str, limit: u32) -> Result<Vec<User>, StoreError> {
        const SQL: &str = "SELECT id, username, email, created_at, role, deactivated_at \
                           FROM users WHERE username > $1 AND deleting_since IS NULL \
                           ORDER BY username LIMIT $2";
        let rows: Vec<UserRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(User::from).collect())
    }

    /// Marks an account as being deleted (login refused from now on) and returns its
    /// active sessions; `None` when there is no such account. Idempotent.
    pub async fn begin_deletion(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<Uuid>>, StoreError> {
        const MARK: &str =
            "UPDATE users SET deleting_since = COALESCE(deleting_since, $2) WHERE id = $1";
        let _turn = self.pool.write_turn().await?;
        let marked = on_pool!(&self.pool, |pool| {
            sqlx::query(MARK)
                .bind(id)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if marked == 0 {
            return Ok(None);
        }
        let sessions: Vec<Uuid> = on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(ACTIVE_SESSIONS)
                .bind(id)
                .fetch_all(pool)
                .await?
        });
        Ok(Some(sessions))
    }

    /// Removes an account and its sessions, with the event `event_for` makes of it,
    /// atomically; false (and no event) when it was already gone.
    pub async fn delete_account(
        &self,
        id: Uuid,
        event_for: &(dyn for<'u> Fn(&'u User) -> Event + Send + Sync),
    ) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM users WHERE id = $1 \
                           RETURNING id, username, email, created_at, role, deactivated_at";
        let mut tx = self.pool.begin().await?;
        let deleted: Option<UserRow> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(SQL)
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
        });
        let Some(user) = deleted else {
            return Ok(false);
        };
        insert_event(&mut tx, &event_for(&User::from(user))).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Accounts whose deletion began before `begun_before`, at most `limit`.
    pub async fn pending_deletions(
        &self,
        begun_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        const SQL: &str = "SELECT id, deleting_since FROM users \
                           WHERE deleting_since IS NOT NULL ORDER BY id LIMIT 10000";
        // Compared here, not in SQL: SQLite keeps timestamps as text.
        let rows: Vec<(Uuid, DateTime<Utc>)> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .filter(|(_, since)| *since < begun_before)
            .map(|(id, _)| id)
            .take(limit as usize)
            .collect())
    }
}
