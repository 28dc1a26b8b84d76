//! Notifications of mentions: written with the message that mentions (see
//! [`super::messages`]), listed, counted and marked read by their user.

use super::{ChatStore, IDS_PER_STATEMENT, NewMention, StoreError, changed, count};
use crate::domain::UserRef;
use crate::mentions::{Notification, snippet};
use chrono::{DateTime, Utc};
use platform::{on_pool, on_tx, sql::Transaction};
use uuid::Uuid;

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

/// A notification with what the list shows of its message and conversation.
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

/// Notifications per multi-row insert: 7 parameters each.
pub(super) const PER_INSERT: usize = 500;

/// Inserts the notifications of mentions (at most [`PER_INSERT`]) in `tx`, in one
/// statement.
pub(super) async fn insert(
    tx: &mut Transaction,
    mentions: &[&NewMention],
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |tx| {
        let mut insert = sqlx::QueryBuilder::new(
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
        insert.build().execute(&mut **tx).await.map(drop)
    })
}

impl ChatStore {
    /// A page of `user`'s notifications, newest first; the snippet is empty where the
    /// user is no longer a member.
    pub async fn notifications(
        &self,
        user: Uuid,
        page: NotificationPage,
    ) -> Result<Vec<Notification>, StoreError> {
        let unread = if page.unread_only {
            "AND n.read_at IS NULL"
        } else {
            ""
        };
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
        let rows: Vec<NotificationRow> = on_pool!(&self.pool, |pool| {
            sqlx::query_as(&sql)
                .bind(user)
                .bind(page.before.unwrap_or(Uuid::max()))
                .bind(i64::from(page.limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(Notification::from).collect())
    }

    /// How many of `user`'s notifications are unread.
    pub async fn unread_notifications(&self, user: Uuid) -> Result<u32, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL";
        let unread: i64 = on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(SQL).bind(user).fetch_one(pool).await
        })?;
        Ok(count(unread))
    }

    /// Marks `user`'s notifications read at `at`: those of `ids` (others' ids change
    /// nothing), or all when `ids` is `None`; returns how many were unread.
    pub async fn mark_notifications_read(
        &self,
        user: Uuid,
        ids: Option<&[Uuid]>,
        at: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let mut sql =
            "UPDATE notifications SET read_at = $1 WHERE read_at IS NULL AND user_id = $2"
                .to_owned();
        let ids: &[Uuid] = match ids {
            Some([]) => return Ok(0),
            Some(ids) => &ids[..ids.len().min(IDS_PER_STATEMENT)],
            None => &[],
        };
        if !ids.is_empty() {
            sql.push_str(&format!(
                " AND id IN ({})",
                super::placeholders_from(3, ids.len())
            ));
        }
        let _turn = self.pool.write_turn().await?;
        let marked = on_pool!(&self.pool, |pool| {
            let mut update = sqlx::query(&sql).bind(at).bind(user);
            for id in ids {
                update = update.bind(*id);
            }
            update.execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(changed(marked))
    }
}
