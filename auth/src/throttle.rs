//! Failed-login throttling: after `max_failures` failures within `window` for one key (an
//! account, or a client address), further attempts are refused until the window ends.
//! Kept in memory: each auth replica throttles what it sees, which bounds guessing to
//! replicas × limit per window.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Keys tracked at most, so a flood of distinct keys cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Counts recent failures per key.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

impl LoginThrottle {
    /// Allows `max_failures` failures per key within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    /// Counts an attempt for `key` as a failure up front, so concurrent attempts cannot all
    /// slip under the limit; `Err(retry_after)` (counting nothing) when `key` has used up
    /// its failures. An attempt that did not fail is given back with [`Self::forgive`] or
    /// [`Self::clear`].
    pub fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut failures = self
            .failures
            .lock()
            .expect("no code panics while holding the throttle lock");
        if failures.len() >= MAX_KEYS {
            let window = self.window;
            failures.retain(|_, entry| now < entry.since + window);
        }
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now >= entry.since + self.window {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        if entry.count >= self.max_failures {
            return Err(entry.since + self.window - now);
        }
        entry.count += 1;
        Ok(())
    }

    /// Gives back one attempt of `key` that did not fail.
    pub fn forgive(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .expect("no code panics while holding the throttle lock");
        if let Some(entry) = failures.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                failures.remove(key);
            }
        }
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .expect("no code panics while holding the throttle lock")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_failures_lock_the_key_until_the_window_ends() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(throttle.attempt("user:ada", start).is_ok());
        }
        let retry = throttle
            .attempt("user:ada", start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(
            throttle.attempt("user:bob", start).is_ok(),
            "other keys are not affected"
        );
        assert!(
            throttle
                .attempt("user:ada", start + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn success_clears_the_count() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        throttle.attempt("user:ada", now).unwrap();
        throttle.clear("user:ada");
        throttle.attempt("user:ada", now).unwrap();
        assert!(throttle.attempt("user:ada", now).is_ok());
    }

    #[test]
    fn forgiven_attempts_do_not_count() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        let now = Instant::now();
        throttle.attempt("ip:192.0.2.1", now).unwrap();
        throttle.forgive("ip:192.0.2.1");
        assert!(throttle.attempt("ip:192.0.2.1", now).is_ok());
        assert!(throttle.attempt("ip:192.0.2.1", now).is_err());
    }
}
