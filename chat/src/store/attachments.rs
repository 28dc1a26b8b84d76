//! Attachments' rows (docs/ARCHITECTURE.md, "Attachments"): an upload's row from its first
//! byte to its message, the claim a message makes, the pages' look-ups, and every way a
//! row goes — each deletion writes an `attachment.removed` event in its transaction, so
//! the objects follow the rows even across a crash.

use super::{ChatStore, IDS_PER_STATEMENT, StoreError, count, insert_event, placeholders_from};
use crate::domain::Attachment;
use crate::events;
use chrono::{DateTime, Utc};
use platform::{
    on_pool, on_tx,
    sql::{Backend, Transaction},
};
use std::collections::HashSet;
use uuid::Uuid;

/// An attachment's columns.
const COLUMNS: &str = "id, conversation_id, uploader_id, message_id, name, content_type, size, \
     width, height, thumbnail_type, thumbnail_size, state, created_at";

/// An attachment as stored (see [`COLUMNS`]).
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    conversation_id: Uuid,
    uploader_id: Uuid,
    message_id: Option<Uuid>,
    name: String,
    content_type: String,
    size: i64,
    width: Option<i32>,
    height: Option<i32>,
    thumbnail_type: Option<String>,
    thumbnail_size: Option<i64>,
    state: String,
    created_at: DateTime<Utc>,
}

/// A size as stored (never negative: the column's check).
fn stored_size(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(0)
}

/// A size as the database takes it (attachments are bounded far below `i64::MAX`).
fn db_size(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// A dimension as stored.
fn dimension(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A dimension as the database takes it (images are bounded far below `i32::MAX` a side
/// by the pixel limit).
fn db_dimension(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl From<Row> for StoredAttachment {
    fn from(row: Row) -> Self {
        let dimensions = match (row.width, row.height) {
            (Some(width), Some(height)) => Some((dimension(width), dimension(height))),
            _ => None,
        };
        Self {
            attachment: Attachment {
                id: row.id,
                conversation_id: row.conversation_id,
                uploader_id: row.uploader_id,
                name: row.name,
                size: stored_size(row.size),
                content_type: row.content_type,
                dimensions,
                created_at: row.created_at,
            },
            message_id: row.message_id,
            ready: row.state == "ready",
            thumbnail: row
                .thumbnail_type
                .zip(row.thumbnail_size)
                .map(|(content_type, size)| (content_type, stored_size(size))),
        }
    }
}

/// An attachment with what only chat needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttachment {
    /// What everyone sees.
    pub attachment: Attachment,
    /// The message that claimed it, if one has.
    pub message_id: Option<Uuid>,
    /// Every byte is stored (false while uploading).
    pub ready: bool,
    /// Its thumbnail's content type and size, once made.
    pub thumbnail: Option<(String, u64)>,
}

/// An upload about to store its bytes.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// The attachment as it will be (its size is counted while the bytes arrive).
    pub attachment: Attachment,
    /// The uploader's quota, in bytes.
    pub quota: u64,
}

/// What became of an upload's start or finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Done: the row as it is now.
    Done(StoredAttachment),
    /// The uploader is not a member of the conversation.
    NotMember,
    /// The uploader's other files and this one would take more than the quota.
    OverQuota,
    /// The row is gone (it expired while uploading).
    Gone,
}

/// Serialises the quota checks of one uploader on PostgreSQL (two uploads finishing at
/// once could otherwise both fit in what is left); SQLite's writers take turns whole.
async fn lock_uploader(tx: &mut Transaction, uploader: Uuid) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, |tx| sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 30))"
        )
        .bind(uploader.to_string())
        .execute(&mut **tx)
        .await
        .map(drop))?;
    }
    Ok(())
}

/// Bytes uploader `$1`'s finished files take.
const USED: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM attachments \
     WHERE uploader_id = $1 AND state = 'ready'";

/// Bytes the uploader's finished files take, read in `tx`.
async fn used(tx: &mut Transaction, uploader: Uuid) -> Result<u64, sqlx::Error> {
    let used: i64 = on_tx!(tx, |tx| sqlx::query_scalar(USED)
        .bind(uploader)
        .fetch_one(&mut **tx)
        .await)?;
    Ok(stored_size(used))
}

/// Deletes the rows `ids` (those there are) and writes their `attachment.removed` event,
/// in `tx`; the ids deleted.
async fn remove(
    tx: &mut Transaction,
    ids: &[Uuid],
    reason: &'static str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut removed = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM attachments WHERE id IN ({}) RETURNING id",
            placeholders_from(1, chunk.len())
        );
        let gone: Vec<Uuid> = on_tx!(tx, |tx| {
            let mut query = sqlx::query_scalar(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(&mut **tx).await
        })?;
        removed.extend(gone);
    }
    if !removed.is_empty() {
        insert_event(tx, &events::attachment_removed(&removed, reason)).await?;
    }
    Ok(removed)
}

