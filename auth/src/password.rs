//! Password hashing with argon2id, always on the blocking pool so a login never stalls the
//! async runtime. The default cost is OWASP's (19 MiB, 2 passes, 1 lane); operators may
//! raise it, and load tests lower it. Verification reads the cost from each stored hash, so
//! changing it never locks anyone out.

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

/// Hashes a password into a PHC string.
pub async fn hash(password: Password, cost: &Cost) -> String {
    let params = cost.0.clone();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2(params)
            .hash_password(password.expose().as_bytes(), &salt)
            .expect("argon2 accepts any password of at most 512 bytes")
            .to_string()
    })
    .await
    .expect("password hashing does not panic")
}

/// True when `password` matches the PHC string `hash`. A malformed hash never matches.
pub async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        // The stored hash names its own cost; these parameters are not used for it.
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2(Params::default())
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .expect("password verification does not panic")
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
