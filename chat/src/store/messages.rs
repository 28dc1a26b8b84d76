//! Messages: batched inserts with their mentions (chat's hot path, on the writer), history pages, read markers, edits, deletions, reactions and unread counts.

use super::{
    ChatStore, IDS_PER_STATEMENT, MESSAGE_COLUMNS, MessageRow, StoreError, attachments, count,
    insert_event, notifications, placeholders_from, search,
};
use crate::domain::{Attachment, Message, Reaction, ReactionEmoji};
use crate::mentions::Notification;
use chrono::{DateTime, Utc};
use platform::{
    events::{Event, outbox},
    on_pool, on_tx,
    sql::{Backend, Transaction},
};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Which page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest messages older than the cursor (or the newest of all), newest first.
    Before(Option<Uuid>),
    /// The oldest messages newer than `after` (and older than `before`, when given: the
    /// gap between two known messages), oldest first.
    After {
        /// Newer than this message.
        after: Uuid,
        /// Older than this message.
        before: Option<Uuid>,
    },
}

/// A message to store.
///
/// A sent message has no durable event of its own: its row is the record, nothing
/// downstream has work to do for it, and an audit trail is for security-relevant actions
/// (docs/ARCHITECTURE.md, "Events"). Only its mentions have events (the listener mails
/// offline members).
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message.
    pub message: Message,
    /// The members it mentions: stored (with their events) only if the message is.
    pub mentions: Vec<NewMention>,
    /// The sender's uploads it claims, in order (at most
    /// [`crate::domain::MAX_ATTACHMENTS_PER_MESSAGE`]): all of them or the message is not
    /// stored.
    pub attachments: Vec<Uuid>,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored, with the notifications of its mentions and the attachments it claimed.
    Stored {
        /// The notifications stored for its mentions.
        notifications: Vec<Notification>,
        /// The attachments it carries, in order.
        attachments: Vec<Attachment>,
    },
    /// The sender is not a member: nothing stored.
    NotMember,
    /// An attachment is not the sender's own finished, unclaimed upload to this
    /// conversation: nothing stored.
    AttachmentsRefused,
}

impl Inserted {
    /// Whether the message was stored.
    pub fn is_stored(&self) -> bool {
        matches!(self, Self::Stored { .. })
    }
}

/// A notification of a member mentioned in a new message, with its `message.mentioned`
/// event.
#[derive(Debug, Clone)]
pub struct NewMention {
    /// The notification (its snippet and conversation name are not stored: the list
    /// reads them from the message and the conversation).
    pub notification: Notification,
    /// Its event, written to the outbox in the message's transaction.
    pub event: Event,
}

/// The most messages of others counted as unread in one conversation: more show as this
/// many ("99+"), so a count is one bounded index range scan.
pub const UNREAD_CAP: u32 = 100;

/// What became of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The body was replaced (the event written with it): the message after.
    Done(Message),
    /// No such message in this conversation.
    Missing,
    /// Someone else sent it.
    NotAuthor,
    /// It is a tombstone.
    Deleted,
}

/// What became of a deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// It is a tombstone now (the event written with it): the message after.
    Done(Message),
    /// It was a tombstone already: nothing written.
    Already(Message),
    /// No such message in this conversation.
    Missing,
    /// Someone else sent it and the caller does not moderate.
    NotAuthor,
}

/// What became of adding or removing a reaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reacted {
    /// Done (`changed` false when it was so already); `count` users react with the emoji now.
    Done {
        /// Whether a row was added or removed.
        changed: bool,
        /// Reactions with that emoji to that message after.
        count: u32,
    },
    /// No such message in this conversation.
    Missing,
    /// The message is a tombstone.
    Deleted,
}

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
/// The second part of [`INSERT_MESSAGES`]: the membership condition and what comes back.
const INSERT_MESSAGES_OF_MEMBERS: &str = ") AS new_messages \
     WHERE EXISTS (SELECT 1 FROM memberships \
     WHERE conversation_id = new_messages.column2 AND user_id = new_messages.column3) \
     RETURNING id";
/// Messages per multi-row insert: 6 parameters each, well under SQLite's 32,766.
const MESSAGES_PER_INSERT: usize = 500;

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

/// Appended to a `SELECT` of one message row that must not become a tombstone before
/// this transaction ends: PostgreSQL locks the row (a deletion waits, then sees what this
/// transaction added); SQLite needs nothing, as its writers take turns whole.
fn keep_message(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    }
}

/// The reactions of the messages `$2..`, as user `$1` sees them: one row per message and
/// emoji, in the order each emoji was first given.
fn reactions_sql(messages: usize) -> String {
    let ids = placeholders_from(2, messages);
    format!(
        "SELECT message_id, emoji, COUNT(*) AS count, \
         CAST(MAX(CASE WHEN user_id = $1 THEN 1 ELSE 0 END) AS BIGINT) AS me \
         FROM reactions WHERE message_id IN ({ids}) \
         GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at), emoji"
    )
}

