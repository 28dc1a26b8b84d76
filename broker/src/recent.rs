//! What auth said about an account a moment ago, so `GET /api/auth/me` (every page load)
//! and the admin routes do not each cost a gRPC call: auth is asked at most once per
//! [`FRESH_FOR`] per key.
//!
//! Staleness only ever errs on the side of fewer rights or less information:
//! - a role is remembered per *session*: losing a role or being deactivated ends every
//!   session of the account (the revocation feed), so a remembered role can never outlive
//!   a demotion; a promotion made through this broker shows at once (it forgets every
//!   remembered role), one made elsewhere within [`FRESH_FOR`];
//! - an address's verification only goes from unverified to verified, and the broker
//!   remembers the new answer when it verifies one.

use quick_cache::sync::Cache;
use std::{
    hash::Hash,
    time::{Duration, Instant},
};

/// How long an answer of auth is used before it is asked again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// Keys remembered at most (least recently used go first).
const CAPACITY: usize = 50_000;

/// Recent answers by key.
pub struct Recent<K, V> {
    answers: Cache<K, (Instant, V)>,
}

impl<K: Eq + Hash + Clone, V: Clone> Recent<K, V> {
    /// Nothing remembered yet.
    pub fn new() -> Self {
        Self {
            answers: Cache::new(CAPACITY),
        }
    }

    /// The answer for `key` if it is fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        self.answers
            .get(key)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, value)| value)
    }

    /// Forgets every answer.
    pub fn clear(&self) {
        self.answers.clear();
    }

    /// Remembers `value` for `key`, from now.
    pub fn put(&self, key: K, value: V) {
        self.answers.insert(key, (Instant::now(), value));
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Recent<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_answer_is_used() {
        let recent = Recent::new();
        assert_eq!(recent.get(&1), None::<bool>);
        recent.put(1, false);
        recent.put(1, true);
        assert_eq!(recent.get(&1), Some(true));
        assert_eq!(recent.get(&2), None);
    }
}
