//! Service tokens on the calling side: a JWT (EdDSA) whose `iss` and key id name the
//! calling service and whose `aud` names the one service it is for, valid for
//! [`LIFETIME`]. [`Credentials`] keep one per callee and mint the next well before it
//! expires, so a call pays for a lock and a clone, not for a signature.

use super::Service;
use crate::token::Signer;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

/// How long a service token is valid. Receivers refuse longer-lived ones.
pub const LIFETIME_SECONDS: i64 = 300;
/// A caller mints a new token once its current one is this old.
const RENEW_AFTER_SECONDS: i64 = 60;

/// What a service token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceClaims {
    /// The calling service.
    pub iss: String,
    /// The called service.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

/// A service's signing key.
pub struct Identity {
    service: Service,
    signer: Signer,
}

impl Identity {
    /// The identity of `service` with its signer (the key id is the service's name).
    pub(crate) fn new(service: Service, signer: Signer) -> Self {
        Self { service, signer }
    }

    /// The service this identity is.
    pub fn service(&self) -> Service {
        self.service
    }

    /// A token for calling `audience`, issued at `now` (epoch seconds).
    pub fn token(&self, audience: Service, now: i64) -> String {
        self.signer.sign(&ServiceClaims {
            iss: self.service.name().to_owned(),
            aud: audience.name().to_owned(),
            iat: now,
            exp: now + LIFETIME_SECONDS,
        })
    }

    /// Credentials for this service's calls to `audience`.
    pub fn calling(self: &Arc<Self>, audience: Service) -> Credentials {
        Credentials {
            identity: Arc::clone(self),
            audience,
            current: Arc::new(RwLock::new(None)),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// What one service presents when calling one other: an `authorization` value carrying
/// a current token, shared by every clone (every channel to the same callee).
#[derive(Clone, Debug)]
pub struct Credentials {
    identity: Arc<Identity>,
    audience: Service,
    current: Arc<RwLock<Option<(i64, AsciiMetadataValue)>>>,
}

impl Credentials {
    /// The calling service.
    pub fn caller(&self) -> Service {
        self.identity.service()
    }

    /// The `authorization` metadata value for a call now.
    pub fn authorization(&self) -> AsciiMetadataValue {
        let now = now();
        if let Some((issued, value)) = &*self.current.read().expect("no panic under this lock")
            && now - issued < RENEW_AFTER_SECONDS
        {
            return value.clone();
        }
        let token = self.identity.token(self.audience, now);
        let value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .expect("a JWT is ASCII without control characters");
        *self.current.write().expect("no panic under this lock") = Some((now, value.clone()));
        value
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
