//! Access tokens: EdDSA-signed JWTs issued by auth and verified by anyone holding its
//! public keys. Verification pins the algorithm, issuer and audience, and caches each
//! verified token until it expires, so a hot path pays for one signature check per token
//! rather than per request. Revocation is checked separately (see [`crate::revocation`]),
//! which is what keeps it immediate despite the cache.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};
use uuid::Uuid;

/// The `iss` of every access token.
pub const ISSUER: &str = "microchat-auth";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "microchat";
/// The only accepted signature algorithm.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;
/// Longest accepted token, in bytes: real ones are about 500.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What an access token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Audience, always [`AUDIENCE`].
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The session id; revoking it invalidates the token.
    pub sid: Uuid,
    /// The username.
    pub name: String,
    /// The user's email address.
    pub email: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// The session's CSRF token, echoed by cookie-authenticated writes.
    pub csrf: String,
    /// The user's role when the token was issued (a lost role ends the session).
    #[serde(default)]
    pub role: crate::role::Role,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT at all, or too long.
    #[error("the token is malformed")]
    Malformed,
    /// Signed with a key id this verifier does not know (yet).
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// Bad signature, wrong algorithm, issuer or audience.
    #[error("the token is invalid")]
    Invalid,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Its session was revoked (logout, account deletion).
    #[error("the session has ended")]
    Revoked,
}

/// The cache's key for a token: its SHA-256 digest. Collision resistance makes the
/// digest as good as the token for looking it up, and a broker holding tens of thousands
/// of sockets keeps 32 bytes per token instead of about 500.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

/// Verifies access tokens against auth's public keys, with a bounded cache.
pub struct TokenVerifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
    cache: quick_cache::sync::Cache<TokenDigest, Arc<Claims>>,
}

impl TokenVerifier {
    /// A verifier with no keys yet, caching up to `cache_capacity` verified tokens.
    pub fn new(cache_capacity: usize) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Self {
            keys: RwLock::default(),
            validation,
            cache: quick_cache::sync::Cache::new(cache_capacity.max(1)),
        }
    }

    /// Replaces the known keys with `(kid, base64url Ed25519 public key)` pairs. When a
    /// key is withdrawn (auth rotated it away, perhaps because it leaked), the tokens
    /// verified with it are forgotten too, so they stop working now, not at expiry.
    pub fn set_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), TokenError> {
        let mut decoded = HashMap::new();
        for (kid, x) in keys {
            let raw = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| TokenError::Malformed)?;
            if raw.len() != 32 {
                return Err(TokenError::Malformed);
            }
            decoded.insert(kid.to_owned(), DecodingKey::from_ed_der(&raw));
        }
        let mut keys = self
            .keys
            .write()
            .expect("no code panics while holding the key lock");
        let withdrawn = keys.keys().any(|kid| !decoded.contains_key(kid));
        *keys = decoded;
        drop(keys);
        if withdrawn {
            self.cache.clear();
        }
        Ok(())
    }

    /// True once at least one key is known.
    pub fn has_keys(&self) -> bool {
        !self
            .keys
            .read()
            .expect("no code panics while holding the key lock")
            .is_empty()
    }

    /// Checks signature, algorithm, issuer, audience and expiry; `now` in epoch seconds.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let key = digest(token);
        if let Some(claims) = self.cache.get(&key) {
            return if claims.exp > now {
                Ok(claims)
            } else {
                Err(TokenError::Expired)
            };
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let claims = {
            let keys = self
                .keys
                .read()
                .expect("no code panics while holding the key lock");
            let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .map_err(|error| match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                })?
                .claims
        };
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        let claims = Arc::new(claims);
        self.cache.insert(key, Arc::clone(&claims));
        // The key may have been withdrawn (and the cache cleared) since it checked this
        // token: then the token must not stay cached.
        let still_known = self
            .keys
            .read()
            .expect("no code panics while holding the key lock")
            .contains_key(&kid);
        if !still_known {
            self.cache.remove(&key);
            return Err(TokenError::UnknownKey);
        }
        Ok(claims)
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Signs JWTs (EdDSA) with one Ed25519 key, kept as parsed: auth's access tokens and
/// every service's service tokens.
///
/// `jsonwebtoken::encode` parses the PKCS#8 document and derives the public key from the
/// seed again for every token, as much work as the signature itself (2.3 % of the core
/// in a login storm, docs/PERFORMANCE.md). A `Signer` keeps the key pair and the encoded
/// header and puts the token together as `jsonwebtoken` does, byte for byte (a test
/// holds them to it); verification stays with `jsonwebtoken`, the algorithm pinned.
pub struct Signer {
    pair: Ed25519KeyPair,
    /// `{"typ":"JWT","alg":"EdDSA","kid":…}`, base64url: the same for every token.
    header: String,
}

impl Signer {
    /// A signer with the parsed key `pair`, putting `kid` in every token's header.
    pub fn new(pair: Ed25519KeyPair, kid: &str) -> Self {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(kid.to_owned());
        let header =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("a JWT header serializes"));
        Self { pair, header }
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// `claims` as a compact JWT (JWS compact serialization, RFC 7515 section 7.1): the
    /// header, the claims and the signature of the two, each base64url.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let claims = serde_json::to_vec(claims).expect("token claims always serialize");
        let mut token = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 90);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn signed_tokens_are_the_bytes_jsonwebtoken_makes_and_verify() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Signer::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(), "key-1");
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            name: "ada \"the first\" lovelace".into(),
            email: "ada@example.com".into(),
            iat: 1_000_000_000,
            exp: 2_000_000_000,
            csrf: "c".into(),
            role: crate::role::Role::Admin,
        };
        // Ed25519 signatures are deterministic: the whole token can be compared.
        let mut header = Header::new(ALGORITHM);
        header.kid = Some("key-1".into());
        let expected = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
        .unwrap();
        let token = signer.sign(&claims);
        assert_eq!(token, expected);

        let verifier = TokenVerifier::new(4);
        let public = URL_SAFE_NO_PAD.encode(signer.public_key());
        verifier.set_keys([("key-1", public.as_str())]).unwrap();
        assert_eq!(*verifier.verify(&token, 1_500_000_000).unwrap(), claims);
    }
}
