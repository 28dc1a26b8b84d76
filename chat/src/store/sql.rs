//! The SQL adapter of [`ChatStore`]. PostgreSQL and SQLite take the same statements
//! (`$n` placeholders work in both, and may repeat); only the migrations differ. The
//! implementation is written once and instantiated for each backend by `sql_chat_store!`,
//! which keeps each instance fully concrete (no generic sqlx bounds).
//!
//! Message ids are UUIDv7 and compare in time order in both databases (PostgreSQL compares
//! UUIDs byte-wise, SQLite compares BLOBs byte-wise), so `id` is the history cursor.
//! Timestamps in SQLite are RFC 3339 TEXT in UTC, which also sorts in time order.

use super::{
    ChatSession, ChatStore, Connection, Deleted, Edited, NewMention, NewMessage, NotificationPage,
    Page, Reacted, StoreError, UNREAD_CAP, search::SearchSql,
};
use crate::domain::{
    Conversation, ConversationView, Kind, Member, Message, Presence, Reaction, ReactionEmoji,
    UserRef,
};
use crate::mentions::{Notification, snippet};
use crate::search::{SearchHit, SearchQuery};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::events::{Event, outbox};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: Uuid,
    kind: String,
    name: Option<String>,
    topic: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<ConversationRow> for Conversation {
    type Error = sqlx::Error;

    fn try_from(row: ConversationRow) -> Result<Self, Self::Error> {
        let kind = Kind::from_stored(&row.kind).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown conversation kind {:?}", row.kind).into())
        })?;
        Ok(Self {
            id: row.id,
            kind,
            name: row.name.unwrap_or_default(),
            topic: row.topic,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ConversationViewRow {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    member_count: i64,
    joined: bool,
}

impl TryFrom<ConversationViewRow> for ConversationView {
    type Error = sqlx::Error;

    fn try_from(row: ConversationViewRow) -> Result<Self, Self::Error> {
        Ok(Self {
            conversation: row.conversation.try_into()?,
            member_count: count(row.member_count),
            joined: row.joined,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: Uuid,
    username: String,
    last_read_id: Option<Uuid>,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Self {
        Self {
            user: UserRef {
                id: row.user_id,
                username: row.username,
            },
            last_read_id: row.last_read_id,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    pub(super) id: Uuid,
    conversation_id: Uuid,
    sender_id: Uuid,
    sender_name: String,
    pub(super) body: String,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Self {
            id: row.id,
            conversation_id: row.conversation_id,
            sender: UserRef {
                id: row.sender_id,
                username: row.sender_name,
            },
            body: row.body,
            created_at: row.created_at,
            edited_at: row.edited_at,
            deleted_at: row.deleted_at,
            reactions: Vec::new(),
        }
    }
}

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

/// A conversation's columns, for tables aliased `c`.
const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.name, c.topic, c.created_at";

/// The member count of conversation `c`.
const MEMBER_COUNT: &str =
    "(SELECT COUNT(*) FROM memberships m WHERE m.conversation_id = c.id) AS member_count";

/// A page of history going back from a cursor: `$1` conversation, `$2` cursor, `$3` limit.
const NEWEST_BEFORE: &str = "SELECT id, conversation_id, sender_id, sender_name, body, created_at, \
     edited_at, deleted_at \
     FROM messages WHERE conversation_id = $1 AND id > $2 AND id < $3 ORDER BY id DESC LIMIT $4";

/// A page of history going forward from a cursor, with the same parameters.
const OLDEST_AFTER: &str = "SELECT id, conversation_id, sender_id, sender_name, body, created_at, \
     edited_at, deleted_at \
     FROM messages WHERE conversation_id = $1 AND id > $2 AND id < $3 ORDER BY id LIMIT $4";

/// Inserts messages whose sender is a member of their conversation (one statement, so
/// membership cannot change in between): `VALUES` rows go between the two parts (their
/// columns are `column1`.. in SQLite and PostgreSQL alike); the ids inserted come back.
const INSERT_MESSAGES: &str = "INSERT INTO messages \
     (id, conversation_id, sender_id, sender_name, body, created_at) \
     SELECT column1, column2, column3, column4, column5, column6 FROM (";
const INSERT_MESSAGES_OF_MEMBERS: &str = ") AS new_messages WHERE EXISTS (SELECT 1 FROM memberships \
     WHERE conversation_id = new_messages.column2 AND user_id = new_messages.column3) \
     RETURNING id";
/// Messages per multi-row insert: 6 parameters each, well under SQLite's 32,766.
const MESSAGES_PER_INSERT: usize = 500;
/// The most ids bound in one statement: well under both backends' parameter limits.
const IDS_PER_STATEMENT: usize = 500;

/// Notifications per multi-row insert: 7 parameters each.
const NOTIFICATIONS_PER_INSERT: usize = 500;

/// The unread messages of membership `mine` (its user `$1`): others' messages after the
/// read marker (`$2`, the nil id, when there is none), counted up to `$3`; `$4` is the
/// largest id. One index range scan over `messages (conversation_id, id)` from the marker
/// to the conversation's end, stopping at the cap; the caller's own messages in the range
/// are skipped by a filter (the pages mark read as they show messages, so few lie after
/// the marker). Both bounds are row comparisons on the index's two columns, and the order
/// is the index's: a plain `id > marker` let PostgreSQL walk the primary key instead, over
/// the messages of every conversation since the marker (docs/PERFORMANCE.md, "Unread
/// counts").
const UNREAD_AFTER_MARKER: &str = "(SELECT COUNT(*) FROM (SELECT 1 FROM messages m \
     WHERE (m.conversation_id, m.id) > (mine.conversation_id, COALESCE(mine.last_read_id, $2)) \
     AND (m.conversation_id, m.id) <= (mine.conversation_id, $4) AND m.sender_id <> $1 \
     ORDER BY m.conversation_id, m.id LIMIT $3) AS capped)";

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    user_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    conversation_name: String,
    sender_id: Uuid,
    sender_name: String,
    body: String,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for Notification {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            message_id: row.message_id,
            conversation_id: row.conversation_id,
            conversation_name: row.conversation_name,
            sender: UserRef {
                id: row.sender_id,
                username: row.sender_name,
            },
            snippet: snippet(&row.body),
            created_at: row.created_at,
            read_at: row.read_at,
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

/// `$1, $2, ..., $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A database count as the domain keeps it.
fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

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

/// What SQL differs between the backends, for the statements the macro writes once.
trait Dialect {
    /// Appended to a `SELECT` of one message row that must not become a tombstone before
    /// this transaction ends: PostgreSQL locks the row (a deletion waits, then sees what
    /// this transaction added); SQLite needs nothing, as its writers take turns whole.
    const KEEP_MESSAGE: &'static str;
}

impl Dialect for sqlx::Postgres {
    const KEEP_MESSAGE: &'static str = " FOR SHARE";
}

impl Dialect for sqlx::Sqlite {
    const KEEP_MESSAGE: &'static str = "";
}

/// A message's columns.
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, sender_id, sender_name, body, created_at, edited_at, deleted_at";

/// The reactions of the messages `$2..`, as user `$1` sees them: one row per message and
/// emoji, in the order each emoji was first given.
fn reactions_sql(messages: usize) -> String {
    let ids = (2..messages + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT message_id, emoji, COUNT(*) AS count, \
         CAST(MAX(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS BIGINT) AS me \
         FROM reactions WHERE message_id IN ({ids}) \
         GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at), emoji"
    )
}

#[derive(sqlx::FromRow)]
struct ReactionRow {
    message_id: Uuid,
    emoji: String,
    count: i64,
    me: i64,
}

macro_rules! sql_chat_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $migrations:literal, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            /// Where messages and their events are written, and the relay reads them back.
            writer: sqlx::Pool<$db>,
        }

        impl $name {
            /// A store on an open pool (migrations are applied by [`ChatStore::migrate`]).
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { writer: pool.clone(), pool }
            }

            /// A store that writes messages (and relays their events) through `writer`,
            /// a pool of its own on the same database, and does everything else on `pool`.
            pub fn with_writer(pool: sqlx::Pool<$db>, writer: sqlx::Pool<$db>) -> Self {
                Self { pool, writer }
            }

            /// Adds a member unless they already are one; true when added.
            async fn add_member<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                conversation: Uuid,
                user: &UserRef,
                at: DateTime<Utc>,
            ) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "INSERT INTO memberships (conversation_id, user_id, username, joined_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, user_id) DO NOTHING",
                )
                .bind(conversation)
                .bind(user.id)
                .bind(&user.username)
                .bind(at)
                .execute(executor)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            /// Inserts a direct conversation and both memberships, all or nothing.
            async fn insert_direct(
                &self,
                conversation: &Conversation,
                key: &str,
                members: [&UserRef; 2],
            ) -> Result<(), sqlx::Error> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO conversations (id, kind, name, topic, direct_key, created_at) \
                     VALUES ($1, $2, NULL, $3, $4, $5)",
                )
                .bind(conversation.id)
                .bind(Kind::Direct.as_str())
                .bind(&conversation.topic)
                .bind(key)
                .bind(conversation.created_at)
                .execute(&mut *tx)
                .await?;
                for member in members {
                    Self::add_member(&mut *tx, conversation.id, member, conversation.created_at)
                        .await?;
                }
                tx.commit().await
            }

            /// Remembers when `user` was last seen.
            async fn record_last_seen<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                user_id: Uuid,
                username: &str,
                at: DateTime<Utc>,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO last_seen (user_id, username, at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) \
                     DO UPDATE SET username = excluded.username, at = excluded.at",
                )
                .bind(user_id)
                .bind(username)
                .bind(at)
                .execute(executor)
                .await?;
                Ok(())
            }

            /// Presence of each of `users` that was ever seen.
            async fn presence_of(
                connection: &mut <$db as sqlx::Database>::Connection,
                users: &[Uuid],
            ) -> Result<Vec<Presence>, sqlx::Error> {
                let mut presence = Vec::with_capacity(users.len());
                for chunk in users.chunks(IDS_PER_STATEMENT) {
                    let sql = presence_sql(chunk.len());
                    let mut query = sqlx::query_as::<_, PresenceRow>(&sql);
                    for user in chunk {
                        query = query.bind(*user);
                    }
                    let rows = query.fetch_all(&mut *connection).await?;
                    presence.extend(rows.into_iter().map(Presence::from));
                }
                Ok(presence)
            }

            /// Message `id` if it belongs to `conversation`.
            async fn message_in<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                conversation: Uuid,
                id: Uuid,
            ) -> Result<Option<Message>, sqlx::Error> {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND conversation_id = $2"
                );
                let row: Option<MessageRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .bind(conversation)
                    .fetch_optional(executor)
                    .await?;
                Ok(row.map(Message::from))
            }

            /// Presence of `user`, who has just been written about in this transaction.
            async fn presence_of_one(
                connection: &mut <$db as sqlx::Database>::Connection,
                user: Uuid,
            ) -> Result<Presence, sqlx::Error> {
                Self::presence_of(connection, &[user])
                    .await?
                    .pop()
                    .ok_or(sqlx::Error::RowNotFound)
            }

            /// Inserts the notifications of mentions, in one statement.
            async fn insert_notifications(
                tx: &mut sqlx::Transaction<'_, $db>,
                mentions: &[&NewMention],
            ) -> Result<(), sqlx::Error> {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO notifications (id, user_id, message_id, conversation_id, \
                     sender_id, sender_name, created_at) ",
                );
                insert.push_values(mentions, |mut row, mention| {
                    let notification = &mention.notification;
                    row.push_bind(notification.id)
                        .push_bind(notification.user_id)
                        .push_bind(notification.message_id)
                        .push_bind(notification.conversation_id)
                        .push_bind(notification.sender.id)
                        .push_bind(&notification.sender.username)
                        .push_bind(notification.created_at);
                });
                insert.build().execute(&mut **tx).await?;
                Ok(())
            }
        }

        #[async_trait]
        impl ChatStore for $name {
            async fn migrate(&self) -> Result<(), StoreError> {
                platform::events::outbox::with_migration(
                    sqlx::migrate!($migrations),
                    platform::sql::Backend::$variant,
                    2,
                )
                .run(&self.pool)
                    .await
                    .map_err(|error| StoreError::Database(error.into()))
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn pool(&self) -> platform::sql::Pool {
                platform::sql::Pool::$variant(self.writer.clone())
            }

            async fn create_room(
                &self,
                room: &Conversation,
                creator: &UserRef,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO conversations (id, kind, name, topic, direct_key, created_at) \
                     VALUES ($1, $2, $3, $4, NULL, $5)",
                )
                .bind(room.id)
                .bind(Kind::Room.as_str())
                .bind(&room.name)
                .bind(&room.topic)
                .bind(room.created_at)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(error) if platform::sql::is_unique_violation(&error) => return Err(StoreError::NameTaken),
                    Err(error) => return Err(error.into()),
                }
                Self::add_member(&mut *tx, room.id, creator, room.created_at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rooms(&self, viewer: Uuid) -> Result<Vec<ConversationView>, StoreError> {
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS}, {MEMBER_COUNT}, \
                     EXISTS (SELECT 1 FROM memberships m \
                             WHERE m.conversation_id = c.id AND m.user_id = $1) AS joined \
                     FROM conversations c WHERE c.kind = 'room' ORDER BY c.name"
                );
                let rows: Vec<ConversationViewRow> = sqlx::query_as(&sql)
                    .bind(viewer)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(ConversationView::try_from)
                    .collect::<Result<_, _>>()?)
            }

            async fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
                let sql =
                    format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1");
                let row: Option<ConversationRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Conversation::try_from).transpose()?)
            }

            async fn direct_by_key(&self, key: &str) -> Result<Option<Conversation>, StoreError> {
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.direct_key = $1"
                );
                let row: Option<ConversationRow> = sqlx::query_as(&sql)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Conversation::try_from).transpose()?)
            }

            async fn create_direct(
                &self,
                conversation: &Conversation,
                key: &str,
                members: [&UserRef; 2],
            ) -> Result<Conversation, StoreError> {
                match self.insert_direct(conversation, key, members).await {
                    Ok(()) => Ok(Conversation {
                        kind: Kind::Direct,
                        name: String::new(),
                        ..conversation.clone()
                    }),
                    // The other side opened it first: theirs is the conversation. (Gone again
                    // already only if one of the two was deleted meanwhile.)
                    Err(error) if platform::sql::is_unique_violation(&error) => self
                        .direct_by_key(key)
                        .await?
                        .ok_or(StoreError::Database(sqlx::Error::RowNotFound)),
                    Err(error) => Err(error.into()),
                }
            }

            async fn conversations_of(
                &self,
                user: Uuid,
            ) -> Result<Vec<ConversationView>, StoreError> {
                // Latest activity first: the newest message, or the creation of a quiet one.
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS}, {MEMBER_COUNT}, TRUE AS joined \
                     FROM memberships mine JOIN conversations c ON c.id = mine.conversation_id \
                     WHERE mine.user_id = $1 \
                     ORDER BY COALESCE((SELECT newest.created_at FROM messages newest \
                                        WHERE newest.conversation_id = c.id \
                                        ORDER BY newest.id DESC LIMIT 1), \
                                       c.created_at) DESC, c.id DESC"
                );
                let rows: Vec<ConversationViewRow> = sqlx::query_as(&sql)
                    .bind(user)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(ConversationView::try_from)
                    .collect::<Result<_, _>>()?)
            }

            async fn membership_ids(&self, user: Uuid) -> Result<Vec<Uuid>, StoreError> {
                let ids = sqlx::query_scalar(
                    "SELECT conversation_id FROM memberships WHERE user_id = $1",
                )
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
                Ok(ids)
            }

            async fn members(&self, conversation: Uuid) -> Result<Vec<Member>, StoreError> {
                let rows: Vec<MemberRow> = sqlx::query_as(
                    "SELECT user_id, username, last_read_id FROM memberships \
                     WHERE conversation_id = $1 ORDER BY joined_at, user_id",
                )
                .bind(conversation)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Member::from).collect())
            }

            async fn is_member(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
                let member = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM memberships \
                     WHERE conversation_id = $1 AND user_id = $2)",
                )
                .bind(conversation)
                .bind(user)
                .fetch_one(&self.pool)
                .await?;
                Ok(member)
            }

            async fn join(
                &self,
                conversation: Uuid,
                user: &UserRef,
                at: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                Ok(Self::add_member(&self.pool, conversation, user, at).await?)
            }

            async fn leave(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "DELETE FROM memberships WHERE conversation_id = $1 AND user_id = $2",
                )
                .bind(conversation)
                .bind(user)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_message(&self, new: &NewMessage) -> Result<bool, StoreError> {
                Ok(self.insert_messages(std::slice::from_ref(new)).await?[0])
            }

            async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
                let stored = self.insert_messages_mentioning(messages).await?;
                Ok(stored.iter().map(Option::is_some).collect())
            }

            async fn messages(
                &self,
                conversation: Uuid,
                page: Page,
                limit: u32,
            ) -> Result<Vec<Message>, StoreError> {
                // Both pages lie strictly between two ids; a missing bound is the smallest
                // or the largest possible id.
                let (sql, newer_than, older_than) = match page {
                    Page::Before(before) => (NEWEST_BEFORE, Uuid::nil(), before),
                    Page::After { after, before } => (OLDEST_AFTER, after, before),
                };
                let rows: Vec<MessageRow> = sqlx::query_as(sql)
                    .bind(conversation)
                    .bind(newer_than)
                    .bind(older_than.unwrap_or(Uuid::max()))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Message::from).collect())
            }

            async fn has_message(&self, conversation: Uuid, id: Uuid) -> Result<bool, StoreError> {
                let found = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND conversation_id = $2)",
                )
                .bind(id)
                .bind(conversation)
                .fetch_one(&self.pool)
                .await?;
                Ok(found)
            }

            async fn mark_read(
                &self,
                conversation: Uuid,
                user: Uuid,
                up_to: Uuid,
                event: &Event,
            ) -> Result<Option<Uuid>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let moved = sqlx::query(
                    "UPDATE memberships SET last_read_id = $3 \
                     WHERE conversation_id = $1 AND user_id = $2 \
                     AND (last_read_id IS NULL OR last_read_id < $3)",
                )
                .bind(conversation)
                .bind(user)
                .bind(up_to)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 1 {
                    outbox::insert(event).execute(&mut *tx).await?;
                }
                let marker: Option<Option<Uuid>> = sqlx::query_scalar(
                    "SELECT last_read_id FROM memberships \
                     WHERE conversation_id = $1 AND user_id = $2",
                )
                .bind(conversation)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(marker.flatten())
            }

            async fn open_connection(
                &self,
                connection: &Connection,
            ) -> Result<Presence, StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO connections (id, user_id, username, broker_id, opened_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(connection.id)
                .bind(connection.user.id)
                .bind(&connection.user.username)
                .bind(&connection.broker_id)
                .bind(connection.opened_at)
                .execute(&mut *tx)
                .await?;
                let presence = Self::presence_of_one(&mut *tx, connection.user.id).await?;
                tx.commit().await?;
                Ok(presence)
            }

            async fn close_connection(
                &self,
                id: Uuid,
                at: DateTime<Utc>,
            ) -> Result<Option<Presence>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let closed: Option<(Uuid, String)> = sqlx::query_as(
                    "DELETE FROM connections WHERE id = $1 RETURNING user_id, username",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user, username)) = closed else {
                    return Ok(None);
                };
                Self::record_last_seen(&mut *tx, user, &username, at).await?;
                let presence = Self::presence_of_one(&mut *tx, user).await?;
                tx.commit().await?;
                Ok(Some(presence))
            }

            async fn reset_broker(
                &self,
                broker_id: &str,
                keep: &[Uuid],
                at: DateTime<Utc>,
            ) -> Result<Vec<Presence>, StoreError> {
                let known: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
                    "SELECT id, user_id, username FROM connections WHERE broker_id = $1",
                )
                .bind(broker_id)
                .fetch_all(&self.pool)
                .await?;
                let keep: HashSet<Uuid> = keep.iter().copied().collect();
                let (mut stale, mut users) = (Vec::new(), BTreeMap::new());
                for (id, user, username) in known.into_iter().filter(|(id, ..)| !keep.contains(id))
                {
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
                    let mut query = sqlx::query(&sql);
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    query.execute(&mut *tx).await?;
                }
                for (user, username) in &users {
                    Self::record_last_seen(&mut *tx, *user, username, at).await?;
                }
                let users: Vec<Uuid> = users.into_keys().collect();
                let presence = Self::presence_of(&mut *tx, &users).await?;
                tx.commit().await?;
                Ok(presence)
            }

            async fn touch_brokers(
                &self,
                brokers: &[String],
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                if brokers.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for broker in brokers {
                    sqlx::query(
                        "INSERT INTO live_brokers (broker_id, seen_at) VALUES ($1, $2) \
                         ON CONFLICT (broker_id) DO UPDATE SET seen_at = excluded.seen_at",
                    )
                    .bind(broker)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn unseen_brokers(&self, since: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT c.broker_id FROM connections c \
                     LEFT JOIN live_brokers b ON b.broker_id = c.broker_id \
                     WHERE b.seen_at IS NULL OR b.seen_at < $1",
                )
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(broker,)| broker).collect())
            }

            async fn broker_seen_since(
                &self,
                broker_id: &str,
                since: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let (seen,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM live_brokers WHERE broker_id = $1 AND seen_at >= $2",
                )
                .bind(broker_id)
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
                Ok(seen > 0)
            }

            async fn presence(&self, users: &[Uuid]) -> Result<Vec<Presence>, StoreError> {
                let mut connection = self.pool.acquire().await?;
                if users.is_empty() {
                    let rows: Vec<PresenceRow> = sqlx::query_as(
                        "SELECT user_id, MIN(username) AS username, COUNT(*) AS connections, \
                         MIN(opened_at) AS since \
                         FROM connections GROUP BY user_id ORDER BY username",
                    )
                    .fetch_all(&mut *connection)
                    .await?;
                    return Ok(rows.into_iter().map(Presence::from).collect());
                }
                let users: Vec<Uuid> = users
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                Ok(Self::presence_of(&mut connection, &users).await?)
            }

            async fn start_chat_session(&self, session: &ChatSession) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO chat_sessions \
                     (session_id, user_id, username, started_at, expires_at, ended_at, client_ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(session.session_id)
                .bind(session.user.id)
                .bind(&session.user.username)
                .bind(session.started_at)
                .bind(session.expires_at)
                .bind(session.ended_at)
                .bind(&session.client_ip)
                .bind(&session.user_agent)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn end_chat_session(
                &self,
                session_id: Uuid,
                user: &UserRef,
                at: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                // An end that overtook its start leaves a closed row, so the start (when it
                // comes) does not open it.
                let done = sqlx::query(
                    "INSERT INTO chat_sessions \
                     (session_id, user_id, username, started_at, expires_at, ended_at, client_ip, user_agent) \
                     VALUES ($1, $2, $3, $4, NULL, $4, '', '') \
                     ON CONFLICT (session_id) DO UPDATE SET ended_at = excluded.ended_at \
                     WHERE chat_sessions.ended_at IS NULL",
                )
                .bind(session_id)
                .bind(user.id)
                .bind(&user.username)
                .bind(at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn forget_chat_sessions(&self, user: Uuid) -> Result<u32, StoreError> {
                let done = sqlx::query("DELETE FROM chat_sessions WHERE user_id = $1")
                    .bind(user)
                    .execute(&self.pool)
                    .await?;
                Ok(u32::try_from(done.rows_affected()).unwrap_or(u32::MAX))
            }

            async fn open_chat_sessions(&self, users: &[Uuid]) -> Result<Vec<ChatSession>, StoreError> {
                const COLUMNS: &str = "session_id, user_id, username, started_at, expires_at, ended_at, client_ip, user_agent";
                let sql = if users.is_empty() {
                    format!("SELECT {COLUMNS} FROM chat_sessions WHERE ended_at IS NULL ORDER BY started_at LIMIT 10000")
                } else {
                    format!(
                        "SELECT {COLUMNS} FROM chat_sessions WHERE ended_at IS NULL AND user_id IN ({}) ORDER BY started_at",
                        placeholders(users.len())
                    )
                };
                let mut query = sqlx::query_as::<_, ChatSessionRow>(&sql);
                for user in users {
                    query = query.bind(user);
                }
                let rows = query.fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(ChatSession::from).collect())
            }

            async fn delete_user_data(&self, user: Uuid) -> Result<u32, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Deleting a direct conversation cascades to its messages and memberships.
                let directs = sqlx::query(
                    "DELETE FROM conversations WHERE kind = 'direct' \
                     AND id IN (SELECT conversation_id FROM memberships WHERE user_id = $1)",
                )
                .bind(user)
                .execute(&mut *tx)
                .await?;
                // What they said in rooms stays: it is part of the room's history, but no
                // longer under their name (auth never gives the name to anyone else, and
                // the history should not point at a person who asked to be gone).
                sqlx::query("UPDATE messages SET sender_name = $2 WHERE sender_id = $1")
                    .bind(user)
                    .bind(crate::domain::DELETED_USER_NAME)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE notifications SET sender_name = $2 WHERE sender_id = $1")
                    .bind(user)
                    .bind(crate::domain::DELETED_USER_NAME)
                    .execute(&mut *tx)
                    .await?;
                for sql in [
                    "DELETE FROM notifications WHERE user_id = $1",
                    "DELETE FROM memberships WHERE user_id = $1",
                    "DELETE FROM connections WHERE user_id = $1",
                    "DELETE FROM last_seen WHERE user_id = $1",
                    "DELETE FROM reactions WHERE user_id = $1",
                ] {
                    sqlx::query(sql).bind(user).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(u32::try_from(directs.rows_affected()).unwrap_or(u32::MAX))
            }

            async fn edit_message(
                &self,
                conversation: Uuid,
                id: Uuid,
                editor: Uuid,
                body: &str,
                at: DateTime<Utc>,
                event: &Event,
            ) -> Result<Edited, StoreError> {
                // The write comes first, so a SQLite transaction holds the write lock
                // from its first statement (no read snapshot to upgrade).
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "UPDATE messages SET body = $4, edited_at = $5 \
                     WHERE id = $1 AND conversation_id = $2 AND sender_id = $3 \
                     AND deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
                );
                let edited: Option<MessageRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .bind(conversation)
                    .bind(editor)
                    .bind(body)
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(edited) = edited else {
                    let found = Self::message_in(&mut *tx, conversation, id).await?;
                    return Ok(match found {
                        None => Edited::Missing,
                        Some(message) if message.sender.id != editor => Edited::NotAuthor,
                        Some(_) => Edited::Deleted,
                    });
                };
                outbox::insert(event).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Edited::Done(edited.into()))
            }

            async fn delete_message(
                &self,
                conversation: Uuid,
                id: Uuid,
                actor: Uuid,
                moderator: bool,
                at: DateTime<Utc>,
                event: &(dyn for<'m> Fn(&'m Message) -> Event + Sync),
            ) -> Result<Deleted, StoreError> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "UPDATE messages SET body = '', deleted_at = $4 \
                     WHERE id = $1 AND conversation_id = $2 AND deleted_at IS NULL \
                     AND ($5 OR sender_id = $3) RETURNING {MESSAGE_COLUMNS}"
                );
                let deleted: Option<MessageRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .bind(conversation)
                    .bind(actor)
                    .bind(at)
                    .bind(moderator)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(deleted) = deleted else {
                    let found = Self::message_in(&mut *tx, conversation, id).await?;
                    return Ok(match found {
                        None => Deleted::Missing,
                        Some(message) if message.sender.id != actor && !moderator => {
                            Deleted::NotAuthor
                        }
                        Some(message) => Deleted::Already(message),
                    });
                };
                let deleted = Message::from(deleted);
                sqlx::query("DELETE FROM reactions WHERE message_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                outbox::insert(&event(&deleted)).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Deleted::Done(deleted))
            }

            async fn set_reaction(
                &self,
                conversation: Uuid,
                id: Uuid,
                user: Uuid,
                emoji: ReactionEmoji,
                add: bool,
                at: DateTime<Utc>,
            ) -> Result<Reacted, StoreError> {
                let mut tx = self.pool.begin().await?;
                let changed = if add {
                    let sql = format!(
                        "INSERT INTO reactions (message_id, emoji, user_id, created_at) \
                         SELECT id, $3, $4, $5 FROM messages \
                         WHERE id = $1 AND conversation_id = $2 AND deleted_at IS NULL{} \
                         ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
                        <$db as Dialect>::KEEP_MESSAGE
                    );
                    sqlx::query(&sql)
                        .bind(id)
                        .bind(conversation)
                        .bind(emoji.as_str())
                        .bind(user)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?
                } else {
                    sqlx::query(
                        "DELETE FROM reactions WHERE message_id = $1 AND emoji = $3 \
                         AND user_id = $4 AND EXISTS (SELECT 1 FROM messages \
                         WHERE id = $1 AND conversation_id = $2)",
                    )
                    .bind(id)
                    .bind(conversation)
                    .bind(emoji.as_str())
                    .bind(user)
                    .execute(&mut *tx)
                    .await?
                }
                .rows_affected()
                    == 1;
                let deleted_at: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
                    "SELECT deleted_at FROM messages WHERE id = $1 AND conversation_id = $2",
                )
                .bind(id)
                .bind(conversation)
                .fetch_optional(&mut *tx)
                .await?;
                match deleted_at {
                    None => return Ok(Reacted::Missing),
                    Some(Some(_)) => return Ok(Reacted::Deleted),
                    Some(None) => {}
                }
                let (total,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM reactions WHERE message_id = $1 AND emoji = $2",
                )
                .bind(id)
                .bind(emoji.as_str())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Reacted::Done {
                    changed,
                    count: count(total),
                })
            }

            async fn reactions(
                &self,
                messages: &[Uuid],
                viewer: Uuid,
            ) -> Result<Vec<(Uuid, Reaction)>, StoreError> {
                let mut reactions = Vec::new();
                for chunk in messages.chunks(IDS_PER_STATEMENT) {
                    let sql = reactions_sql(chunk.len());
                    let mut query = sqlx::query_as::<_, ReactionRow>(&sql).bind(viewer);
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    // An emoji dropped from the set since is no longer shown.
                    reactions.extend(rows.into_iter().filter_map(|row| {
                        let emoji = ReactionEmoji::parse(&row.emoji).ok()?;
                        let reaction = Reaction {
                            emoji,
                            count: count(row.count),
                            me: row.me != 0,
                        };
                        Some((row.message_id, reaction))
                    }));
                }
                Ok(reactions)
            }

            async fn insert_messages_mentioning(
                &self,
                messages: &[NewMessage],
            ) -> Result<Vec<Option<Vec<Notification>>>, StoreError> {
                // Two statements per batch, whatever its size: the messages whose sender
                // is a member, then the events of those; two more only when some of those
                // mention members (the notifications).
                let mut tx = self.writer.begin().await?;
                let mut stored = Vec::with_capacity(messages.len());
                for chunk in messages.chunks(MESSAGES_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(INSERT_MESSAGES);
                    insert.push_values(chunk, |mut row, new| {
                        let message = &new.message;
                        row.push_bind(message.id)
                            .push_bind(message.conversation_id)
                            .push_bind(message.sender.id)
                            .push_bind(&message.sender.username)
                            .push_bind(&message.body)
                            .push_bind(message.created_at);
                    });
                    insert.push(INSERT_MESSAGES_OF_MEMBERS);
                    let inserted: HashSet<Uuid> = insert
                        .build_query_scalar()
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .collect();
                    let ids: Vec<Uuid> = inserted.iter().copied().collect();
                    <$db as SearchSql>::index_inserted(&mut *tx, &ids).await?;
                    let kept = || chunk.iter().filter(|new| inserted.contains(&new.message.id));
                    let mentions: Vec<&NewMention> =
                        kept().flat_map(|new| new.mentions.iter()).collect();
                    let events: Vec<&Event> = kept()
                        .map(|new| &new.event)
                        .chain(mentions.iter().map(|mention| &mention.event))
                        .collect();
                    for rows in mentions.chunks(NOTIFICATIONS_PER_INSERT) {
                        Self::insert_notifications(&mut tx, rows).await?;
                    }
                    if let Some(mut insert) = outbox::insert_all::<$db>(&events) {
                        insert.build().execute(&mut *tx).await?;
                    }
                    stored.extend(chunk.iter().map(|new| {
                        inserted.contains(&new.message.id).then(|| {
                            new.mentions
                                .iter()
                                .map(|mention| mention.notification.clone())
                                .collect()
                        })
                    }));
                }
                tx.commit().await?;
                Ok(stored)
            }

            async fn members_named(
                &self,
                conversation: Uuid,
                usernames: &[String],
            ) -> Result<Vec<UserRef>, StoreError> {
                if usernames.is_empty() {
                    return Ok(Vec::new());
                }
                let mut select = sqlx::QueryBuilder::<$db>::new(
                    "SELECT user_id, username FROM memberships WHERE conversation_id = ",
                );
                select.push_bind(conversation).push(" AND username IN (");
                let mut names = select.separated(", ");
                for name in usernames.iter().take(IDS_PER_STATEMENT) {
                    names.push_bind(name);
                }
                select.push(")");
                let rows: Vec<(Uuid, String)> =
                    select.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, username)| UserRef { id, username })
                    .collect())
            }

            async fn unread_counts(&self, user: Uuid) -> Result<Vec<(Uuid, u32)>, StoreError> {
                let sql = format!(
                    "SELECT mine.conversation_id, {UNREAD_AFTER_MARKER} AS unread \
                     FROM memberships mine WHERE mine.user_id = $1"
                );
                let rows: Vec<(Uuid, i64)> = sqlx::query_as(&sql)
                    .bind(user)
                    .bind(Uuid::nil())
                    .bind(i64::from(UNREAD_CAP))
                    .bind(Uuid::max())
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(|(id, n)| (id, count(n))).collect())
            }

            async fn unread_count(&self, conversation: Uuid, user: Uuid) -> Result<u32, StoreError> {
                let sql = format!(
                    "SELECT {UNREAD_AFTER_MARKER} AS unread \
                     FROM memberships mine WHERE mine.user_id = $1 AND mine.conversation_id = $5"
                );
                let unread: Option<i64> = sqlx::query_scalar(&sql)
                    .bind(user)
                    .bind(Uuid::nil())
                    .bind(i64::from(UNREAD_CAP))
                    .bind(Uuid::max())
                    .bind(conversation)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(unread.map_or(0, count))
            }

            async fn notifications(
                &self,
                user: Uuid,
                page: NotificationPage,
            ) -> Result<Vec<Notification>, StoreError> {
                let unread = if page.unread_only { "AND n.read_at IS NULL" } else { "" };
                let sql = format!(
                    "SELECT n.id, n.user_id, n.message_id, n.conversation_id, \
                     COALESCE(c.name, '') AS conversation_name, n.sender_id, n.sender_name, \
                     CASE WHEN EXISTS (SELECT 1 FROM memberships m \
                                       WHERE m.conversation_id = n.conversation_id \
                                       AND m.user_id = n.user_id) \
                          THEN msg.body ELSE '' END AS body, \
                     n.created_at, n.read_at \
                     FROM notifications n \
                     JOIN messages msg ON msg.id = n.message_id \
                     JOIN conversations c ON c.id = n.conversation_id \
                     WHERE n.user_id = $1 AND n.id < $2 {unread} \
                     ORDER BY n.id DESC LIMIT $3"
                );
                let rows: Vec<NotificationRow> = sqlx::query_as(&sql)
                    .bind(user)
                    .bind(page.before.unwrap_or(Uuid::max()))
                    .bind(i64::from(page.limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Notification::from).collect())
            }

            async fn unread_notifications(&self, user: Uuid) -> Result<u32, StoreError> {
                let unread: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL",
                )
                .bind(user)
                .fetch_one(&self.pool)
                .await?;
                Ok(count(unread))
            }

            async fn mark_notifications_read(
                &self,
                user: Uuid,
                ids: Option<&[Uuid]>,
                at: DateTime<Utc>,
            ) -> Result<u32, StoreError> {
                let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE notifications SET read_at = ");
                update
                    .push_bind(at)
                    .push(" WHERE read_at IS NULL AND user_id = ")
                    .push_bind(user);
                if let Some(ids) = ids {
                    if ids.is_empty() {
                        return Ok(0);
                    }
                    update.push(" AND id IN (");
                    let mut list = update.separated(", ");
                    for id in ids.iter().take(IDS_PER_STATEMENT) {
                        list.push_bind(*id);
                    }
                    update.push(")");
                }
                let done = update.build().execute(&self.pool).await?;
                Ok(u32::try_from(done.rows_affected()).unwrap_or(u32::MAX))
            }

            async fn search_messages(
                &self,
                query: &SearchQuery,
            ) -> Result<Vec<SearchHit>, StoreError> {
                Ok(<$db as SearchSql>::search(&self.pool, query).await?)
            }
        }
    };
}

sql_chat_store!(
    /// The chat store on PostgreSQL.
    PostgresChatStore,
    sqlx::Postgres,
    "./migrations/postgres",
    Postgres
);

sql_chat_store!(
    /// The chat store on SQLite (the embedded run).
    SqliteChatStore,
    sqlx::Sqlite,
    "./migrations/sqlite",
    Sqlite
);
