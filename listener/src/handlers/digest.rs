//! Mention digests: one mail per user per period listing the @mentions they have not
//! read, instead of one mail per mention, and only for users who are offline.
//!
//! - A `message.mentioned` event for a user with no socket open starts a pending digest
//!   (a row in the listener's own database, so a restart loses nothing), due one period
//!   after it; more mentions meanwhile join it.
//! - A periodic task takes the digests that are due. For each it asks chat for the
//!   user's unread mentions since the digest began (a mention read in the app meanwhile
//!   drops out; none left: no mail), and auth for the address (verified only: an
//!   unverified address gets no mail but its verification), then mails the
//!   `mention_digest` template and deletes the row. A user online by then gets none: they
//!   see the notifications in the app.
//! - The mail's idempotency key names the user and the digest's due time, so a digest
//!   sent again after a crash between the mail and the delete is one mail.

use super::{HandleError, Handlers, caller};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use platform::{on_pool, shutdown::Shutdown, sql::Pool};
use proto::{
    auth::v1::GetEmailStatusRequest,
    chat::v1::{self as chat, ListNotificationsRequest, ListPresenceRequest},
    events::v1::MessageMentioned,
};
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

/// Digests handled per pass of the task.
const DIGESTS_PER_PASS: i64 = 100;
/// Mentions listed in one digest (the rest are counted as "and N more").
const LISTED: usize = 5;
/// Unread mentions read from chat per digest.
const READ_FROM_CHAT: u32 = 100;
/// Characters of a message shown per mention (the template's variables hold 1,000).
const SNIPPET_CHARS: usize = 140;
/// The chat page the mail links to.
const CHAT_PAGE: &str = "/chat";

/// The pending digests, in the listener's database.
#[derive(Debug, Clone)]
pub struct Digests {
    pool: Pool,
    period: Duration,
}

/// A digest whose period has passed.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Due {
    user_id: Uuid,
    username: String,
    since: DateTime<Utc>,
    due_at: DateTime<Utc>,
}

impl Digests {
    /// Digests in `pool`, the listener's database (see [`crate::connect_database`]), each
    /// due `period` after its first mention.
    pub fn new(pool: Pool, period: Duration) -> Self {
        Self { pool, period }
    }

    /// How often the task looks for due digests: a tenth of the period, between 200 ms
    /// and 30 s.
    pub fn tick(&self) -> Duration {
        tick_of(self.period)
    }

    /// Notes a mention of `user` made at `at`: starts their digest, or adds to the one
    /// pending. Idempotent.
    async fn note(&self, user: Uuid, username: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO mention_digests (user_id, username, since, last_at, due_at) \
             VALUES ($1, $2, $3, $3, $4) ON CONFLICT (user_id) DO UPDATE \
             SET last_at = excluded.last_at WHERE mention_digests.last_at < excluded.last_at";
        let due = Utc::now() + TimeDelta::from_std(self.period).unwrap_or(TimeDelta::MAX);
        let _turn = self.pool.write_turn().await?;
        on_pool!(&self.pool, |pool| {
            sqlx::query(SQL)
                .bind(user)
                .bind(username)
                .bind(at)
                .bind(due)
                .execute(pool)
                .await
                .map(drop)
        })
    }

    /// Digests due at `now`, oldest first.
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Due>, sqlx::Error> {
        const SQL: &str = "SELECT user_id, username, since, due_at FROM mention_digests \
             WHERE due_at <= $1 ORDER BY due_at LIMIT $2";
        on_pool!(&self.pool, |pool| {
            sqlx::query_as(SQL)
                .bind(now)
                .bind(DIGESTS_PER_PASS)
                .fetch_all(pool)
                .await
        })
    }

