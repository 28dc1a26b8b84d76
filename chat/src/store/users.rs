//! A user's data across the aggregates: what goes when their account is deleted.

use super::{ChatStore, StoreError, changed};
use platform::on_tx;
use uuid::Uuid;

impl ChatStore {
    /// Deletes a user's direct conversations (with their messages), the files they
    /// uploaded (with the event that deletes the objects), memberships and presence, and
    /// shows their room messages as the deleted user's, in one transaction; returns how
    /// many conversations went. Idempotent.
    pub async fn delete_user_data(&self, user: Uuid) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Their files, and the files of the direct conversations about to go, with the
        // event that deletes their objects: the cascade below would drop such rows silently.
        super::attachments::remove_of_user(&mut tx, user).await?;
        // Deleting a direct conversation cascades to its messages and memberships.
        let directs = on_tx!(&mut tx, |tx| {
            sqlx::query(
                "DELETE FROM conversations WHERE kind = 'direct' \
                 AND id IN (SELECT conversation_id FROM memberships WHERE user_id = $1)",
            )
            .bind(user)
            .execute(&mut **tx)
            .await
            .map(|done| done.rows_affected())
        })?;
        // What they said in rooms stays: it is part of the room's history, but no longer
        // under their name (auth never gives the name to anyone else, and the history
        // should not point at a person who asked to be gone).
        for sql in [
            "UPDATE messages SET sender_name = $2 WHERE sender_id = $1",
            "UPDATE notifications SET sender_name = $2 WHERE sender_id = $1",
        ] {
            on_tx!(&mut tx, |tx| {
                sqlx::query(sql)
                    .bind(user)
                    .bind(crate::domain::DELETED_USER_NAME)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })?;
        }
        for sql in [
            "DELETE FROM notifications WHERE user_id = $1",
            "DELETE FROM memberships WHERE user_id = $1",
            "DELETE FROM connections WHERE user_id = $1",
            "DELETE FROM last_seen WHERE user_id = $1",
            "DELETE FROM reactions WHERE user_id = $1",
        ] {
            on_tx!(&mut tx, |tx| {
                sqlx::query(sql)
                    .bind(user)
                    .execute(&mut **tx)
                    .await
                    .map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(changed(directs))
    }
}
