//! The chat store: conversations, memberships, messages, read receipts, presence, chat
//! sessions, notifications and search, in PostgreSQL or SQLite (the URL scheme picks
//! which). One ordinary struct, [`ChatStore`], its SQL written once: both databases take
//! the same statements (`$n` placeholders work in both, and may repeat), and each runs on
//! the backend of the pool through [`platform::on_pool!`] / [`platform::on_tx!`]. The few
//! dialect differences (a row lock, the full-text search) are chosen by the pool's
//! [`Backend`](platform::sql::Backend). Its methods are split by aggregate, one file each: `conversations.rs`
//! (rooms, directs, memberships), `messages.rs` (batched inserts, history, edits,
//! deletions, reactions, unread counts), `presence.rs` (sockets, brokers, last seen),
//! `sessions.rs`, `notifications.rs`, `search.rs`, `attachments.rs` (files' rows), and
//! `users.rs` (what an account's deletion removes).
//!
//! Message ids are UUIDv7 and compare in time order in both databases (PostgreSQL compares
//! UUIDs byte-wise, SQLite compares BLOBs byte-wise), so `id` is the history cursor.
//! Timestamps in SQLite are RFC 3339 TEXT in UTC, which also sorts in time order.

mod attachments;
mod conversations;
mod messages;
mod notifications;
mod presence;
mod search;
mod sessions;
mod users;

pub use attachments::{NewUpload, StoredAttachment, Upload};
pub use messages::{
    Deleted, Edited, Inserted, NewMention, NewMessage, Page, Reacted, UNREAD_CAP, push_message_rows,
};
pub use notifications::NotificationPage;
pub use presence::Connection;
pub use sessions::ChatSession;

use crate::domain::{Message, UserRef};
use chrono::{DateTime, Utc};
use platform::{
    events::{
        Event,
        outbox::{self, Outbox},
    },
    sql::{Pool, Transaction},
};
use uuid::Uuid;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A room with that name exists.
    #[error("the name is already taken")]
    NameTaken,
    /// The database could not be reached or answered in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database failure: a bug or a broken schema.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if platform::sql::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Conversations, memberships, messages, read receipts, presence, chat sessions,
/// notifications and search, in one database. Cheap to clone (two pool handles).
#[derive(Debug, Clone)]
pub struct ChatStore {
    /// Where everything but the hot writes runs.
    pool: Pool,
    /// Where messages and their events are written (and edits and deletions, which
    /// write events too), and the outbox relay reads them back: on SQLite a second pool
    /// of one connection, which keeps its page cache across its own commits (see
    /// [`platform::sql::connect_sqlite_writer`]); elsewhere the same pool as `pool`.
    writer: Pool,
}

/// Bytes per page of chat's SQLite database: 1 KiB instead of SQLite's 4. Each stored
/// message changes a page at its own place in the history index (the end of its
/// conversation's range), and a commit writes every page it changed to the WAL whole, so
/// smaller pages mean a quarter of the bytes written and checkpointed per message (the
/// fan-out benchmark: ~110 → ~65 MB/s written for 10,000 messages a second).
pub const SQLITE_PAGE_SIZE: u32 = 1024;

/// Opens the store a database URL names and applies its migrations.
pub async fn connect(url: &str) -> anyhow::Result<ChatStore> {
    let pool = platform::sql::connect_paged(url, SQLITE_PAGE_SIZE).await?;
    let writer = match &pool {
        // Its writers and the main pool's take the same turns.
        Pool::Sqlite(main) => platform::sql::connect_sqlite_writer(url, SQLITE_PAGE_SIZE)
            .await?
            .map(|writer| Pool::Sqlite(main.beside(writer))),
        // PostgreSQL's connections share one buffer cache: nothing to keep apart.
        Pool::Postgres(_) => None,
    };
    // An in-memory SQLite database has no writer of its own: a second pool would open
    // another database.
    let writer = writer.unwrap_or_else(|| pool.clone());
    let store = ChatStore { pool, writer };
    store.migrate().await?;
    Ok(store)
}

impl ChatStore {
    /// Applies pending migrations (chat's own, with the outbox's as version 2).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        outbox::migrate(
            &self.pool,
            sqlx::migrate!("./migrations/postgres"),
            sqlx::migrate!("./migrations/sqlite"),
            2,
        )
        .await
        .map_err(|error| StoreError::Database(error.into()))
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.pool.ping().await?)
    }

    /// The outbox its events are written to, on the writer's connection: the relay then
    /// finds the outbox's pages in that connection's cache.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.writer.clone())
    }
}

/// A message's columns.
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, sender_id, sender_name, body, created_at, edited_at, deleted_at";

/// A message as stored (see [`MESSAGE_COLUMNS`]).
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    conversation_id: Uuid,
    sender_id: Uuid,
    sender_name: String,
    body: String,
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
            attachments: Vec::new(),
        }
    }
}

/// The most ids bound in one statement: well under both backends' parameter limits.
const IDS_PER_STATEMENT: usize = 500;

/// `$1, $2, ..., $n`.
fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `n` placeholders from `$first` on: `$first, ..., $(first + n - 1)`.
fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A database count as the domain keeps it.
fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Rows a statement changed, as the domain counts them.
fn changed(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

/// Writes `event` to the outbox in `tx`, the transaction of its state change.
async fn insert_event(tx: &mut Transaction, event: &Event) -> Result<(), sqlx::Error> {
    platform::on_tx!(tx, |tx| outbox::insert(event)
        .execute(&mut **tx)
        .await
        .map(drop))
}
