//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane), always on
//! the blocking pool so a login never stalls the async runtime.

use crate::domain::Password;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string.
pub async fn hash(password: Password) -> String {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
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
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .expect("password verification does not panic")
}

/// A hash of a random password, checked against when a login names no account, so that
/// unknown users take as long to refuse as wrong passwords.
pub async fn decoy() -> String {
    let random = uuid::Uuid::new_v4().to_string();
    hash(Password::parse(&random).expect("a UUID is a valid password")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let password = Password::parse("correct horse").unwrap();
        let hashed = hash(password).await;
        assert!(hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), hashed.clone()).await);
        assert!(!verify("wrong horse".into(), hashed).await);
        assert!(!verify("anything".into(), "not a hash".into()).await);
    }
}
