//! Keeps a store without a TTL of its own (SQLite) bounded: deletes the entries older
//! than the retention at start and then on a timer, until shutdown. MongoDB needs none of
//! this: its TTL index does the same on the server.

use crate::store::LogStore;
use chrono::Utc;
use platform::shutdown::{Shutdown, pause};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// Time between purges: a 24th of the retention, between 1 second and 1 hour, so entries
/// outlive the retention by at most about 4%.
pub fn purge_interval(retention: Duration) -> Duration {
    (retention / 24).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Purges `store` every [`purge_interval`] until `shutdown`.
pub fn spawn_purge(
    store: Arc<dyn LogStore>,
    retention: Duration,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let Ok(keep) = chrono::TimeDelta::from_std(retention) else {
        tracing::warn!(
            ?retention,
            "retention too long to purge by; entries are kept"
        );
        return tokio::spawn(async {});
    };
    tokio::spawn(async move {
        loop {
            match store.purge_older_than(Utc::now() - keep).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged log entries past their retention"),
                Err(error) => tracing::warn!(%error, "could not purge old log entries"),
            }
            if !pause(&shutdown, purge_interval(retention)).await {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_run_hourly_at_most_and_every_second_at_least() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(purge_interval(14 * day), Duration::from_secs(3600));
        assert_eq!(
            purge_interval(Duration::from_secs(240)),
            Duration::from_secs(10)
        );
        assert_eq!(
            purge_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
