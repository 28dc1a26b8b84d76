//! Failed-login throttling that slows guessing down without letting a guesser lock the
//! owner out (OWASP ASVS 4.0 V2.2.1; the policy in docs/SECURITY.md, "Login throttling").
//!
//! Three counts, each kept per auth replica in memory:
//!
//! - **one address at one account** ([`Backoff`], `per_source`): a few failures are free,
//!   then each further attempt waits for a delay that doubles, up to 15 minutes. This is
//!   what stops a guesser; the owner, at another address, does not share the count.
//! - **one account from every address** (`per_account`): past a looser number of failures,
//!   attempts from addresses the account has not logged in from wait for a delay that
//!   doubles up to a minute — so a guesser with many addresses gets at most about 80
//!   guesses an hour (ASVS: at most 100), while the owner at a known address goes ahead,
//!   and at a new one waits a minute at most, never the whole window.
//! - **one address at every account** ([`AddressLimit`], `per_ip`): failures in a window,
//!   then refused until it ends (password spraying from one address).
//!
//! An account's attempts count before their outcome is known, so parallel guesses cannot
//! slip under a limit; one that did not fail is given back. An address's count across
//! accounts counts failures only once they failed: many people behind one address (an
//! office, a carrier's NAT) log in at the same moment, and counting their logins in flight
//! as failures refused them all once more than the limit were under way.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Keys tracked at most per count, so a flood of distinct keys cannot grow memory
/// without bound.
const MAX_KEYS: usize = 100_000;
/// The first wait of an address that used up its free failures at one account.
const SOURCE_FIRST_DELAY: Duration = Duration::from_secs(60);
/// The longest wait of one address at one account.
const SOURCE_MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// The first wait at an account that used up its free failures, from an unknown address.
const ACCOUNT_FIRST_DELAY: Duration = Duration::from_secs(5);
/// The longest wait at one account from an unknown address: guesses from every address
/// together stay under ASVS V2.2.1's 100 an hour.
const ACCOUNT_MAX_DELAY: Duration = Duration::from_secs(60);
/// How long an address the account logged in from stays known.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The limits (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Free failures of one address at one account.
    pub per_source: u32,
    /// Free failures at one account from every address.
    pub per_account: u32,
    /// Failures of one address at every account within `window`.
    pub per_ip: u32,
    /// A count is forgotten once this long has passed after its wait with no attempt;
    /// the window of `per_ip`.
    pub window: Duration,
}

/// Every login attempt passes here first, and reports back how it went.
#[derive(Debug)]
pub struct LoginThrottle {
    per_source: Backoff,
    per_account: Backoff,
    per_ip: AddressLimit,
    known: KnownAddresses,
}

/// An attempt let through: the keys it was counted under, to report its outcome.
#[derive(Debug)]
#[must_use = "report the outcome with `failed` or `succeeded`"]
pub struct Attempt {
    source: String,
    account: String,
    ip: String,
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            per_source: Backoff::new(
                limits.per_source,
                limits.window,
                SOURCE_FIRST_DELAY,
                SOURCE_MAX_DELAY,
            ),
            per_account: Backoff::new(
                limits.per_account,
                limits.window,
                ACCOUNT_FIRST_DELAY,
                ACCOUNT_MAX_DELAY,
            ),
            per_ip: AddressLimit::new(limits.per_ip, limits.window),
            known: KnownAddresses::default(),
        }
    }

    /// Lets an attempt at `account` from `ip` go ahead, counting it, or says how long to
    /// wait (counting nothing). The account-wide count does not hold back an address the
    /// account logged in from before.
    pub fn attempt(&self, account: &str, ip: &str, now: Instant) -> Result<Attempt, Duration> {
        let source = format!("{account}\u{0}{ip}");
        let known = self.known.contains(&source, now);
        let source_wait = self.per_source.charge(&source, now, true);
        let account_wait = self.per_account.charge(account, now, !known);
        let ip_wait = self.per_ip.check(ip, now);
        let waits = [source_wait, account_wait, ip_wait];
        let Some(wait) = waits.iter().filter_map(|wait| wait.err()).max() else {
            return Ok(Attempt {
                source,
                account: account.to_owned(),
                ip: ip.to_owned(),
            });
        };
        if source_wait.is_ok() {
            self.per_source.forgive(&source);
        }
        if account_wait.is_ok() {
            self.per_account.forgive(account);
        }
        Err(wait)
    }

    /// The attempt failed: its charges stand, and the address's failure counts.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "an outcome is reported once: taking the attempt makes a second report not compile"
    )]
    pub fn failed(&self, attempt: Attempt, now: Instant) {
        self.per_source.failed_at(&attempt.source, now);
        self.per_account.failed_at(&attempt.account, now);
        self.per_ip.failed(&attempt.ip, now);
    }

    /// The account's owner proved themselves another way (a password reset through a
    /// mailed link): the account-wide count starts afresh.
    pub fn clear_account(&self, account: &str) {
        self.per_account.clear(account);
    }

    /// The attempt succeeded: this address starts afresh at this account and is known to
    /// it from now on; the account-wide count only gets this attempt back (the owner
    /// logging in does not wipe out what a guesser elsewhere has used up).
    pub fn succeeded(&self, attempt: Attempt, now: Instant) {
        self.per_source.clear(&attempt.source);
        self.per_account.forgive(&attempt.account);
        self.known.insert(attempt.source, now);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("no code panics while holding a throttle lock")
}