/// One message's reactions with one emoji (see [`reactions_sql`]).
#[derive(sqlx::FromRow)]
struct ReactionRow {
    message_id: Uuid,
    emoji: String,
    count: i64,
    me: i64,
}

impl ChatStore {
    /// Stores a message if its sender is a member of its conversation (checked in the same
    /// statement); false when not.
    pub async fn insert_message(&self, new: &NewMessage) -> Result<bool, StoreError> {
        Ok(self.insert_messages(std::slice::from_ref(new)).await?[0])
    }

    /// Stores several messages in one transaction, each only if its sender is a member;
    /// one flag per message.
    pub async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        let stored = self.insert_messages_mentioning(messages).await?;
        Ok(stored.iter().map(Inserted::is_stored).collect())
    }

    /// Stores messages like [`ChatStore::insert_messages`], with the notifications of
    /// the members each mentions and their events, and the attachments each claims, all in
    /// one transaction on the writer; one outcome per message.
    pub async fn insert_messages_mentioning(
        &self,
        messages: &[NewMessage],
    ) -> Result<Vec<Inserted>, StoreError> {
        // One statement per batch, whatever its size: the messages whose sender is a
        // member; two more only when some of those mention members (the notifications and
        // their events), one more on SQLite (its search index), and a claim per attachment
        // of the (rare) messages that carry some.
        let mut tx = self.writer.begin().await?;
        let mut stored = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(MESSAGES_PER_INSERT) {
            let mut inserted: HashSet<Uuid> = insert_of_members(&mut tx, chunk)
                .await?
                .into_iter()
                .collect();
            // Indexed before the claims: a message whose claim fails is deleted again, and
            // the index follows a deletion (SQLite's trigger) only of what it holds.
            let ids: Vec<Uuid> = inserted.iter().copied().collect();
            search::index_inserted(&mut tx, &ids).await?;
            let mut claimed = HashMap::new();
            let mut refused = HashSet::new();
            let claiming: Vec<&NewMessage> = chunk
                .iter()
                .filter(|new| !new.attachments.is_empty() && inserted.contains(&new.message.id))
                .collect();
            for new in claiming {
                let message = &new.message;
                match attachments::claim(
                    &mut tx,
                    message.id,
                    message.conversation_id,
                    message.sender.id,
                    &new.attachments,
                )
                .await?
                {
                    Some(attachments) => {
                        claimed.insert(message.id, attachments);
                    }
                    None => {
                        unstore(&mut tx, message.id).await?;
                        inserted.remove(&message.id);
                        refused.insert(message.id);
                    }
                }
            }
            let kept = || {
                chunk
                    .iter()
                    .filter(|new| inserted.contains(&new.message.id))
            };
            let mentions: Vec<&NewMention> = kept().flat_map(|new| new.mentions.iter()).collect();
            let events: Vec<&Event> = mentions.iter().map(|mention| &mention.event).collect();
            for rows in mentions.chunks(notifications::PER_INSERT) {
                notifications::insert(&mut tx, rows).await?;
            }
            on_tx!(&mut tx, |tx| match outbox::insert_all(&events) {
                Some(mut insert) => insert.build().execute(&mut **tx).await.map(drop),
                None => Ok(()),
            })?;
            stored.extend(chunk.iter().map(|new| {
                let id = new.message.id;
                if inserted.contains(&id) {
                    Inserted::Stored {
                        notifications: new
                            .mentions
                            .iter()
                            .map(|mention| mention.notification.clone())
                            .collect(),
                        attachments: claimed.remove(&id).unwrap_or_default(),
                    }
                } else if refused.contains(&id) {
                    Inserted::AttachmentsRefused
                } else {
                    Inserted::NotMember
                }
            }));
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// A page of history of one conversation (at most `limit` messages).
    pub async fn messages(
        &self,
        conversation: Uuid,
        page: Page,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        // Both pages lie strictly between two ids; a missing bound is the smallest or the
        // largest possible id.
        let (sql, newer_than, older_than) = match page {
            Page::Before(before) => (NEWEST_BEFORE, Uuid::nil(), before),
            Page::After { after, before } => (OLDEST_AFTER, after, before),
        };
        let rows: Vec<MessageRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(sql)
                .bind(conversation)
                .bind(newer_than)
                .bind(older_than.unwrap_or(Uuid::max()))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(Message::from).collect())
    }

    /// True when message `id` belongs to `conversation`.
    pub async fn has_message(&self, conversation: Uuid, id: Uuid) -> Result<bool, StoreError> {
        const SQL: &str =
            "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND conversation_id = $2)";
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(SQL)
                .bind(id)
                .bind(conversation)
                .fetch_one(pool)
                .await
        })?)
    }

    /// Moves `user`'s read marker forward to `up_to` (never back); returns the marker
    /// after. A read has no durable event: the marker is the record, and the other members
    /// learn of it live.
    pub async fn mark_read(
        &self,
        conversation: Uuid,
        user: Uuid,
        up_to: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        const MOVE: &str = "UPDATE memberships SET last_read_id = $3 \
             WHERE conversation_id = $1 AND user_id = $2 \
             AND (last_read_id IS NULL OR last_read_id < $3)";
        const MARKER: &str = "SELECT last_read_id FROM memberships \
             WHERE conversation_id = $1 AND user_id = $2";
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |tx| {
            sqlx::query(MOVE)
                .bind(conversation)
                .bind(user)
                .bind(up_to)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        let marker: Option<Option<Uuid>> = on_tx!(&mut tx, |tx| {
            sqlx::query_scalar(MARKER)
                .bind(conversation)
                .bind(user)
                .fetch_optional(&mut **tx)
                .await
        })?;
        tx.commit().await?;
        Ok(marker.flatten())
    }

    /// Replaces the body of message `id` of `conversation` if `editor` sent it and it is
    /// not a tombstone, recording `at` as its edit time and writing `event`, in one
    /// transaction.
    pub async fn edit_message(
        &self,
        conversation: Uuid,
        id: Uuid,
        editor: Uuid,
        body: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<Edited, StoreError> {
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "UPDATE messages SET body = $4, edited_at = $5 \
             WHERE id = $1 AND conversation_id = $2 AND sender_id = $3 \
             AND deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
        );
        let edited: Option<MessageRow> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(conversation)
                .bind(editor)
                .bind(body)
                .bind(at)
                .fetch_optional(&mut **tx)
                .await
        })?;
        let Some(edited) = edited else {
            return Ok(match message_in(&mut tx, conversation, id).await? {
                None => Edited::Missing,
                Some(message) if message.sender.id != editor => Edited::NotAuthor,
                Some(_) => Edited::Deleted,
            });
        };
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Edited::Done(edited.into()))
    }

    /// Makes message `id` of `conversation` a tombstone (empty body, `deleted_at` = `at`,
    /// reactions gone) if `actor` sent it or `moderator` is set, writing the event that
    /// `event` makes of the message, in one transaction. Idempotent.
    pub async fn delete_message(
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
        let deleted: Option<MessageRow> = on_tx!(&mut tx, |tx| {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(conversation)
                .bind(actor)
                .bind(at)
                .bind(moderator)
                .fetch_optional(&mut **tx)
                .await
        })?;
        let Some(deleted) = deleted else {
            return Ok(match message_in(&mut tx, conversation, id).await? {
                None => Deleted::Missing,
                Some(message) if message.sender.id != actor && !moderator => Deleted::NotAuthor,
                Some(message) => Deleted::Already(message),
            });
        };
        let deleted = Message::from(deleted);
        on_tx!(&mut tx, |tx| {
            sqlx::query("DELETE FROM reactions WHERE message_id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        // Its files go with its body (their objects through the event path).
        super::attachments::remove_of_message(&mut tx, id).await?;
        insert_event(&mut tx, &event(&deleted)).await?;
        tx.commit().await?;
        Ok(Deleted::Done(deleted))
    }

    /// Adds (`add`) or removes `user`'s reaction with `emoji` to message `id` of
    /// `conversation`; idempotent; never on a tombstone.
    pub async fn set_reaction(
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
                keep_message(tx.backend())
            );
            on_tx!(&mut tx, |tx| {
                sqlx::query(&sql)
                    .bind(id)
                    .bind(conversation)
                    .bind(emoji.as_str())
                    .bind(user)
                    .bind(at)
                    .execute(&mut **tx)
                    .await
                    .map(|done| done.rows_affected())
            })?
        } else {
            const SQL: &str = "DELETE FROM reactions WHERE message_id = $1 AND emoji = $3 \
                 AND user_id = $4 AND EXISTS (SELECT 1 FROM messages \
                 WHERE id = $1 AND conversation_id = $2)";
            on_tx!(&mut tx, |tx| {
                sqlx::query(SQL)
                    .bind(id)
                    .bind(conversation)
                    .bind(emoji.as_str())
                    .bind(user)
                    .execute(&mut **tx)
                    .await
                    .map(|done| done.rows_affected())
            })?
        } == 1;
        let deleted_at: Option<Option<DateTime<Utc>>> = on_tx!(&mut tx, |tx| {
            sqlx::query_scalar(
                "SELECT deleted_at FROM messages WHERE id = $1 AND conversation_id = $2",
            )
            .bind(id)
            .bind(conversation)
            .fetch_optional(&mut **tx)
            .await
        })?;
        match deleted_at {
            None => return Ok(Reacted::Missing),
            Some(Some(_)) => return Ok(Reacted::Deleted),
            Some(None) => {}
        }
        let (total,): (i64,) = on_tx!(&mut tx, |tx| {
            sqlx::query_as("SELECT COUNT(*) FROM reactions WHERE message_id = $1 AND emoji = $2")
                .bind(id)
                .bind(emoji.as_str())
                .fetch_one(&mut **tx)
                .await
        })?;
        tx.commit().await?;
        Ok(Reacted::Done {
            changed,
            count: count(total),
        })
    }

    /// The reactions to each of `messages` as `viewer` sees them, in one query: per
    /// message, in the order first given. Messages without reactions are absent.
    pub async fn reactions(
        &self,
        messages: &[Uuid],
        viewer: Uuid,
    ) -> Result<Vec<(Uuid, Reaction)>, StoreError> {
        let mut reactions = Vec::new();
        for chunk in messages.chunks(IDS_PER_STATEMENT) {
            let sql = reactions_sql(chunk.len());
            let rows: Vec<ReactionRow> = on_pool!(&self.pool, |pool| {
                let mut query = sqlx::query_as(&sql).bind(viewer);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await
            })?;
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

    /// For each conversation of `user`: the messages of others after their read marker,
    /// at most [`UNREAD_CAP`] each. One statement.
    pub async fn unread_counts(&self, user: Uuid) -> Result<Vec<(Uuid, u32)>, StoreError> {
        let sql = format!(
            "SELECT mine.conversation_id, {UNREAD_AFTER_MARKER} AS unread \
             FROM memberships mine WHERE mine.user_id = $1"
        );
        let rows: Vec<(Uuid, i64)> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(user)
                .bind(Uuid::nil())
                .bind(i64::from(UNREAD_CAP))
                .bind(Uuid::max())
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(|(id, n)| (id, count(n))).collect())
    }

    /// The same count for one conversation (0 when not a member).
    pub async fn unread_count(&self, conversation: Uuid, user: Uuid) -> Result<u32, StoreError> {
        let sql = format!(
            "SELECT {UNREAD_AFTER_MARKER} AS unread \
             FROM memberships mine WHERE mine.user_id = $1 AND mine.conversation_id = $5"
        );
        let unread: Option<i64> = on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(&sql)
                .bind(user)
                .bind(Uuid::nil())
                .bind(i64::from(UNREAD_CAP))
                .bind(Uuid::max())
                .bind(conversation)
                .fetch_optional(pool)
                .await
        })?;
        Ok(unread.map_or(0, count))
    }
}

