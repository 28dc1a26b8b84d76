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
        Self { max_failures: max_failures.max(1), window, failures: Mutex::default() }
    }

    /// `Err(retry_after)` when `key` has used up its failures.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().expect("no code panics while holding the throttle lock");
        match failures.get(key) {
            Some(entry) if entry.count >= self.max_failures && now < entry.since + self.window => {
                Err(entry.since + self.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure for `key`.
    pub fn fail(&self, key: &str, now: Instant) {
        let mut failures = self.failures.lock().expect("no code panics while holding the throttle lock");
        if failures.len() >= MAX_KEYS {
            let window = self.window;
            failures.retain(|_, entry| now < entry.since + window);
        }
        let entry = failures.entry(key.to_owned()).or_insert(Failures { count: 0, since: now });
        if now >= entry.since + self.window {
            *entry = Failures { count: 0, since: now };
        }
        entry.count = entry.count.saturating_add(1);
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn clear(&self, key: &str) {
        self.failures.lock().expect("no code panics while holding the throttle lock").remove(key);
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
            assert!(throttle.check("user:ada", start).is_ok());
            throttle.fail("user:ada", start);
        }
        let retry = throttle.check("user:ada", start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(throttle.check("user:bob", start).is_ok(), "other keys are not affected");
        assert!(throttle.check("user:ada", start + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn success_clears_the_count() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        throttle.fail("user:ada", now);
        throttle.clear("user:ada");
        throttle.fail("user:ada", now);
        assert!(throttle.check("user:ada", now).is_ok());
    }
}