/// When a key's attempts wait: after `free` attempts, each next one `first_delay` after
/// the last, doubling per attempt up to `max_delay`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Attempts counted (failed, or in flight).
    count: u32,
    /// The last attempt or failure.
    last: Instant,
}

/// Attempts per key with growing delays; a key is forgotten `window` after it may try
/// again without having tried.
#[derive(Debug)]
struct Backoff {
    free: u32,
    window: Duration,
    first_delay: Duration,
    max_delay: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    fn new(free: u32, window: Duration, first_delay: Duration, max_delay: Duration) -> Self {
        Self {
            free: free.max(1),
            window,
            first_delay,
            max_delay,
            entries: Mutex::default(),
        }
    }

    /// The wait before the next attempt after `count` attempts.
    fn delay(&self, count: u32) -> Duration {
        let Some(over) = count.checked_sub(self.free) else {
            return Duration::ZERO;
        };
        let factor = 2_u32.saturating_pow(over.min(16));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Counts an attempt of `key` unless it must wait (`Err`, counting nothing); with
    /// `enforce` false the attempt is counted but never held back.
    fn charge(&self, key: &str, now: Instant, enforce: bool) -> Result<(), Duration> {
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_KEYS {
            let forget_after = self.max_delay + self.window;
            entries.retain(|_, entry| now < entry.last + forget_after);
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            count: 0,
            last: now,
        });
        if now >= entry.last + self.delay(entry.count) + self.window {
            entry.count = 0;
        }
        let ready_at = entry.last + self.delay(entry.count);
        if enforce && now < ready_at {
            let wait = ready_at - now;
            if entry.count == 0 {
                entries.remove(key);
            }
            return Err(wait);
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Ok(())
    }

    /// The attempt of `key` failed at `now`: the next delay runs from here.
    fn failed_at(&self, key: &str, now: Instant) {
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.last = entry.last.max(now);
        }
    }

    /// Gives back one attempt of `key` that did not fail.
    fn forgive(&self, key: &str) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                entries.remove(key);
            }
        }
    }

    /// Forgets `key`.
    fn clear(&self, key: &str) {
        lock(&self.entries).remove(key);
    }
}

