//! Conversations and their memberships: rooms, direct conversations, who is in which.

use super::{ChatStore, IDS_PER_STATEMENT, StoreError, count};
use crate::domain::{Conversation, ConversationView, Kind, Member, UserRef};
use chrono::{DateTime, Utc};
use platform::{on_pool, on_tx, sql::Transaction};
use uuid::Uuid;

/// A conversation as stored (see [`CONVERSATION_COLUMNS`]).
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

/// A conversation with its member count and whether the viewer is a member.
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

/// A membership as stored.
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

/// A conversation's columns, for tables aliased `c`.
const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.name, c.topic, c.created_at";

/// The member count of conversation `c`.
const MEMBER_COUNT: &str =
    "(SELECT COUNT(*) FROM memberships m WHERE m.conversation_id = c.id) AS member_count";

/// Adds member `$2` (named `$3`, at `$4`) to conversation `$1` unless they already are one.
const ADD_MEMBER: &str = "INSERT INTO memberships (conversation_id, user_id, username, joined_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, user_id) DO NOTHING";

/// Inserts a conversation: `$1` id, `$2` kind, `$3` name, `$4` topic, `$5` direct key,
/// `$6` creation time.
const INSERT_CONVERSATION: &str = "INSERT INTO conversations \
     (id, kind, name, topic, direct_key, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// The conversations of user `$1`.
pub(super) const MEMBERSHIP_IDS: &str =
    "SELECT conversation_id FROM memberships WHERE user_id = $1";

/// Conversation views from rows.
fn views(rows: Vec<ConversationViewRow>) -> Result<Vec<ConversationView>, sqlx::Error> {
    rows.into_iter().map(ConversationView::try_from).collect()
}

/// Whether user `$2` is a member of conversation `$1`.
pub(super) const IS_MEMBER: &str =
    "SELECT EXISTS (SELECT 1 FROM memberships WHERE conversation_id = $1 AND user_id = $2)";

