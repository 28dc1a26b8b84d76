//! Who is calling: access tokens are verified here, in memory, at full request rate.
//!
//! The broker holds auth's public keys and the set of revoked sessions, which auth streams
//! to it (`WatchRevocations`: a snapshot, then each revocation as it happens). So a token
//! costs one signature check the first time it is seen and a hash lookup afterwards, and
//! a logout still takes effect at once: this broker records its own logouts immediately,
//! and other brokers hear of them through the stream.
//!
//! While the stream is down this broker may miss revocations, so it asks auth about each
//! request instead. If auth cannot be reached either, tokens that verify locally are
//! accepted: they are short-lived, and docs/ARCHITECTURE.md ("Resilience rules") wants logged-in users to keep chatting
//! while auth is down.

use crate::error::ApiError;
use backon::{BackoffBuilder, ExponentialBuilder};
use platform::{
    grpc::TracedChannel,
    revocation::RevocationList,
    shutdown::Shutdown,
    token::{Claims, TokenError, TokenVerifier},
};
use proto::auth::v1::{
    GetPublicKeysRequest, VerifyTokenRequest, WatchRevocationsRequest, auth_client::AuthClient,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};
use tokio::sync::broadcast;
use uuid::Uuid;

/// How often unknown key ids may trigger a key refresh.
const KEY_REFRESH_INTERVAL_SECS: i64 = 5;
/// Deadline of the per-request check while the revocation stream is down.
const FALLBACK_DEADLINE: Duration = Duration::from_millis(500);