/// Failures per address in a fixed window; refused until the window ends once used up.
#[derive(Debug)]
struct AddressLimit {
    max_failures: u32,
    window: Duration,
    /// Failures and the start of their window.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl AddressLimit {
    fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    /// `Err(wait)` while `ip` has used up its failures.
    fn check(&self, ip: &str, now: Instant) -> Result<(), Duration> {
        match lock(&self.failures).get(ip) {
            Some(&(count, since)) if count >= self.max_failures && now < since + self.window => {
                Err(since + self.window - now)
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, ip: &str, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_KEYS {
            let window = self.window;
            failures.retain(|_, (_, since)| now < *since + window);
        }
        let entry = failures.entry(ip.to_owned()).or_insert((0, now));
        if now >= entry.1 + self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// At most a number of requests per key in each window, counted as they are made: how
/// often one account may have links mailed (password reset, verification).
#[derive(Debug)]
pub struct RequestLimit(AddressLimit);

impl RequestLimit {
    /// `max` requests per key per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self(AddressLimit::new(max, window))
    }

    /// Counts one request under `key`, or says how long to wait (counting nothing).
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.0.check(key, now)?;
        self.0.failed(key, now);
        Ok(())
    }
}

/// (account, address) pairs that logged in, and when last.
#[derive(Debug, Default)]
struct KnownAddresses(Mutex<HashMap<String, Instant>>);

impl KnownAddresses {
    fn contains(&self, source: &str, now: Instant) -> bool {
        lock(&self.0)
            .get(source)
            .is_some_and(|at| now < *at + KNOWN_FOR)
    }

    fn insert(&self, source: String, now: Instant) {
        let mut known = lock(&self.0);
        if known.len() >= MAX_KEYS {
            known.retain(|_, at| now < *at + KNOWN_FOR);
        }
        if known.len() >= MAX_KEYS {
            // Still full of recent pairs: the oldest half goes.
            let mut times: Vec<Instant> = known.values().copied().collect();
            let (_, median, _) = times.select_nth_unstable(MAX_KEYS / 2);
            let median = *median;
            known.retain(|_, at| *at > median);
        }
        known.insert(source, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_source: 3,
            per_account: 10,
            per_ip: 50,
            window: 15 * MINUTE,
        })
    }

    fn fail(throttle: &LoginThrottle, account: &str, ip: &str, now: Instant) {
        let attempt = throttle.attempt(account, ip, now).expect("let through");
        throttle.failed(attempt, now);
    }

    #[test]
    fn one_address_guessing_at_one_account_waits_longer_each_time() {
        let throttle = throttle();
        let start = Instant::now();
        for _ in 0..3 {
            fail(&throttle, "account:ada", "192.0.2.1", start);
        }
        let wait = throttle
            .attempt("account:ada", "192.0.2.1", start)
            .unwrap_err();
        assert_eq!(wait, MINUTE);
        let mut now = start + MINUTE;
        fail(&throttle, "account:ada", "192.0.2.1", now);
        let wait = throttle
            .attempt("account:ada", "192.0.2.1", now)
            .unwrap_err();
        assert_eq!(wait, 2 * MINUTE, "the delay doubles");
        for _ in 0..10 {
            now += throttle
                .attempt("account:ada", "192.0.2.1", now)
                .unwrap_err();
            fail(&throttle, "account:ada", "192.0.2.1", now);
        }
        assert_eq!(
            throttle
                .attempt("account:ada", "192.0.2.1", now)
                .unwrap_err(),
            15 * MINUTE,
            "up to the cap"
        );
    }

    #[test]
    fn failures_from_many_addresses_do_not_lock_out_the_owner() {
        let throttle = throttle();
        let start = Instant::now();
        let home = throttle
            .attempt("account:ada", "198.51.100.7", start)
            .unwrap();
        throttle.succeeded(home, start);
        for i in 0..40 {
            let now = start + Duration::from_secs(i);
            let ip = format!("203.0.113.{i}");
            if let Ok(attempt) = throttle.attempt("account:ada", &ip, now) {
                throttle.failed(attempt, now);
            }
        }
        let now = start + Duration::from_secs(40);
        // The owner's usual address goes ahead at once.
        let home = throttle.attempt("account:ada", "198.51.100.7", now);
        assert!(home.is_ok(), "{home:?}");
        // A new address waits a minute at most, never the whole window.
        let wait = throttle
            .attempt("account:ada", "192.0.2.99", now)
            .unwrap_err();
        assert!(wait <= MINUTE, "{wait:?}");
        // Other accounts are not affected.
        assert!(throttle.attempt("account:bob", "192.0.2.99", now).is_ok());
    }

    #[test]
    fn parallel_guesses_count_before_they_fail() {
        let throttle = throttle();
        let now = Instant::now();
        let let_through = (0..20)
            .filter_map(|_| throttle.attempt("account:ada", "192.0.2.1", now).ok())
            .count();
        assert_eq!(let_through, 3);
    }

    #[test]
    fn success_starts_the_address_afresh_but_only_gives_back_its_own_account_charge() {
        let throttle = throttle();
        let now = Instant::now();
        for _ in 0..2 {
            fail(&throttle, "account:ada", "192.0.2.1", now);
        }
        let right = throttle.attempt("account:ada", "192.0.2.1", now).unwrap();
        throttle.succeeded(right, now);
        for _ in 0..3 {
            fail(&throttle, "account:ada", "192.0.2.1", now);
        }
        assert!(throttle.attempt("account:ada", "192.0.2.1", now).is_err());
        assert_eq!(
            lock(&throttle.per_account.entries)["account:ada"].count,
            5,
            "the account still counts every failure"
        );
    }

    #[test]
    fn an_address_failing_at_many_accounts_is_refused_until_the_window_ends() {
        let throttle = LoginThrottle::new(Limits {
            per_ip: 2,
            ..throttle_limits()
        });
        let now = Instant::now();
        // Logins in flight at one address are not failures.
        let in_flight: Vec<Attempt> = (0..100)
            .map(|i| {
                throttle
                    .attempt(&format!("account:{i}"), "192.0.2.1", now)
                    .unwrap()
            })
            .collect();
        let mut in_flight = in_flight.into_iter();
        for attempt in in_flight.by_ref().take(2) {
            throttle.failed(attempt, now);
        }
        for attempt in in_flight {
            throttle.succeeded(attempt, now);
        }
        let wait = throttle.attempt("account:x", "192.0.2.1", now).unwrap_err();
        assert_eq!(wait, 15 * MINUTE);
        assert!(
            throttle
                .attempt("account:x", "192.0.2.1", now + 15 * MINUTE)
                .is_ok()
        );
    }

    fn throttle_limits() -> Limits {
        Limits {
            per_source: 3,
            per_account: 10,
            per_ip: 50,
            window: 15 * MINUTE,
        }
    }

    #[test]
    fn counts_are_forgotten_after_a_quiet_window() {
        let throttle = throttle();
        let start = Instant::now();
        for _ in 0..3 {
            fail(&throttle, "account:ada", "192.0.2.1", start);
        }
        assert!(throttle.attempt("account:ada", "192.0.2.1", start).is_err());
        assert!(
            throttle
                .attempt("account:ada", "192.0.2.1", start + 16 * MINUTE)
                .is_ok(),
            "forgotten a window after the wait ended"
        );
    }
}