impl ChatStore {
    /// Creates a room with its creator as the first member; `NameTaken` if the name is used.
    pub async fn create_room(
        &self,
        room: &Conversation,
        creator: &UserRef,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = on_tx!(&mut tx, |tx| {
            sqlx::query(INSERT_CONVERSATION)
                .bind(room.id)
                .bind(Kind::Room.as_str())
                .bind(&room.name)
                .bind(&room.topic)
                .bind(None::<&str>)
                .bind(room.created_at)
                .execute(&mut **tx)
                .await
                .map(drop)
        });
        match inserted {
            Ok(()) => {}
            Err(error) if platform::sql::is_unique_violation(&error) => {
                return Err(StoreError::NameTaken);
            }
            Err(error) => return Err(error.into()),
        }
        add_member(&mut tx, room.id, creator, room.created_at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every room, with member counts and whether `viewer` is a member, by name.
    pub async fn rooms(&self, viewer: Uuid) -> Result<Vec<ConversationView>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS}, {MEMBER_COUNT}, \
             EXISTS (SELECT 1 FROM memberships m \
                     WHERE m.conversation_id = c.id AND m.user_id = $1) AS joined \
             FROM conversations c WHERE c.kind = 'room' ORDER BY c.name"
        );
        let rows: Vec<ConversationViewRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql).bind(viewer).fetch_all(pool).await
        })?;
        Ok(views(rows)?)
    }

    /// A conversation by id.
    pub async fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1");
        let row: Option<ConversationRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(Conversation::try_from).transpose()?)
    }

    /// The direct conversation with this key (see [`crate::domain::direct_key`]).
    pub async fn direct_by_key(&self, key: &str) -> Result<Option<Conversation>, StoreError> {
        let sql =
            format!("SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.direct_key = $1");
        let row: Option<ConversationRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql).bind(key).fetch_optional(pool).await
        })?;
        Ok(row.map(Conversation::try_from).transpose()?)
    }

    /// Creates a direct conversation of two users. If one with the same key appeared
    /// meanwhile, returns that one instead (so opening twice never makes two).
    pub async fn create_direct(
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

    /// Inserts a direct conversation and both memberships, all or nothing.
    async fn insert_direct(
        &self,
        conversation: &Conversation,
        key: &str,
        members: [&UserRef; 2],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        on_tx!(&mut tx, |tx| {
            sqlx::query(INSERT_CONVERSATION)
                .bind(conversation.id)
                .bind(Kind::Direct.as_str())
                .bind(None::<&str>)
                .bind(&conversation.topic)
                .bind(key)
                .bind(conversation.created_at)
                .execute(&mut **tx)
                .await
                .map(drop)
        })?;
        for member in members {
            add_member(&mut tx, conversation.id, member, conversation.created_at).await?;
        }
        tx.commit().await
    }

    /// Every conversation `user` is a member of, with member counts, newest first.
    pub async fn conversations_of(&self, user: Uuid) -> Result<Vec<ConversationView>, StoreError> {
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
        let rows: Vec<ConversationViewRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql).bind(user).fetch_all(pool).await
        })?;
        Ok(views(rows)?)
    }

    /// Ids of every conversation `user` is a member of.
    pub async fn membership_ids(&self, user: Uuid) -> Result<Vec<Uuid>, StoreError> {
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(MEMBERSHIP_IDS)
                .bind(user)
                .fetch_all(pool)
                .await
        })?)
    }

    /// The members of a conversation.
    pub async fn members(&self, conversation: Uuid) -> Result<Vec<Member>, StoreError> {
        const SQL: &str = "SELECT user_id, username, last_read_id FROM memberships \
             WHERE conversation_id = $1 ORDER BY joined_at, user_id";
        let rows: Vec<MemberRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL).bind(conversation).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(Member::from).collect())
    }

    /// True when `user` is a member of `conversation`.
    pub async fn is_member(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(IS_MEMBER)
                .bind(conversation)
                .bind(user)
                .fetch_one(pool)
                .await
        })?)
    }

    /// Adds a member; false if they already were one.
    pub async fn join(
        &self,
        conversation: Uuid,
        user: &UserRef,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _turn = self.pool.write_turn().await?;
        let added = on_pool!(&self.pool, |pool| {
            sqlx::query(ADD_MEMBER)
                .bind(conversation)
                .bind(user.id)
                .bind(&user.username)
                .bind(at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(added == 1)
    }

    /// Removes a member; false if they were not one.
    pub async fn leave(&self, conversation: Uuid, user: Uuid) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM memberships WHERE conversation_id = $1 AND user_id = $2";
        let _turn = self.pool.write_turn().await?;
        let removed = on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(conversation)
                .bind(user)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(removed == 1)
    }

    /// The members of `conversation` with these (lowercase) usernames.
    pub async fn members_named(
        &self,
        conversation: Uuid,
        usernames: &[String],
    ) -> Result<Vec<UserRef>, StoreError> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        let usernames = &usernames[..usernames.len().min(IDS_PER_STATEMENT)];
        let sql = format!(
            "SELECT user_id, username FROM memberships WHERE conversation_id = $1 \
             AND username IN ({})",
            super::placeholders_from(2, usernames.len())
        );
        let rows: Vec<(Uuid, String)> = on_pool!(&self.pool, |pool| {
            let mut select = sqlx::query_as(&sql).bind(conversation);
            for name in usernames {
                select = select.bind(name);
            }
            select.fetch_all(pool).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, username)| UserRef { id, username })
            .collect())
    }
}

/// Adds a member unless they already are one, in `tx`; true when added.
async fn add_member(
    tx: &mut Transaction,
    conversation: Uuid,
    user: &UserRef,
    at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let added = on_tx!(tx, |tx| {
        sqlx::query(ADD_MEMBER)
            .bind(conversation)
            .bind(user.id)
            .bind(&user.username)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(added == 1)
}