/// The ids of the attachments a `WHERE` clause selects (`$1` bound to `key`), in `tx`.
async fn ids_where(
    tx: &mut Transaction,
    condition: &str,
    key: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = format!("SELECT id FROM attachments WHERE {condition}");
    on_tx!(tx, |tx| sqlx::query_scalar(&sql)
        .bind(key)
        .fetch_all(&mut **tx)
        .await)
}

/// Claims the attachments `ids` for `message` (sent by `sender` to `conversation`), in
/// the order given, in `tx`: only the sender's own finished, unclaimed uploads to that
/// conversation. The claimed attachments, or `None` (nothing changed) when any is not
/// such an upload.
pub(super) async fn claim(
    tx: &mut Transaction,
    message: Uuid,
    conversation: Uuid,
    sender: Uuid,
    ids: &[Uuid],
) -> Result<Option<Vec<Attachment>>, sqlx::Error> {
    let sql = format!(
        "UPDATE attachments SET message_id = $1, position = $2 \
         WHERE id = $3 AND uploader_id = $4 AND conversation_id = $5 \
         AND message_id IS NULL AND state = 'ready' RETURNING {COLUMNS}"
    );
    let mut claimed = Vec::with_capacity(ids.len());
    for (position, id) in ids.iter().enumerate() {
        let position = i16::try_from(position).unwrap_or(i16::MAX);
        let row: Option<Row> = on_tx!(tx, |tx| sqlx::query_as(&sql)
            .bind(message)
            .bind(position)
            .bind(*id)
            .bind(sender)
            .bind(conversation)
            .fetch_optional(&mut **tx)
            .await)?;
        match row {
            Some(row) => claimed.push(StoredAttachment::from(row).attachment),
            None => {
                // Undo the claims made so far: the caller drops the message.
                on_tx!(tx, |tx| sqlx::query(
                    "UPDATE attachments SET message_id = NULL, position = 0 WHERE message_id = $1"
                )
                .bind(message)
                .execute(&mut **tx)
                .await
                .map(drop))?;
                return Ok(None);
            }
        }
    }
    Ok(Some(claimed))
}

/// Deletes the attachments of message `id` with their event, in `tx` (the message became
/// a tombstone).
pub(super) async fn remove_of_message(tx: &mut Transaction, id: Uuid) -> Result<(), sqlx::Error> {
    let ids = ids_where(tx, "message_id = $1", id).await?;
    remove(tx, &ids, "message_deleted").await.map(drop)
}

/// Deletes the attachments `user` uploaded and those of the direct conversations about to
/// be deleted with the account (their rows would go by cascade, with no event), with
/// their events, in `tx`.
pub(super) async fn remove_of_user(tx: &mut Transaction, user: Uuid) -> Result<(), sqlx::Error> {
    let in_directs = ids_where(
        tx,
        "conversation_id IN (SELECT c.id FROM conversations c \
         JOIN memberships m ON m.conversation_id = c.id \
         WHERE c.kind = 'direct' AND m.user_id = $1)",
        user,
    )
    .await?;
    remove(tx, &in_directs, "conversation_deleted").await?;
    let own = ids_where(tx, "uploader_id = $1", user).await?;
    remove(tx, &own, "account_deleted").await.map(drop)
}

impl ChatStore {
    /// Writes the row of an upload about to store its bytes ('uploading', size 0), if the
    /// uploader is a member and `declared` more bytes fit in their quota.
    pub async fn start_upload(&self, new: &NewUpload, declared: u64) -> Result<Upload, StoreError> {
        let attachment = &new.attachment;
        // `begin` takes SQLite's write lock before the membership and quota reads, so
        // what they read still holds when the row is written (see `Pool::begin`).
        let mut tx = self.writer.begin().await?;
        lock_uploader(&mut tx, attachment.uploader_id).await?;
        let member: bool = on_tx!(&mut tx, |tx| {
            sqlx::query_scalar(super::conversations::IS_MEMBER)
                .bind(attachment.conversation_id)
                .bind(attachment.uploader_id)
                .fetch_one(&mut **tx)
                .await
        })?;
        if !member {
            return Ok(Upload::NotMember);
        }
        if used(&mut tx, attachment.uploader_id)
            .await?
            .saturating_add(declared)
            > new.quota
        {
            return Ok(Upload::OverQuota);
        }
        let (width, height) = attachment.dimensions.map_or((None, None), |(w, h)| {
            (Some(db_dimension(w)), Some(db_dimension(h)))
        });
        let sql = format!(
            "INSERT INTO attachments (id, conversation_id, uploader_id, name, content_type, \
             size, width, height, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, 'uploading', $8) RETURNING {COLUMNS}"
        );
        let row: Row = on_tx!(&mut tx, |tx| sqlx::query_as(&sql)
            .bind(attachment.id)
            .bind(attachment.conversation_id)
            .bind(attachment.uploader_id)
            .bind(&attachment.name)
            .bind(&attachment.content_type)
            .bind(width)
            .bind(height)
            .bind(attachment.created_at)
            .fetch_one(&mut **tx)
            .await)?;
        tx.commit().await?;
        Ok(Upload::Done(row.into()))
    }

