//! Presence: the open sockets of each user (per broker instance), when each user was last
//! seen, and which brokers some instance still sees following a live stream.

use super::{ChatStore, IDS_PER_STATEMENT, StoreError, count, placeholders};
use crate::domain::{Presence, UserRef};
use chrono::{DateTime, Utc};
use platform::{on_pool, on_tx, sql::Transaction};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use uuid::Uuid;

/// One open socket's share of a user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Unique per socket.
    pub id: Uuid,
    /// Whose socket.
    pub user: UserRef,
    /// The broker instance holding it.
    pub broker_id: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
}

/// One user's presence (see [`presence_sql`]).
#[derive(sqlx::FromRow)]
struct PresenceRow {
    user_id: Uuid,
    username: String,
    connections: i64,
    since: DateTime<Utc>,
}

impl From<PresenceRow> for Presence {
    fn from(row: PresenceRow) -> Self {
        Self {
            user: UserRef {
                id: row.user_id,
                username: row.username,
            },
            connections: count(row.connections),
            since: row.since,
        }
    }
}

/// Presence of the users `$1..$n`: online ones from their sockets, offline ones from when
/// their last socket closed; users never seen are left out.
fn presence_sql(users: usize) -> String {
    let ids = placeholders(users);
    format!(
        "SELECT user_id, MIN(username) AS username, COUNT(*) AS connections, \
         MIN(opened_at) AS since \
         FROM connections WHERE user_id IN ({ids}) GROUP BY user_id \
         UNION ALL \
         SELECT user_id, username, CAST(0 AS BIGINT) AS connections, at AS since FROM last_seen \
         WHERE user_id IN ({ids}) \
         AND NOT EXISTS (SELECT 1 FROM connections WHERE connections.user_id = last_seen.user_id) \
         ORDER BY username"
    )
}

/// Presence of every online user.
const PRESENCE_OF_ALL: &str = "SELECT user_id, MIN(username) AS username, \
     COUNT(*) AS connections, MIN(opened_at) AS since \
     FROM connections GROUP BY user_id ORDER BY username";

impl ChatStore {
    /// Records an open socket; returns the user's presence after it.
    pub async fn open_connection(&self, connection: &Connection) -> Result<Presence, StoreError> {
        const SQL: &str = "INSERT INTO connections (id, user_id, username, broker_id, opened_at) \
             VALUES ($1, $2, $3, $4, $5)";
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |tx| {
            sqlx::query(SQL)
                .bind(connection.id)
                .bind(connection.user.id)
                .bind(&connection.user.username)
                .bind(&connection.broker_id)
                .bind(connection.opened_at)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        let presence = presence_of_one(&mut tx, connection.user.id).await?;
        tx.commit().await?;
        Ok(presence)
    }

    /// Forgets a closed socket; returns its user's presence after it, if it was known.
    pub async fn close_connection(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Presence>, StoreError> {
        const SQL: &str = "DELETE FROM connections WHERE id = $1 RETURNING user_id, username";
        let mut tx = self.pool.begin().await?;
        let closed: Option<(Uuid, String)> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(SQL).bind(id).fetch_optional(&mut **tx).await
        })?;
        let Some((user, username)) = closed else {
            return Ok(None);
        };
        record_last_seen(&mut tx, user, &username, at).await?;
        let presence = presence_of_one(&mut tx, user).await?;
        tx.commit().await?;
        Ok(Some(presence))
    }

