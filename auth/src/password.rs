//! Password hashing with argon2id, always on the blocking pool so a login never stalls the
//! async runtime, and never more hashes at once than the machine has cores. The default
//! cost is OWASP's (19 MiB, 2 passes, 1 lane); operators may raise it, and load tests lower
//! it. Verification reads the cost from each stored hash, so changing it never locks anyone
//! out.
//!
//! Why the bound: each hash holds its memory cost for as long as it runs, and the blocking
//! pool runs up to 512 at once. A burst of sign-ins (every client of a deploy logging in
//! again) then asked for 19 MiB times the burst (300 at once: 5.6 GiB) and hundreds of
//! threads each wanting a core, starving the runtime's own threads: every socket of the
//! process waited behind the hashes. With one hash per core the memory is bounded, the
//! others wait their turn in order, and the same work finishes no later.

use crate::domain::Password;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

/// OWASP's recommended memory cost, in KiB.
pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
/// OWASP's recommended number of passes.
pub const DEFAULT_ITERATIONS: u32 = 2;

/// The cost of new hashes.
#[derive(Debug, Clone)]
pub struct Cost(Params);

impl Cost {
    /// A cost of `memory_kib` KiB and `iterations` passes, one lane.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, argon2::Error> {
        Params::new(memory_kib, iterations, 1, None).map(Self)
    }
}

impl Default for Cost {
    fn default() -> Self {
        Self::new(DEFAULT_MEMORY_KIB, DEFAULT_ITERATIONS).expect("the default argon2 cost is valid")
    }
}

fn argon2(cost: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, cost)
}

/// The cores this process may run on: how many hashes run at once.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Hashes (and verifications) running at once: one per core.
fn turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| tokio::sync::Semaphore::new(cores()))
}

/// Runs `work` on the blocking pool once a core is free for it.
async fn on_a_core<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let _turn = turns()
        .acquire()
        .await
        .expect("the hashing semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .expect("password hashing does not panic")
}

/// Hashes a password into a PHC string.
pub async fn hash(password: Password, cost: &Cost) -> String {
    let params = cost.0.clone();
    on_a_core(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2(params)
            .hash_password(password.expose().as_bytes(), &salt)
            .expect("argon2 accepts any password of at most 512 bytes")
            .to_string()
    })
    .await
}

/// True when `password` matches the PHC string `hash`. A malformed hash never matches.
pub async fn verify(password: String, hash: String) -> bool {
    on_a_core(move || {
        // The stored hash names its own cost; these parameters are not used for it.
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2(Params::default())
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
}

/// A hash of a random password, checked against when a login names no account, so that
/// unknown users take as long to refuse as wrong passwords.
pub async fn decoy(cost: &Cost) -> String {
    let random = uuid::Uuid::new_v4().to_string();
    hash(
        Password::parse(&random).expect("a UUID is a valid password"),
        cost,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let password = Password::parse("correct horse").unwrap();
        let hashed = hash(password, &Cost::default()).await;
        assert!(hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), hashed.clone()).await);
        assert!(!verify("wrong horse".into(), hashed).await);
        assert!(!verify("anything".into(), "not a hash".into()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_hashes_runs_one_per_core_and_every_one_finishes() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let cores = cores();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let burst: Vec<_> = (0..cores * 8)
            .map(|n| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                tokio::spawn(on_a_core(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    n
                }))
            })
            .collect();
        let mut finished = Vec::new();
        for work in burst {
            finished.push(work.await.expect("the work finishes"));
        }
        assert_eq!(finished, (0..cores * 8).collect::<Vec<_>>());
        // Other tests of this process hash too, on the same turns: at most `cores` in all.
        assert!(
            most.load(Ordering::SeqCst) <= cores,
            "{most:?} at once on {cores} cores"
        );
    }

    #[tokio::test]
    async fn the_configured_cost_reaches_new_hashes_and_old_hashes_still_verify() {
        let cheap = Cost::new(8 * 1024, 1).unwrap();
        let old = hash(Password::parse("correct horse").unwrap(), &cheap).await;
        assert!(old.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{old}");
        // The operator raises the cost: new hashes use it, the old one still verifies
        // (its cost is written in it).
        let raised = Cost::new(32 * 1024, 3).unwrap();
        let new = hash(Password::parse("correct horse").unwrap(), &raised).await;
        assert!(new.starts_with("$argon2id$v=19$m=32768,t=3,p=1$"), "{new}");
        assert!(verify("correct horse".into(), old).await);
        assert!(verify("correct horse".into(), new).await);
        // A cost argon2 refuses is an error (auth refuses to start on it), never a panic.
        assert!(Cost::new(4, 1).is_err(), "under 8 KiB per lane");
        assert!(Cost::new(8 * 1024, 0).is_err(), "no pass at all");
    }
}