/// Verified callers, revoked sessions, and the link to auth that keeps them current.
pub struct Sessions {
    auth: AuthClient<TracedChannel>,
    verifier: TokenVerifier,
    revoked: RevocationList,
    stream_up: AtomicBool,
    last_key_refresh: AtomicI64,
    ended: broadcast::Sender<Uuid>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Sessions {
    /// Sessions checked against the auth service behind `auth`.
    pub fn new(auth: AuthClient<TracedChannel>) -> Self {
        Self {
            auth,
            verifier: TokenVerifier::new(100_000),
            revoked: RevocationList::default(),
            stream_up: AtomicBool::new(false),
            last_key_refresh: AtomicI64::new(i64::MIN),
            ended: broadcast::channel(1024).0,
        }
    }

    /// True once auth's public keys are known.
    pub fn has_keys(&self) -> bool {
        self.verifier.has_keys()
    }

    /// True while revocations stream in from auth.
    pub fn is_following_revocations(&self) -> bool {
        self.stream_up.load(Ordering::Relaxed)
    }

    /// Announces each session that ends, for closing its open sockets.
    pub fn ended_sessions(&self) -> broadcast::Receiver<Uuid> {
        self.ended.subscribe()
    }

    /// True when the session is known to have ended.
    pub fn is_revoked(&self, session: Uuid) -> bool {
        self.revoked.is_revoked(session)
    }

    /// Records a session this broker has just ended (its own logout).
    pub fn record_revoked(&self, session: Uuid, forget_after: i64) {
        self.revoked.revoke(session, forget_after);
        let _ = self.ended.send(session);
    }

    /// Verifies an access token and its session.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        if !self.verifier.has_keys() {
            self.refresh_keys().await?;
        }
        let claims = match self.verifier.verify(token, now()) {
            Err(TokenError::UnknownKey) => {
                // Auth may have rotated its key since we last asked.
                self.refresh_keys().await?;
                self.verifier.verify(token, now())
            }
            other => other,
        }
        .map_err(refusal)?;
        if self.revoked.is_revoked(claims.sid) {
            return Err(refusal(TokenError::Revoked));
        }
        if !self.is_following_revocations() {
            self.ask_auth(token, &claims).await?;
        }
        Ok(claims)
    }

    async fn ask_auth(&self, token: &str, claims: &Claims) -> Result<(), ApiError> {
        let mut request = tonic::Request::new(VerifyTokenRequest {
            access_token: token.to_owned(),
        });
        request.set_timeout(FALLBACK_DEADLINE);
        match self.auth.clone().verify_token(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                self.record_revoked(claims.sid, claims.exp + 1);
                Err(refusal(TokenError::Revoked))
            }
            Err(status) => {
                tracing::debug!(%status, "auth unreachable; accepting a locally verified token");
                Ok(())
            }
        }
    }

    async fn refresh_keys(&self) -> Result<(), ApiError> {
        let last = self.last_key_refresh.load(Ordering::Relaxed);
        let due = now().saturating_sub(last) >= KEY_REFRESH_INTERVAL_SECS;
        if !due && self.verifier.has_keys() {
            return Ok(());
        }
        self.last_key_refresh.store(now(), Ordering::Relaxed);
        self.load_keys().await.map_err(|status| {
            tracing::warn!(%status, "cannot fetch auth's public keys");
            ApiError::unavailable("auth")
        })
    }

    async fn load_keys(&self) -> Result<(), tonic::Status> {
        let keys = self
            .auth
            .clone()
            .get_public_keys(GetPublicKeysRequest {})
            .await?
            .into_inner()
            .keys;
        let pairs = keys
            .iter()
            .filter(|key| key.alg == "EdDSA")
            .map(|key| (key.kid.as_str(), key.x.as_str()));
        self.verifier
            .set_keys(pairs)
            .map_err(|_| tonic::Status::internal("auth published a malformed public key"))
    }

    /// Follows auth's revocation stream until shutdown, reconnecting with backoff.
    pub async fn follow_revocations(self: Arc<Self>, shutdown: Shutdown) {
        let backoff = crate::reconnect_backoff();
        let mut delays = backoff.build();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.watch_once(&mut delays, &backoff) => {
                    if let Err(status) = result {
                        tracing::warn!(%status, "revocation stream from auth lost; checking each request with auth");
                    }
                }
            }
            self.stream_up.store(false, Ordering::Relaxed);
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            if !platform::shutdown::pause(&shutdown, delay).await {
                return;
            }
        }
    }

    async fn watch_once(
        &self,
        delays: &mut backon::ExponentialBackoff,
        backoff: &ExponentialBuilder,
    ) -> Result<(), tonic::Status> {
        self.load_keys().await?;
        let mut request = tonic::Request::new(WatchRevocationsRequest {});
        // A stream lives as long as auth does, not one request deadline.
        request.set_timeout(platform::grpc::STREAM_DEADLINE);
        let mut stream = self
            .auth
            .clone()
            .watch_revocations(request)
            .await?
            .into_inner();
        let mut pruned_at = now();
        while let Some(batch) = stream.message().await? {
            let entries = batch.sessions.iter().filter_map(|entry| {
                let id = Uuid::try_parse(&entry.session_id).ok()?;
                Some((
                    id,
                    entry
                        .forget_after
                        .as_ref()
                        .map_or(i64::MAX, |at| at.seconds),
                ))
            });
            if batch.snapshot {
                let entries: Vec<_> = entries.collect();
                for (id, _) in &entries {
                    let _ = self.ended.send(*id);
                }
                self.revoked.replace(entries);
                if !self.stream_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(revoked = self.revoked.len(), "following auth's revocations");
                }
                *delays = backoff.build();
            } else {
                for (id, forget_after) in entries {
                    self.record_revoked(id, forget_after);
                }
            }
            if now() - pruned_at >= 60 {
                pruned_at = now();
                self.revoked.prune(pruned_at);
            }
        }
        Err(tonic::Status::unavailable(
            "auth closed the revocation stream",
        ))
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` calls it with"
)]
fn refusal(error: TokenError) -> ApiError {
    let message = match error {
        TokenError::Expired => "the token has expired; refresh it or log in again",
        TokenError::Revoked => "the session has ended; log in again",
        _ => "the token is not valid",
    };
    ApiError::unauthorized(message)
}
