//! Service tokens on the serving side: a tower layer in front of every gRPC server that
//! lets a call through only with a valid token from a service this server trusts, for a
//! method the [`policy`](super::policy) grants that service. The verified caller goes
//! into the request's extensions as [`Caller`].
//!
//! Each distinct token is verified once and then found in a small cache until it
//! expires: a caller renews its token once a minute, so the hot path costs a hash lookup.

use super::{
    Service,
    policy::Policy,
    token::{LIFETIME_SECONDS, ServiceClaims, now},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tonic::Status;

/// Clock difference between services tolerated on `iat` and `exp`.
const LEEWAY_SECONDS: i64 = 30;
/// Longest accepted token, in bytes: real ones are about 250.
const MAX_TOKEN_LEN: usize = 1024;
/// Distinct tokens remembered: a few per calling service.
const CACHE_CAPACITY: usize = 256;

/// The service that made a call, as its token proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller(pub Service);

/// The tower layer that checks callers (see the module documentation).
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Checks>,
}

struct Checks {
    policy: &'static Policy,
    trusted: Arc<HashMap<Service, DecodingKey>>,
    validation: Validation,
    verified: quick_cache::sync::Cache<String, (Service, i64)>,
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No token, or one this server cannot verify: an unknown caller.
    Unauthenticated(&'static str),
    /// A known service calling a method not granted to it.
    NotGranted(Service),
}

impl Guard {
    /// The guard of `service`'s gRPC server, trusting the public keys in `keys`.
    pub fn new(service: Service, keys: &super::ServiceKeys) -> Self {
        let policy = super::policy::of(service)
            .unwrap_or_else(|| panic!("{service} serves no gRPC service to guard"));
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[service.name()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "iat"]);
        validation.leeway = LEEWAY_SECONDS as u64;
        Self {
            inner: Arc::new(Checks {
                policy,
                trusted: keys.trusted(),
                validation,
                verified: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            }),
        }
    }
}

impl Checks {
    /// Who may make the call to `path` with these headers; `None` for the operators'
    /// health and reflection services, open to all.
    fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Service>, Refusal> {
        if is_open(path) {
            return Ok(None);
        }
        let token = crate::credentials::bearer(headers)
            .ok_or(Refusal::Unauthenticated("a service token is required"))?;
        let caller = self.verify(token, now())?;
        let method = path
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .filter(|(service, _)| *service == self.policy.service)
            .map(|(_, method)| method);
        match method {
            Some(method) if self.policy.allows(caller, method) => Ok(Some(caller)),
            _ => Err(Refusal::NotGranted(caller)),
        }
    }

    fn verify(&self, token: &str, now: i64) -> Result<Service, Refusal> {
        const INVALID: Refusal = Refusal::Unauthenticated("the service token is invalid");
        if let Some((caller, exp)) = self.verified.get(token) {
            return if exp > now - LEEWAY_SECONDS {
                Ok(caller)
            } else {
                Err(Refusal::Unauthenticated("the service token has expired"))
            };
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(INVALID);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID)?;
        let caller: Service = header
            .kid
            .as_deref()
            .and_then(|kid| kid.parse().ok())
            .ok_or(INVALID)?;
        let key = self.trusted.get(&caller).ok_or(INVALID)?;
        let mut validation = self.validation.clone();
        validation.set_issuer(&[caller.name()]);
        let claims = jsonwebtoken::decode::<ServiceClaims>(token, key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Refusal::Unauthenticated("the service token has expired")
                }
                _ => INVALID,
            })?
            .claims;
        // Short-lived means short-lived: a token minted for longer (by a stolen key, or a
        // clock far off) is refused, as is one from the future.
        if claims.exp - claims.iat > LIFETIME_SECONDS || claims.iat > now + LEEWAY_SECONDS {
            return Err(INVALID);
        }
        self.verified.insert(token.to_owned(), (caller, claims.exp));
        Ok(caller)
    }
}

/// The standard services operators reach without a token: health and reflection.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            checks: Arc::clone(&self.inner),
        }
    }
}