/// Pushes `messages` as the `VALUES` rows of an insert into `messages`, in the column order
/// `(id, conversation_id, sender_id, sender_name, body, created_at)`: the one place that
/// binds a message's columns (chat's inserts and the search benchmark's seeding).
pub fn push_message_rows<'q, DB>(
    insert: &mut sqlx::QueryBuilder<'q, DB>,
    messages: impl IntoIterator<Item = &'q Message>,
) where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    insert.push_values(messages, |mut row, message| {
        row.push_bind(message.id)
            .push_bind(message.conversation_id)
            .push_bind(message.sender.id)
            .push_bind(message.sender.username.as_str())
            .push_bind(message.body.as_str())
            .push_bind(message.created_at);
    });
}

/// Inserts those of `chunk` whose sender is a member of their conversation, in one
/// statement; returns the ids inserted.
async fn insert_of_members(
    tx: &mut Transaction,
    chunk: &[NewMessage],
) -> Result<Vec<Uuid>, sqlx::Error> {
    on_tx!(tx, |tx| {
        let mut insert = sqlx::QueryBuilder::new(INSERT_MESSAGES);
        push_message_rows(&mut insert, chunk.iter().map(|new| &new.message));
        insert.push(INSERT_MESSAGES_OF_MEMBERS);
        insert.build_query_scalar().fetch_all(&mut **tx).await
    })
}

/// Takes back message `id`, inserted earlier in `tx` (its claim of attachments failed).
async fn unstore(tx: &mut Transaction, id: Uuid) -> Result<(), sqlx::Error> {
    on_tx!(tx, |tx| sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map(drop))
}

/// Message `id` if it belongs to `conversation`, read in `tx`.
async fn message_in(
    tx: &mut Transaction,
    conversation: Uuid,
    id: Uuid,
) -> Result<Option<Message>, sqlx::Error> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND conversation_id = $2");
    let row: Option<MessageRow> = on_tx!(tx, |tx| {
        sqlx::query_as(&sql)
            .bind(id)
            .bind(conversation)
            .fetch_optional(&mut **tx)
            .await
    })?;
    Ok(row.map(Message::from))
}