    /// Makes an upload's row 'ready' with its `size` if that still fits in the quota.
    /// `OverQuota` leaves the row as it was (the caller removes it).
    pub async fn finish_upload(
        &self,
        id: Uuid,
        uploader: Uuid,
        size: u64,
        quota: u64,
    ) -> Result<Upload, StoreError> {
        // `begin` takes SQLite's write lock before the membership and quota reads, so
        // what they read still holds when the row is written (see `Pool::begin`).
        let mut tx = self.writer.begin().await?;
        lock_uploader(&mut tx, uploader).await?;
        if used(&mut tx, uploader).await?.saturating_add(size) > quota {
            return Ok(Upload::OverQuota);
        }
        let sql = format!(
            "UPDATE attachments SET state = 'ready', size = $2 \
             WHERE id = $1 AND state = 'uploading' RETURNING {COLUMNS}"
        );
        let row: Option<Row> = on_tx!(&mut tx, |tx| sqlx::query_as(&sql)
            .bind(id)
            .bind(db_size(size))
            .fetch_optional(&mut **tx)
            .await)?;
        tx.commit().await?;
        Ok(row.map_or(Upload::Gone, |row| Upload::Done(row.into())))
    }

    /// An attachment's row, whatever its state.
    pub async fn attachment(&self, id: Uuid) -> Result<Option<StoredAttachment>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM attachments WHERE id = $1");
        let row: Option<Row> = on_pool!(&self.pool, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(StoredAttachment::from))
    }

    /// Records an image's thumbnail; false when the row is gone (the caller deletes the
    /// thumbnail's object: nothing else would).
    pub async fn set_thumbnail(
        &self,
        id: Uuid,
        content_type: &str,
        size: u64,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE attachments SET thumbnail_type = $2, thumbnail_size = $3 WHERE id = $1";
        let _turn = self.pool.write_turn().await?;
        let changed = on_pool!(&self.pool, |pool| sqlx::query(SQL)
            .bind(id)
            .bind(content_type)
            .bind(db_size(size))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(changed == 1)
    }

    /// The attachments of `messages`, in each message's order: (message id, attachment).
    pub async fn attachments_of(
        &self,
        messages: &[Uuid],
    ) -> Result<Vec<(Uuid, Attachment)>, StoreError> {
        let mut found = Vec::new();
        for chunk in messages.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {COLUMNS} FROM attachments WHERE message_id IN ({}) \
                 ORDER BY message_id, position",
                placeholders_from(1, chunk.len())
            );
            let rows: Vec<Row> = on_pool!(&self.pool, |pool| {
                let mut query = sqlx::query_as(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await
            })?;
            found.extend(rows.into_iter().filter_map(|row| {
                let message = row.message_id?;
                Some((message, StoredAttachment::from(row).attachment))
            }));
        }
        Ok(found)
    }

    /// Bytes of `uploader`'s finished files.
    pub async fn quota_used(&self, uploader: Uuid) -> Result<u64, StoreError> {
        let used: i64 = on_pool!(&self.pool, |pool| sqlx::query_scalar(USED)
            .bind(uploader)
            .fetch_one(pool)
            .await)?;
        Ok(stored_size(used))
    }

    /// Deletes the rows `ids` with their `attachment.removed` event (`reason`); the ids
    /// that were there.
    pub async fn remove_attachments(
        &self,
        ids: &[Uuid],
        reason: &'static str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let removed = remove(&mut tx, ids, reason).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Deletes (with their event) at most `limit` attachments no message claimed that were
    /// uploaded (or started) before `before`: uploads nobody sent, and uploads a crash cut
    /// short. The ids removed.
    pub async fn expire_unclaimed(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        const SQL: &str = "SELECT id FROM attachments \
             WHERE message_id IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2";
        let mut tx = self.writer.begin().await?;
        let ids: Vec<Uuid> = on_tx!(&mut tx, |tx| sqlx::query_scalar(SQL)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&mut **tx)
            .await)?;
        let removed = remove(&mut tx, &ids, "unclaimed").await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Which of `ids` have a row (the orphan sweep: an object without one is an orphan).
    pub async fn known_attachments(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        let mut known = HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id FROM attachments WHERE id IN ({})",
                placeholders_from(1, chunk.len())
            );
            let found: Vec<Uuid> = on_pool!(&self.pool, |pool| {
                let mut query = sqlx::query_scalar(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await
            })?;
            known.extend(found);
        }
        Ok(known)
    }

    /// How many attachment rows there are (the orphan sweep's report).
    pub async fn attachment_count(&self) -> Result<u32, StoreError> {
        let n: i64 = on_pool!(&self.pool, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM attachments"
        )
        .fetch_one(pool)
        .await)?;
        Ok(count(n))
    }
}
