//! Sessions and the revocation feed: opening a session, rotating its refresh token,
//! revoking it (the feed row every replica polls written in the same transaction), the
//! list "my sessions" shows, and pruning feed rows whose tokens have all expired.

use super::{NewSession, Revocation, StoreError, UserStore, insert_event};
use crate::domain::Session;
use chrono::{DateTime, SubsecRound, Utc};
use platform::{events::Event, on_pool, on_tx};
use uuid::Uuid;

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

/// A row of `sessions` with its refresh hash.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    refresh_hash: String,
}

/// A row of `sessions` as "my sessions" lists it.
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

/// A row of `revocations`.
#[derive(sqlx::FromRow)]
struct RevocationRow {
    session_id: Uuid,
    revoked_at_ms: i64,
    forget_after: i64,
}

impl UserStore {
    /// Inserts a session and its `user.logged_in` event.
    pub async fn insert_session(&self, new: &NewSession, event: &Event) -> Result<(), StoreError> {
        self.insert_sessions([(new, event)]).await
    }

    /// Inserts sessions and their `user.logged_in` events in one transaction: all or
    /// none (a burst of logins is one commit, `crate::accounts`' session writer).
    pub async fn insert_sessions<'a>(
        &self,
        sessions: impl IntoIterator<Item = (&'a NewSession, &'a Event)> + Send,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO sessions \
                           (id, user_id, refresh_hash, created_at, expires_at, revoked_at, \
                           client_ip, user_agent) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let mut tx = self.pool.begin().await?;
        for (new, event) in sessions {
            on_tx!(&mut tx, |tx| {
                sqlx::query(SQL)
                    .bind(new.session.id)
                    .bind(new.session.user_id)
                    .bind(&new.refresh_hash)
                    .bind(new.session.created_at)
                    .bind(new.session.expires_at)
                    .bind(new.session.revoked_at)
                    .bind(&new.client_ip)
                    .bind(&new.user_agent)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })?;
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A session with its refresh hash.
    pub async fn session(&self, id: Uuid) -> Result<Option<(Session, String)>, StoreError> {
        const SQL: &str = "SELECT id, user_id, created_at, expires_at, revoked_at, refresh_hash \
                           FROM sessions WHERE id = $1";
        let row: Option<SessionRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?
        });
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

    /// The hash of the refresh token the last rotation replaced, and when it did.
    pub async fn previous_refresh(
        &self,
        id: Uuid,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        const SQL: &str = "SELECT previous_refresh_hash, rotated_at FROM sessions WHERE id = $1";
        let row: Option<(Option<String>, Option<DateTime<Utc>>)> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(id).fetch_optional(pool).await?
        });
        Ok(row.and_then(|(hash, at)| hash.zip(at)))
    }

    /// Replaces the refresh hash if it still is `old` (rotation), remembering `old` as the
    /// previous one; false if it was not.
    pub async fn rotate_refresh(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sessions SET refresh_hash = $3, expires_at = $4, \
                           previous_refresh_hash = $2, rotated_at = $5, last_used_at = $5 \
                           WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL";
        let rotated_at = Utc::now().trunc_subsecs(6);
        let _turn = self.pool.write_turn().await?;
        let rotated = on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(old)
                .bind(new)
                .bind(expires_at)
                .bind(rotated_at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(rotated == 1)
    }

    /// Revokes an active session and appends it to the feed, with `event` if given,
    /// atomically; false (and no event) when it was already revoked or does not exist.
    pub async fn revoke_session(
        &self,
        id: Uuid,
        revocation: Revocation,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        const REVOKE: &str =
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        const FEED: &str =
            "INSERT INTO revocations (session_id, revoked_at_ms, forget_after) VALUES ($1, $2, $3)";
        let revoked_at = DateTime::<Utc>::from_timestamp_millis(revocation.revoked_at_ms)
            .expect("revocation times come from the clock, well inside chrono's range");
        let mut tx = self.pool.begin().await?;
        let updated = on_tx!(&mut tx, |tx| {
            sqlx::query(REVOKE)
                .bind(id)
                .bind(revoked_at)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Ok(false);
        }
        on_tx!(&mut tx, |tx| {
            sqlx::query(FEED)
                .bind(id)
                .bind(revocation.revoked_at_ms)
                .bind(revocation.forget_after)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        if let Some(event) = event {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Feed entries revoked at or after `since_ms`.
    pub async fn revocations_since(&self, since_ms: i64) -> Result<Vec<Revocation>, StoreError> {
        const SQL: &str = "SELECT session_id, revoked_at_ms, forget_after FROM revocations \
                           WHERE revoked_at_ms >= $1 ORDER BY revoked_at_ms";
        let rows: Vec<RevocationRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(since_ms).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|row| Revocation {
                session_id: row.session_id,
                revoked_at_ms: row.revoked_at_ms,
                forget_after: row.forget_after,
            })
            .collect())
    }

    /// Drops feed entries whose tokens have all expired by `now` (epoch seconds).
    pub async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM revocations WHERE forget_after <= $1";
        let _turn = self.pool.write_turn().await?;
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The user's sessions that are not revoked (expired ones included), newest first.
    pub async fn unrevoked_sessions(&self, user: Uuid) -> Result<Vec<SessionRecord>, StoreError> {
        const SQL: &str = "SELECT id, user_id, created_at, expires_at, last_used_at, client_ip, \
                           user_agent \
                           FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                           ORDER BY id DESC LIMIT 1000";
        let rows: Vec<SessionListRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(user).fetch_all(pool).await?
        });
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
}
