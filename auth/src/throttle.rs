//! Failed-login throttling: after `max_failures` failures within `window` for one key (an
//! account, or a client address), further attempts are refused until the window ends.
//!
//! An account's attempts count before their outcome is known ([`Charge::UpFront`]), so
//! parallel guesses at one account cannot slip under its limit. A client address counts
//! failures only once they have failed ([`Charge::OnFailure`]): many people behind one
//! address (an office, a carrier's NAT) log in at the same moment, and counting their
//! logins in flight as failures refused them all once more than the limit were under way.
//! Kept in memory: each auth replica throttles what it sees, which bounds guessing to
//! replicas × limit per window.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Keys tracked at most, so a flood of distinct keys cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// When an attempt counts against its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// At once, given back if it did not fail.
    UpFront,
    /// When it has failed.
    OnFailure,
}

/// Counts recent failures per key.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    charge: Charge,
    failures: Mutex<HashMap<String, Failures>>,
}

impl LoginThrottle {
    /// Allows `max_failures` failures per key within `window`, counted as `charge` says.
    pub fn new(max_failures: u32, window: Duration, charge: Charge) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            charge,
            failures: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Failures>> {
        self.failures
            .lock()
            .expect("no code panics while holding the throttle lock")
    }

    /// `key`'s failures in the current window (a fresh one once the last has ended); when
    /// the map is full, ended windows are dropped first.
    fn current<'a>(
        &self,
        failures: &'a mut HashMap<String, Failures>,
        key: &str,
        now: Instant,
    ) -> &'a mut Failures {
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
        entry
    }

    /// `Err(retry_after)` (counting nothing) when `key` has used up its failures; else
    /// lets the attempt go ahead, counting it at once with [`Charge::UpFront`] (given back
    /// with [`Self::forgive`] or [`Self::clear`] if it did not fail). A failed attempt is
    /// reported with [`Self::failed`].
    pub fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut failures = self.lock();
        let entry = self.current(&mut failures, key, now);
        if entry.count >= self.max_failures {
            return Err(entry.since + self.window - now);
        }
        match self.charge {
            Charge::UpFront => entry.count += 1,
            // Nothing counted yet: no entry is kept for an attempt that may succeed.
            Charge::OnFailure if entry.count == 0 => {
                failures.remove(key);
            }
            Charge::OnFailure => {}
        }
        Ok(())
    }

    /// Reports that an attempt of `key` failed (counted now with [`Charge::OnFailure`];
    /// it already was with [`Charge::UpFront`]).
    pub fn failed(&self, key: &str, now: Instant) {
        if self.charge == Charge::OnFailure {
            let mut failures = self.lock();
            self.current(&mut failures, key, now).count += 1;
        }
    }

    /// Gives back one attempt of `key` that did not fail.
    pub fn forgive(&self, key: &str) {
        if self.charge == Charge::OnFailure {
            return;
        }
        let mut failures = self.lock();
        if let Some(entry) = failures.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                failures.remove(key);
            }
        }
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_failures_lock_the_key_until_the_window_ends() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60), Charge::UpFront);
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
        let throttle = LoginThrottle::new(2, Duration::from_secs(60), Charge::UpFront);
        let now = Instant::now();
        throttle.attempt("user:ada", now).unwrap();
        throttle.clear("user:ada");
        throttle.attempt("user:ada", now).unwrap();
        assert!(throttle.attempt("user:ada", now).is_ok());
    }

    #[test]
    fn forgiven_attempts_do_not_count() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60), Charge::UpFront);
        let now = Instant::now();
        throttle.attempt("ip:192.0.2.1", now).unwrap();
        throttle.forgive("ip:192.0.2.1");
        assert!(throttle.attempt("ip:192.0.2.1", now).is_ok());
        assert!(throttle.attempt("ip:192.0.2.1", now).is_err());
    }

    #[test]
    fn attempts_in_flight_at_one_address_are_not_failures() {
        let throttle = LoginThrottle::new(2, Duration::from_secs(60), Charge::OnFailure);
        let now = Instant::now();
        // A hundred people behind one address log in at once: all go ahead.
        for _ in 0..100 {
            assert!(throttle.attempt("ip:192.0.2.1", now).is_ok());
        }
        // Failures count when they have failed; the limit then holds.
        throttle.failed("ip:192.0.2.1", now);
        assert!(throttle.attempt("ip:192.0.2.1", now).is_ok());
        throttle.failed("ip:192.0.2.1", now);
        assert!(throttle.attempt("ip:192.0.2.1", now).is_err());
        assert!(
            throttle
                .attempt("ip:192.0.2.1", now + Duration::from_secs(61))
                .is_ok()
        );
    }
}
