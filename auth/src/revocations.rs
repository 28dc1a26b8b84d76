//! The revocation feed: which sessions have ended, known in memory so token checks never
//! touch the database, and streamed to every watcher (brokers) as it changes.
//!
//! A logout on this replica is recorded at once; logouts on other replicas arrive by
//! polling the `revocations` table every half second. The poll looks back a few seconds,
//! since rows may commit out of time order; recording is idempotent.

use crate::store::{Revocation, StoreError, UserStore};
use platform::{revocation::RevocationList, shutdown::Shutdown};
use std::{sync::Arc, time::Duration};
use tokio::sync::broadcast;
use uuid::Uuid;

const POLL_EVERY: Duration = Duration::from_millis(500);
const LOOK_BACK_MS: i64 = 5_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A revoked session, with the epoch second after which every token of it has expired.
type Revoked = (Uuid, i64);

/// Revoked sessions, and a channel announcing each new one.
#[derive(Debug)]
pub struct RevocationFeed {
    list: RevocationList,
    announce: broadcast::Sender<Revoked>,
}

impl RevocationFeed {
    /// Loads every revocation whose tokens may still be alive.
    pub async fn load(store: &UserStore) -> Result<Self, StoreError> {
        let (announce, _) = broadcast::channel(4096);
        let feed = Self {
            list: RevocationList::default(),
            announce,
        };
        let now = chrono::Utc::now().timestamp();
        feed.list.replace(
            store
                .revocations_since(0)
                .await?
                .into_iter()
                .filter(|entry| entry.forget_after > now)
                .map(|entry| (entry.session_id, entry.forget_after)),
        );
        Ok(feed)
    }

    /// True when the session has been revoked.
    pub fn is_revoked(&self, session: Uuid) -> bool {
        self.list.is_revoked(session)
    }

    /// Records a revocation (idempotent) and announces it if it is new.
    pub fn record(&self, entry: &Revocation) {
        if !self.list.is_revoked(entry.session_id) {
            self.list.revoke(entry.session_id, entry.forget_after);
            // No receiver is fine: nobody is watching.
            let _ = self.announce.send((entry.session_id, entry.forget_after));
        }
    }

    /// Subscribes to new revocations, then takes a snapshot, so nothing falls in between.
    pub fn watch(&self) -> (Vec<Revoked>, broadcast::Receiver<Revoked>) {
        let receiver = self.announce.subscribe();
        (self.list.entries(), receiver)
    }

    /// Follows the database feed until shutdown: picks up other replicas' revocations and
    /// prunes what has expired.
    pub async fn follow(self: Arc<Self>, store: UserStore, shutdown: Shutdown) {
        let mut since = chrono::Utc::now().timestamp_millis() - LOOK_BACK_MS;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if !platform::shutdown::pause(&shutdown, POLL_EVERY).await {
                return;
            }
            match store.revocations_since(since - LOOK_BACK_MS).await {
                Ok(entries) => {
                    for entry in &entries {
                        self.record(entry);
                        since = since.max(entry.revoked_at_ms);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot poll the revocation feed"),
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                let now = chrono::Utc::now().timestamp();
                self.list.prune(now);
                if let Err(error) = store.prune_revocations(now).await {
                    tracing::warn!(%error, "cannot prune the revocation feed");
                }
            }
        }
    }
}
