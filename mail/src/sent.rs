//! Mails sent, by idempotency key, in a database (PostgreSQL in the dev stack and the
//! cluster, SQLite in the embedded run): a caller that retries after this service
//! restarted — its answer lost in the crash — gets the first send's Message-ID instead
//! of a second mail. What remains is the instant between the SMTP server accepting a
//! mail and its row committing; SMTP offers nothing to close it, and the stable
//! Message-ID lets the receiving side recognise the rare duplicate.

use chrono::{DateTime, Utc};
use platform::{on_pool, sql::Pool};

/// The sent-mail table.
#[derive(Debug, Clone)]
pub struct SentMails {
    pool: Pool,
}

impl SentMails {
    /// Opens the database a URL names and applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = platform::sql::connect_migrated(
            url,
            sqlx::migrate!("./migrations/postgres"),
            sqlx::migrate!("./migrations/sqlite"),
        )
        .await?;
        Ok(Self { pool })
    }

    /// The Message-ID of the mail sent under `key`, if one was.
    pub async fn message_id(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        const SQL: &str = "SELECT message_id FROM sent_mails WHERE idempotency_key = $1";
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query_scalar(SQL)
                .bind(key)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records that the mail of `key` went out as `message_id`.
    pub async fn remember(
        &self,
        key: &str,
        message_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO sent_mails (idempotency_key, message_id, sent_at) \
                           VALUES ($1, $2, $3) ON CONFLICT (idempotency_key) DO NOTHING";
        let _turn = self.pool.write_turn().await?;
        on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(key)
                .bind(message_id)
                .bind(at)
                .execute(pool)
                .await
                .map(drop)
        })
    }

    /// Forgets mails sent before `before`; returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        const SQL: &str = "DELETE FROM sent_mails WHERE sent_at < $1";
        let _turn = self.pool.write_turn().await?;
        Ok(on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_remembered_once_and_pruned_after_its_time() {
        let dir = std::env::temp_dir().join(format!("mail-sent-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SentMails::connect(&platform::settings::sqlite_url(&dir, "mail.db"))
            .await
            .unwrap();
        assert_eq!(store.message_id("k1").await.unwrap(), None);
        let sent = Utc::now() - chrono::TimeDelta::days(8);
        store.remember("k1", "<k1@microchat>", sent).await.unwrap();
        // A second record of the same key keeps the first.
        store
            .remember("k1", "<other@microchat>", Utc::now())
            .await
            .unwrap();
        assert_eq!(
            store.message_id("k1").await.unwrap().as_deref(),
            Some("<k1@microchat>")
        );
        store
            .remember("k2", "<k2@microchat>", Utc::now())
            .await
            .unwrap();
        let week_ago = Utc::now() - chrono::TimeDelta::days(7);
        assert_eq!(store.prune(week_ago).await.unwrap(), 1);
        assert_eq!(store.message_id("k1").await.unwrap(), None);
        assert!(store.message_id("k2").await.unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
