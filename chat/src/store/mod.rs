//! The chat store port: conversations, memberships, messages, read receipts and presence.
//! One SQL implementation serves PostgreSQL and SQLite; the URL scheme picks which.

mod search;
mod sql;

use crate::domain::{
    Conversation, ConversationView, Member, Message, Presence, Reaction, ReactionEmoji, UserRef,
};
use crate::mentions::Notification;
use crate::search::{SearchHit, SearchQuery};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::events::Event;
use std::sync::Arc;
use uuid::Uuid;

pub use sql::{PostgresChatStore, SqliteChatStore};

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

/// A message to store, with its `message.sent` event.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message.
    pub message: Message,
    /// Its event, written to the outbox in the same transaction.
    pub event: Event,
    /// The members it mentions: stored (with their events) only if the message is.
    pub mentions: Vec<NewMention>,
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

/// Which page of a user's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationPage {
    /// Unread ones only.
    pub unread_only: bool,
    /// Older than this notification (newest first); `None`: the newest.
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: u32,
}

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

/// Conversations, memberships, messages, read receipts and presence.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The pool of the connection that writes messages and their events, for the outbox
    /// relay (which then finds the outbox's pages in that connection's cache).
    fn pool(&self) -> platform::sql::Pool;
    /// The outbox its events are written to (through the writer's connection), for the
    /// relay.
    fn outbox(&self) -> platform::events::outbox::Outbox {
        platform::events::outbox::Outbox::new(self.pool())
    }

    /// Creates a room with its creator as the first member; `NameTaken` if the name is used.
    async fn create_room(&self, room: &Conversation, creator: &UserRef) -> Result<(), StoreError>;
    /// Every room, with member counts and whether `viewer` is a member, by name.
    async fn rooms(&self, viewer: Uuid) -> Result<Vec<ConversationView>, StoreError>;
    /// A conversation by id.
    async fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError>;
    /// The direct conversation with this key (see [`crate::domain::direct_key`]).
    async fn direct_by_key(&self, key: &str) -> Result<Option<Conversation>, StoreError>;
    /// Creates a direct conversation of two users. If one with the same key appeared
    /// meanwhile, returns that one instead (so opening twice never makes two).
    async fn create_direct(
        &self,
        conversation: &Conversation,
        key: &str,
        members: [&UserRef; 2],
    ) -> Result<Conversation, StoreError>;
    /// Every conversation `user` is a member of, with member counts, newest first.
    async fn conversations_of(&self, user: Uuid) -> Result<Vec<ConversationView>, StoreError>;
    /// Ids of every conversation `user` is a member of.
    async fn membership_ids(&self, user: Uuid) -> Result<Vec<Uuid>, StoreError>;
    /// The members of a conversation.
    async fn members(&self, conversation: Uuid) -> Result<Vec<Member>, StoreError>;
    /// True when `user` is a member of `conversation`.
    async fn is_member(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError>;
    /// Adds a member; false if they already were one.
    async fn join(
        &self,
        conversation: Uuid,
        user: &UserRef,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Removes a member; false if they were not one.
    async fn leave(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError>;

    /// Stores a message with its event if its sender is a member of its conversation
    /// (checked in the same statement); false (and no event) when not.
    async fn insert_message(&self, message: &NewMessage) -> Result<bool, StoreError>;
    /// Stores several messages with their events in one transaction, each only if its
    /// sender is a member; one flag per message. Adapters override this; the default
    /// stores them one by one.
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            stored.push(self.insert_message(message).await?);
        }
        Ok(stored)
    }
    /// A page of history of one conversation (at most `limit` messages).
    async fn messages(
        &self,
        conversation: Uuid,
        page: Page,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;
    /// True when message `id` belongs to `conversation`.
    async fn has_message(&self, conversation: Uuid, id: Uuid) -> Result<bool, StoreError>;
    /// Moves `user`'s read marker forward to `up_to` (never back), writing `event` when it
    /// moved; returns the marker after.
    async fn mark_read(
        &self,
        conversation: Uuid,
        user: Uuid,
        up_to: Uuid,
        event: &Event,
    ) -> Result<Option<Uuid>, StoreError>;

    /// Records an open socket; returns the user's presence after it.
    async fn open_connection(&self, connection: &Connection) -> Result<Presence, StoreError>;
    /// Forgets a closed socket; returns its user's presence after it, if it was known.
    async fn close_connection(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Presence>, StoreError>;
    /// Forgets every socket of a broker instance except `keep` (after the broker
    /// reconnected, or went away); returns the presence of each user whose count changed.
    async fn reset_broker(
        &self,
        broker_id: &str,
        keep: &[Uuid],
        at: DateTime<Utc>,
    ) -> Result<Vec<Presence>, StoreError>;
    /// Records that these brokers follow a live stream now.
    async fn touch_brokers(&self, brokers: &[String], at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Brokers holding sockets that no instance has seen since `since` (gone for good).
    async fn unseen_brokers(&self, since: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
    /// Whether some instance has seen `broker_id` follow a live stream since `since`.
    async fn broker_seen_since(
        &self,
        broker_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Presence of the given users (all online users when `users` is empty).
    async fn presence(&self, users: &[Uuid]) -> Result<Vec<Presence>, StoreError>;

    /// Records a session that began; false when it was known already (also when its end
    /// arrived first: a session never reopens).
    async fn start_chat_session(&self, session: &ChatSession) -> Result<bool, StoreError>;
    /// Records that a session ended (also one never seen begin); false when it had already.
    async fn end_chat_session(
        &self,
        session_id: Uuid,
        user: &UserRef,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Forgets every session of a user (account deleted); returns how many.
    async fn forget_chat_sessions(&self, user: Uuid) -> Result<u32, StoreError>;
    /// Sessions that have not ended, of the given users (of everyone when empty),
    /// oldest first; expired ones included (the caller filters by `expires_at`).
    async fn open_chat_sessions(&self, users: &[Uuid]) -> Result<Vec<ChatSession>, StoreError>;

    /// Deletes a user's direct conversations (with their messages), memberships and
    /// presence, and shows their room messages as the deleted user's, in one
    /// transaction; returns how many conversations went. Idempotent.
    async fn delete_user_data(&self, user: Uuid) -> Result<u32, StoreError>;

    /// Replaces the body of message `id` of `conversation` if `editor` sent it and it is
    /// not a tombstone, recording `at` as its edit time and writing `event`, in one
    /// transaction.
    async fn edit_message(
        &self,
        conversation: Uuid,
        id: Uuid,
        editor: Uuid,
        body: &str,
        at: DateTime<Utc>,
        event: &Event,
    ) -> Result<Edited, StoreError>;
    /// Makes message `id` of `conversation` a tombstone (empty body, `deleted_at` = `at`,
    /// reactions gone) if `actor` sent it or `moderator` is set, writing the event that
    /// `event` makes of the message, in one transaction. Idempotent.
    async fn delete_message(
        &self,
        conversation: Uuid,
        id: Uuid,
        actor: Uuid,
        moderator: bool,
        at: DateTime<Utc>,
        event: &(dyn for<'m> Fn(&'m Message) -> Event + Sync),
    ) -> Result<Deleted, StoreError>;
    /// Adds (`add`) or removes `user`'s reaction with `emoji` to message `id` of
    /// `conversation`; idempotent; never on a tombstone.
    async fn set_reaction(
        &self,
        conversation: Uuid,
        id: Uuid,
        user: Uuid,
        emoji: ReactionEmoji,
        add: bool,
        at: DateTime<Utc>,
    ) -> Result<Reacted, StoreError>;
    /// The reactions to each of `messages` as `viewer` sees them, in one query: per
    /// message, in the order first given. Messages without reactions are absent.
    async fn reactions(
        &self,
        messages: &[Uuid],
        viewer: Uuid,
    ) -> Result<Vec<(Uuid, Reaction)>, StoreError>;
    /// Stores messages like [`ChatStore::insert_messages`], with the notifications of
    /// the members each mentions and their events, all in one transaction; per message,
    /// the notifications stored, or `None` when the sender is not a member.
    async fn insert_messages_mentioning(
        &self,
        messages: &[NewMessage],
    ) -> Result<Vec<Option<Vec<Notification>>>, StoreError>;
    /// The members of `conversation` with these (lowercase) usernames.
    async fn members_named(
        &self,
        conversation: Uuid,
        usernames: &[String],
    ) -> Result<Vec<UserRef>, StoreError>;
    /// For each conversation of `user`: the messages of others after their read marker,
    /// at most [`UNREAD_CAP`] each. One statement.
    async fn unread_counts(&self, user: Uuid) -> Result<Vec<(Uuid, u32)>, StoreError>;
    /// The same count for one conversation (0 when not a member).
    async fn unread_count(&self, conversation: Uuid, user: Uuid) -> Result<u32, StoreError>;
    /// A page of `user`'s notifications, newest first; the snippet is empty where the
    /// user is no longer a member.
    async fn notifications(
        &self,
        user: Uuid,
        page: NotificationPage,
    ) -> Result<Vec<Notification>, StoreError>;
    /// How many of `user`'s notifications are unread.
    async fn unread_notifications(&self, user: Uuid) -> Result<u32, StoreError>;
    /// Marks `user`'s notifications read at `at`: those of `ids` (others' ids change
    /// nothing), or all when `ids` is `None`; returns how many were unread.
    async fn mark_notifications_read(
        &self,
        user: Uuid,
        ids: Option<&[Uuid]>,
        at: DateTime<Utc>,
    ) -> Result<u32, StoreError>;
    /// The messages matching a search in the conversations its user belongs to (decided
    /// in the same query), ranked best first, ties newest first: at most `query.limit`
    /// hits after `query.after`, among the newest `query.window` matches up to
    /// `query.snapshot`.
    async fn search_messages(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError>;
}

/// Bytes per page of chat's SQLite database: 1 KiB instead of SQLite's 4. Each stored
/// message changes a page at its own place in the history index (the end of its
/// conversation's range), and a commit writes every page it changed to the WAL whole, so
/// smaller pages mean a quarter of the bytes written and checkpointed per message (the
/// fan-out benchmark: ~110 → ~65 MB/s written for 10,000 messages a second).
pub const SQLITE_PAGE_SIZE: u32 = 1024;

/// Opens the store a database URL names and applies its migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn ChatStore>> {
    let store: Arc<dyn ChatStore> =
        match platform::sql::connect_paged(url, SQLITE_PAGE_SIZE).await? {
            platform::sql::Pool::Postgres(pool) => Arc::new(PostgresChatStore::new(pool)),
            platform::sql::Pool::Sqlite(pool) => {
                match platform::sql::connect_sqlite_writer(url, SQLITE_PAGE_SIZE).await? {
                    Some(writer) => Arc::new(SqliteChatStore::with_writer(pool, writer)),
                    None => Arc::new(SqliteChatStore::new(pool)),
                }
            }
        };
    store.migrate().await?;
    Ok(store)
}