    /// Forgets every socket of a broker instance except `keep` (after the broker
    /// reconnected, or went away); returns the presence of each user whose count changed.
    pub async fn reset_broker(
        &self,
        broker_id: &str,
        keep: &[Uuid],
        at: DateTime<Utc>,
    ) -> Result<Vec<Presence>, StoreError> {
        const SQL: &str = "SELECT id, user_id, username FROM connections WHERE broker_id = $1";
        let known: Vec<(Uuid, Uuid, String)> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(broker_id).fetch_all(pool).await
        })?;
        let keep: HashSet<Uuid> = keep.iter().copied().collect();
        let (mut stale, mut users) = (Vec::new(), BTreeMap::new());
        for (id, user, username) in known.into_iter().filter(|(id, ..)| !keep.contains(id)) {
            stale.push(id);
            users.insert(user, username);
        }
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in stale.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM connections WHERE id IN ({})",
                placeholders(chunk.len())
            );
            on_tx!(&mut tx, |tx| {
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.execute(&mut **tx).await.map(drop)
            })?;
        }
        for (user, username) in &users {
            record_last_seen(&mut tx, *user, username, at).await?;
        }
        let users: Vec<Uuid> = users.into_keys().collect();
        let presence = presence_of(&mut tx, &users).await?;
        tx.commit().await?;
        Ok(presence)
    }

    /// Records that these brokers follow a live stream now.
    pub async fn touch_brokers(
        &self,
        brokers: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO live_brokers (broker_id, seen_at) VALUES ($1, $2) \
             ON CONFLICT (broker_id) DO UPDATE SET seen_at = excluded.seen_at";
        if brokers.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for broker in brokers {
            on_tx!(&mut tx, |tx| {
                sqlx::query(SQL)
                    .bind(broker)
                    .bind(at)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Brokers holding sockets that no instance has seen since `since` (gone for good).
    pub async fn unseen_brokers(&self, since: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT DISTINCT c.broker_id FROM connections c \
             LEFT JOIN live_brokers b ON b.broker_id = c.broker_id \
             WHERE b.seen_at IS NULL OR b.seen_at < $1";
        let rows: Vec<(String,)> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(since).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(|(broker,)| broker).collect())
    }

    /// Whether some instance has seen `broker_id` follow a live stream since `since`.
    pub async fn broker_seen_since(
        &self,
        broker_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM live_brokers WHERE broker_id = $1 AND seen_at >= $2";
        let (seen,): (i64,) = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL)
                .bind(broker_id)
                .bind(since)
                .fetch_one(pool)
                .await
        })?;
        Ok(seen > 0)
    }

    /// Presence of the given users (all online users when `users` is empty).
    pub async fn presence(&self, users: &[Uuid]) -> Result<Vec<Presence>, StoreError> {
        let rows: Vec<PresenceRow> = if users.is_empty() {
            on_pool!(&self.pool, |pool| {
                sqlx::query_as(PRESENCE_OF_ALL).fetch_all(pool).await
            })?
        } else {
            let users: Vec<Uuid> = users
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // One connection for every chunk, as in a transaction (without its round
            // trips: this only reads).
            on_pool!(&self.pool, |pool| {
                let mut connection = pool.acquire().await?;
                let mut rows: Vec<PresenceRow> = Vec::with_capacity(users.len());
                for chunk in users.chunks(IDS_PER_STATEMENT) {
                    let sql = presence_sql(chunk.len());
                    let mut query = sqlx::query_as(&sql);
                    for user in chunk {
                        query = query.bind(*user);
                    }
                    rows.extend(query.fetch_all(&mut *connection).await?);
                }
                Ok::<_, sqlx::Error>(rows)
            })?
        };
        Ok(rows.into_iter().map(Presence::from).collect())
    }
}

/// Remembers when `user` was last seen, in `tx`.
async fn record_last_seen(
    tx: &mut Transaction,
    user_id: Uuid,
    username: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO last_seen (user_id, username, at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, at = excluded.at";
    on_tx!(tx, |tx| {
        sqlx::query(SQL)
            .bind(user_id)
            .bind(username)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map(drop)
    })
}

/// Presence of each of `users` that was ever seen, read in `tx`.
async fn presence_of(tx: &mut Transaction, users: &[Uuid]) -> Result<Vec<Presence>, sqlx::Error> {
    let mut presence = Vec::with_capacity(users.len());
    for chunk in users.chunks(IDS_PER_STATEMENT) {
        let sql = presence_sql(chunk.len());
        let rows: Vec<PresenceRow> = on_tx!(&mut *tx, |tx| {
            let mut query = sqlx::query_as(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            query.fetch_all(&mut **tx).await
        })?;
        presence.extend(rows.into_iter().map(Presence::from));
    }
    Ok(presence)
}

/// Presence of `user`, who has just been written about in this transaction.
async fn presence_of_one(tx: &mut Transaction, user: Uuid) -> Result<Presence, sqlx::Error> {
    presence_of(tx, &[user])
        .await?
        .pop()
        .ok_or(sqlx::Error::RowNotFound)
}