/// The service made by [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    checks: Arc<Checks>,
}

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self.checks.check(path, request.headers()) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(Caller(caller));
                }
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let status = match refusal {
                    Refusal::Unauthenticated(why) => {
                        tracing::warn!(method = path, "refused a call: {why}");
                        Status::unauthenticated(why)
                    }
                    Refusal::NotGranted(caller) => {
                        tracing::warn!(method = path, %caller, "refused a call outside its grant");
                        Status::permission_denied(format!("{caller} may not call {path}"))
                    }
                };
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_auth::ServiceKeys;

    fn key_set() -> (ServiceKeys, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("service-guard-{}", uuid::Uuid::new_v4()));
        ServiceKeys::generate_missing(&dir).expect("generated");
        (ServiceKeys::load(&dir, &Service::ALL).expect("loads"), dir)
    }

    fn headers(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("ASCII"),
        );
        headers
    }

    const SEND: &str = "/microchat.chat.v1.Chat/SendMessage";

    #[test]
    fn a_call_without_a_token_is_unauthenticated_but_health_is_open() {
        let (keys, dir) = key_set();
        let guard = Guard::new(Service::Chat, &keys);
        assert!(matches!(
            guard.inner.check(SEND, &http::HeaderMap::new()),
            Err(Refusal::Unauthenticated(_))
        ));
        assert_eq!(
            guard
                .inner
                .check("/grpc.health.v1.Health/Check", &http::HeaderMap::new()),
            Ok(None)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_broker_may_send_and_the_listener_may_not() {
        let (keys, dir) = key_set();
        let guard = Guard::new(Service::Chat, &keys);
        let now = now();
        let broker = keys.identity(Service::Broker).expect("broker key");
        let listener = keys.identity(Service::Listener).expect("listener key");
        let as_broker = headers(&broker.token(Service::Chat, now));
        assert_eq!(
            guard.inner.check(SEND, &as_broker),
            Ok(Some(Service::Broker))
        );
        // Cached the second time, same answer.
        assert_eq!(
            guard.inner.check(SEND, &as_broker),
            Ok(Some(Service::Broker))
        );
        let as_listener = headers(&listener.token(Service::Chat, now));
        assert_eq!(
            guard.inner.check(SEND, &as_listener),
            Err(Refusal::NotGranted(Service::Listener))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tokens_for_another_service_expired_or_from_an_unknown_key_are_refused() {
        let (keys, dir) = key_set();
        let guard = Guard::new(Service::Chat, &keys);
        let broker = keys.identity(Service::Broker).expect("broker key");
        let now = now();
        let for_auth = headers(&broker.token(Service::Auth, now));
        assert!(matches!(
            guard.inner.check(SEND, &for_auth),
            Err(Refusal::Unauthenticated(_))
        ));
        let expired = headers(&broker.token(Service::Chat, now - LIFETIME_SECONDS - 120));
        assert!(matches!(
            guard.inner.check(SEND, &expired),
            Err(Refusal::Unauthenticated(_))
        ));
        // A key set of another installation: same names, other keys.
        let (strangers, other_dir) = key_set();
        let stranger = strangers.identity(Service::Broker).expect("broker key");
        let forged = headers(&stranger.token(Service::Chat, now));
        assert!(matches!(
            guard.inner.check(SEND, &forged),
            Err(Refusal::Unauthenticated(_))
        ));
        let garbage = headers("not.a.token");
        assert!(matches!(
            guard.inner.check(SEND, &garbage),
            Err(Refusal::Unauthenticated(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other_dir);
    }

    #[test]
    fn a_method_of_another_service_is_not_granted() {
        let (keys, dir) = key_set();
        let guard = Guard::new(Service::Chat, &keys);
        let broker = keys.identity(Service::Broker).expect("broker key");
        let token = headers(&broker.token(Service::Chat, now()));
        assert_eq!(
            guard
                .inner
                .check("/microchat.auth.v1.Auth/Register", &token),
            Err(Refusal::NotGranted(Service::Broker))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