    /// Closes a digest whose mentions up to `through` are dealt with: deleted, unless a
    /// mention came after them, which then starts the next period.
    async fn close(&self, due: &Due, through: DateTime<Utc>) -> Result<(), sqlx::Error> {
        const DELETE: &str = "DELETE FROM mention_digests WHERE user_id = $1 AND last_at <= $2";
        const NEXT: &str = "UPDATE mention_digests SET since = $2, due_at = $3 WHERE user_id = $1";
        let next_due = Utc::now() + TimeDelta::from_std(self.period).unwrap_or(TimeDelta::MAX);
        let after = through + TimeDelta::microseconds(1);
        let _turn = self.pool.write_turn().await?;
        on_pool!(&self.pool, |pool| {
            let deleted = sqlx::query(DELETE)
                .bind(due.user_id)
                .bind(through)
                .execute(pool)
                .await?;
            if deleted.rows_affected() == 0 {
                sqlx::query(NEXT)
                    .bind(due.user_id)
                    .bind(after)
                    .bind(next_due)
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })
    }
}

/// A tenth of `period`, between 200 ms and 30 s.
fn tick_of(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

/// Reads a protobuf timestamp.
fn time(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
}

/// One line of the digest: who, where, what (shortened).
fn line(notification: &chat::Notification) -> String {
    let place = if notification.conversation_name.is_empty() {
        "a direct message".to_owned()
    } else {
        format!("#{}", notification.conversation_name)
    };
    let text: String = notification
        .snippet
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    let more = if notification.snippet.chars().count() > SNIPPET_CHARS {
        "…"
    } else {
        ""
    };
    format!("{} in {place}: {text}{more}", notification.sender_name)
}

impl Handlers {
    /// The work of a `message.mentioned` event: a digest for the user if they are
    /// offline now (online, they see the notification live).
    pub(super) async fn note_mention(
        &self,
        mention: &MessageMentioned,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), HandleError> {
        let Some(digests) = &self.digests else {
            return Ok(());
        };
        let user = Uuid::try_parse(&mention.user_id)
            .map_err(|_| HandleError::Permanent("user_id: not a UUID".into()))?;
        if self.online(&mention.user_id).await? {
            return Ok(());
        }
        digests
            .note(user, &mention.username, occurred_at)
            .await
            .map_err(|error| HandleError::Transient(format!("the listener database: {error}")))
    }

    /// Whether the user has a socket open on some broker.
    async fn online(&self, user_id: &str) -> Result<bool, HandleError> {
        let presence = self
            .chat
            .clone()
            .list_presence(ListPresenceRequest {
                user_ids: vec![user_id.to_owned()],
            })
            .await
            .map_err(|status| HandleError::from_status("chat", &status))?
            .into_inner();
        Ok(presence.users.iter().any(|user| user.online))
    }

    /// Sends every digest that is due; returns how many mails went out. A digest that
    /// fails stays pending and is tried again on the next pass.
    pub async fn send_due_digests(&self) -> Result<usize, HandleError> {
        let Some(digests) = &self.digests else {
            return Ok(0);
        };
        let due = digests
            .due(Utc::now())
            .await
            .map_err(|error| HandleError::Transient(format!("the listener database: {error}")))?;
        let mut mailed = 0;
        for digest in due {
            match self.send_digest(digests, &digest).await {
                Ok(sent) => mailed += usize::from(sent),
                Err(error) => {
                    tracing::warn!(user_id = %digest.user_id, %error, "mention digest not sent; trying again later");
                }
            }
        }
        Ok(mailed)
    }

    /// One digest: mailed if the user is offline, has unread mentions since it began
    /// and a verified address; closed either way. True when mailed.
    async fn send_digest(&self, digests: &Digests, digest: &Due) -> Result<bool, HandleError> {
        let user_id = digest.user_id.to_string();
        let now = Utc::now();
        if self.online(&user_id).await? {
            digests.close(digest, now).await.map_err(database)?;
            return Ok(false);
        }
        let listed = self
            .chat
            .clone()
            .list_notifications(ListNotificationsRequest {
                caller: Some(caller(&user_id, &digest.username)),
                unread_only: true,
                before: String::new(),
                limit: READ_FROM_CHAT,
            })
            .await
            .map_err(|status| HandleError::from_status("chat", &status))?
            .into_inner();
        let mut unread: Vec<&chat::Notification> = listed
            .notifications
            .iter()
            .filter(|n| time(n.created_at.as_ref()).is_some_and(|at| at >= digest.since))
            .collect();
        // Oldest first, as they happened.
        unread.reverse();
        let through = unread
            .iter()
            .filter_map(|n| time(n.created_at.as_ref()))
            .max()
            .unwrap_or(now);
        if unread.is_empty() {
            digests.close(digest, now).await.map_err(database)?;
            return Ok(false);
        }
        let Some(address) = self.verified_address(&user_id).await? else {
            digests.close(digest, through).await.map_err(database)?;
            return Ok(false);
        };
        let lines: Vec<String> = unread.iter().take(LISTED).map(|n| line(n)).collect();
        let key = format!(
            "mention-digest-{}-{}",
            digest.user_id.simple(),
            digest.due_at.timestamp_micros()
        );
        self.mail(
            &key,
            &address,
            "mention_digest",
            [
                ("username", digest.username.clone()),
                ("count", unread.len().to_string()),
                ("mentions", lines.join("\n")),
                ("more", unread.len().saturating_sub(LISTED).to_string()),
                ("chat_url", self.pages.page(CHAT_PAGE)),
            ],
        )
        .await?;
        digests.close(digest, through).await.map_err(database)?;
        metrics::counter!("listener_mention_digests_total").increment(1);
        tracing::info!(user_id = %digest.user_id, mentions = unread.len(), "mention digest mailed");
        Ok(true)
    }

    /// The user's address if it is verified; `None` when it is not, or the user is gone.
    async fn verified_address(&self, user_id: &str) -> Result<Option<String>, HandleError> {
        let status = self
            .auth
            .clone()
            .get_email_status(GetEmailStatusRequest {
                user_id: user_id.to_owned(),
            })
            .await;
        match status {
            Ok(status) => {
                let status = status.into_inner();
                Ok(status.verified.then_some(status.email))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(HandleError::from_status("auth", &status)),
        }
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "passed to map_err, which hands the error over by value"
)]
fn database(error: sqlx::Error) -> HandleError {
    HandleError::Transient(format!("the listener database: {error}"))
}

/// Sends the digests that are due, every [`Digests::tick`], until `shutdown`.
pub async fn run(handlers: Handlers, shutdown: Shutdown) {
    let Some(tick) = handlers.digests.as_ref().map(Digests::tick) else {
        return;
    };
    while platform::shutdown::pause(&shutdown, tick).await {
        if let Err(error) = handlers.send_due_digests().await {
            tracing::warn!(%error, "could not look for due mention digests");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_line_names_sender_place_and_a_short_text() {
        let notification = chat::Notification {
            sender_name: "bob".into(),
            conversation_name: "general".into(),
            snippet: format!("hi @ada\n{}", "x".repeat(300)),
            ..chat::Notification::default()
        };
        let text = line(&notification);
        assert!(text.starts_with("bob in #general: hi @ada x"), "{text}");
        assert!(text.ends_with('…'));
        assert!(!text.contains('\n'));
        let direct = chat::Notification {
            sender_name: "bob".into(),
            snippet: "psst".into(),
            ..chat::Notification::default()
        };
        assert_eq!(line(&direct), "bob in a direct message: psst");
    }

    #[test]
    fn the_task_ticks_a_tenth_of_the_period_within_bounds() {
        assert_eq!(tick_of(Duration::from_secs(900)), Duration::from_secs(30));
        assert_eq!(tick_of(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(tick_of(Duration::from_secs(60)), Duration::from_secs(6));
    }
}
