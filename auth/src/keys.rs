//! The Ed25519 key that signs access tokens. Only auth holds it; everyone else gets the
//! public half from `GetPublicKeys`, so no shared secret exists anywhere.
//!
//! The key comes from `AUTH_SIGNING_KEY` (a PKCS#8 PEM). Without it, auth loads the key
//! file in the data directory, creating one on first start (the embedded run).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use platform::token::{Claims, Signer};
use ring::{
    digest, hmac,
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use std::{io::Write, path::Path};
use uuid::Uuid;

/// Why a signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM, or not an Ed25519 PKCS#8 v2 key.
    #[error("the signing key is not an Ed25519 PKCS#8 PEM (as `auth --new-signing-key` prints)")]
    Format,
    /// The key file could not be read or written.
    #[error("signing key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Auth's token signing key, with its public half and the session CSRF key derived from it.
pub struct SigningKey {
    kid: String,
    signer: Signer,
    public_x: String,
    csrf: hmac::Key,
}

impl SigningKey {
    /// A fresh key as PKCS#8 PEM.
    pub fn generate_pem() -> String {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("the system random generator is available");
        pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref().to_vec()))
    }

    /// Reads a PKCS#8 PEM key.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let block = pem::parse(text.trim()).map_err(|_| KeyError::Format)?;
        if block.tag() != "PRIVATE KEY" {
            return Err(KeyError::Format);
        }
        let der = block.contents();
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::Format)?;
        let public_x = URL_SAFE_NO_PAD.encode(pair.public_key());
        let fingerprint = digest::digest(&digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&fingerprint.as_ref()[..9]);
        let csrf_seed = digest::digest(
            &digest::SHA256,
            &[b"microchat csrf v1".as_slice(), der].concat(),
        );
        Ok(Self {
            signer: Signer::new(pair, &kid),
            kid,
            public_x,
            csrf: hmac::Key::new(hmac::HMAC_SHA256, csrf_seed.as_ref()),
        })
    }

    /// Loads the key file at `path`, creating it (mode 0600) with a fresh key if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let file_error = |source| KeyError::File {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_pem(&text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(file_error)?;
                }
                let text = Self::generate_pem();
                write_private(path, &text).map_err(file_error)?;
                tracing::info!(path = %path.display(), "created a new token signing key");
                Self::from_pem(&text)
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// The key id, put in every token's `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url (JWK `x`).
    pub fn public_x(&self) -> &str {
        &self.public_x
    }

    /// Signs claims into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> String {
        self.signer.sign(claims)
    }

    /// The CSRF token of a session: stable across refreshes, unguessable without the key.
    pub fn csrf_token(&self, session: Uuid) -> String {
        let tag = hmac::sign(&self.csrf, session.as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::token::{AUDIENCE, ISSUER, TokenError, TokenVerifier};

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            name: "ada".into(),
            email: "ada@example.com".into(),
            iat: 0,
            exp,
            csrf: "x".into(),
            role: platform::role::Role::Member,
        }
    }

    #[test]
    fn tokens_verify_with_the_public_key_only() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let verifier = TokenVerifier::new(16);
        verifier.set_keys([(key.kid(), key.public_x())]).unwrap();
        let token = key.sign(&claims(2_000_000_000));
        assert_eq!(verifier.verify(&token, 1_000_000_000).unwrap().name, "ada");
        // The cached answer still honours expiry.
        assert_eq!(
            verifier.verify(&token, 2_000_000_001),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_key_is_not_trusted() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let other = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let verifier = TokenVerifier::new(16);
        verifier.set_keys([(key.kid(), other.public_x())]).unwrap();
        assert_eq!(
            verifier.verify(&key.sign(&claims(2_000_000_000)), 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn csrf_tokens_are_per_session_and_stable() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(key.csrf_token(a), key.csrf_token(a));
        assert_ne!(key.csrf_token(a), key.csrf_token(b));
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("mc-keys-{}", Uuid::new_v4()));
        let path = dir.join("signing-key.pem");
        let first = SigningKey::load_or_create(&path).unwrap();
        let second = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.kid(), second.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            SigningKey::from_pem("not a key"),
            Err(KeyError::Format)
        ));
    }
}
