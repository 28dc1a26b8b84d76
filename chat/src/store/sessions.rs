//! Chat sessions: the login sessions chat learns of from auth's events, kept to know who
//! is signed in, since when and from which client.

use super::{ChatStore, StoreError, changed, placeholders};
use crate::domain::UserRef;
use chrono::{DateTime, Utc};
use platform::on_pool;
use uuid::Uuid;

/// A login session as chat knows it (from `user.logged_in` / `user.logged_out` events):
/// who is signed in, since when, from which client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSession {
    /// The auth session id.
    pub session_id: Uuid,
    /// Whose.
    pub user: UserRef,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it ends unless refreshed, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it ended (logout), if it did.
    pub ended_at: Option<DateTime<Utc>>,
    /// The client's address.
    pub client_ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
}

/// A chat session as stored (see [`COLUMNS`]).
#[derive(sqlx::FromRow)]
struct ChatSessionRow {
    session_id: Uuid,
    user_id: Uuid,
    username: String,
    started_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    client_ip: String,
    user_agent: String,
}

impl From<ChatSessionRow> for ChatSession {
    fn from(row: ChatSessionRow) -> Self {
        Self {
            session_id: row.session_id,
            user: UserRef {
                id: row.user_id,
                username: row.username,
            },
            started_at: row.started_at,
            expires_at: row.expires_at,
            ended_at: row.ended_at,
            client_ip: row.client_ip,
            user_agent: row.user_agent,
        }
    }
}

/// A chat session's columns.
const COLUMNS: &str =
    "session_id, user_id, username, started_at, expires_at, ended_at, client_ip, user_agent";

impl ChatStore {
    /// Records a session that began; false when it was known already (also when its end
    /// arrived first: a session never reopens).
    pub async fn start_chat_session(&self, session: &ChatSession) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO chat_sessions ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (session_id) DO NOTHING"
        );
        let _turn = self.pool.write_turn().await?;
        let inserted = on_pool!(&self.pool, |pool| {
            sqlx::query(&sql)
                .bind(session.session_id)
                .bind(session.user.id)
                .bind(&session.user.username)
                .bind(session.started_at)
                .bind(session.expires_at)
                .bind(session.ended_at)
                .bind(&session.client_ip)
                .bind(&session.user_agent)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(inserted == 1)
    }

    /// Records that a session ended (also one never seen begin); false when it had already.
    pub async fn end_chat_session(
        &self,
        session_id: Uuid,
        user: &UserRef,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // An end that overtook its start leaves a closed row, so the start (when it comes)
        // does not open it.
        let sql = format!(
            "INSERT INTO chat_sessions ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, NULL, $4, '', '') \
             ON CONFLICT (session_id) DO UPDATE SET ended_at = excluded.ended_at \
             WHERE chat_sessions.ended_at IS NULL"
        );
        let _turn = self.pool.write_turn().await?;
        let ended = on_pool!(&self.pool, |pool| {
            sqlx::query(&sql)
                .bind(session_id)
                .bind(user.id)
                .bind(&user.username)
                .bind(at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(ended == 1)
    }

    /// Forgets every session of a user (account deleted); returns how many.
    pub async fn forget_chat_sessions(&self, user: Uuid) -> Result<u32, StoreError> {
        let _turn = self.pool.write_turn().await?;
        let forgotten = on_pool!(&self.pool, |pool| {
            sqlx::query("DELETE FROM chat_sessions WHERE user_id = $1")
                .bind(user)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed(forgotten))
    }

    /// Sessions that have not ended, of the given users (of everyone when empty), oldest
    /// first; expired ones included (the caller filters by `expires_at`).
    pub async fn open_chat_sessions(&self, users: &[Uuid]) -> Result<Vec<ChatSession>, StoreError> {
        let sql = if users.is_empty() {
            format!(
                "SELECT {COLUMNS} FROM chat_sessions WHERE ended_at IS NULL \
                 ORDER BY started_at LIMIT 10000"
            )
        } else {
            format!(
                "SELECT {COLUMNS} FROM chat_sessions WHERE ended_at IS NULL \
                 AND user_id IN ({}) ORDER BY started_at",
                placeholders(users.len())
            )
        };
        let rows: Vec<ChatSessionRow> = on_pool!(&self.pool, |pool| {
            let mut query = sqlx::query_as(&sql);
            for user in users {
                query = query.bind(user);
            }
            query.fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(ChatSession::from).collect())
    }
}
