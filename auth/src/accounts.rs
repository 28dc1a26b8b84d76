//! What auth does, independent of how it is called: register, log in, refresh, log out,
//! verify. The gRPC edge (`grpc.rs`) only translates to and from these.

use crate::{
    domain::{Email, Invalid, Login, Password, Session, User, Username},
    keys::SigningKey,
    password,
    revocations::RevocationFeed,
    store::{NewAccount, NewSession, StoreError, Taken, UserStore},
    throttle::{self, LoginThrottle},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SubsecRound, Utc};
use platform::grpc::timestamp;
use platform::{
    batch::{self, GroupCommit},
    events::{Event, outbox::OutboxWaker},
    token::{AUDIENCE, Claims, ISSUER, TokenError, TokenVerifier},
};
use proto::events::v1::{self as events, envelope::Payload};
use ring::{digest, rand::SecureRandom};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

mod roles;

pub use roles::{Changed, end_sessions_after};

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A field from the client is not valid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The username or email is in use.
    #[error("{} is already taken", match .0 { Taken::Username => "username", Taken::Email => "email" })]
    Taken(Taken),
    /// Unknown login or wrong password: deliberately the same answer.
    #[error("wrong username or password")]
    BadCredentials,
    /// Too many failed logins; try again after the duration.
    #[error("too many failed logins, try again later")]
    Throttled(Duration),
    /// The access token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The refresh token is unknown, reused, or its session has ended.
    #[error("the session has ended; log in again")]
    SessionEnded,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The right password, but an administrator deactivated the account.
    #[error("this account has been deactivated; ask an administrator to reactivate it")]
    Deactivated,
    /// The caller may not do this (not an owner or admin).
    #[error("{0}")]
    Forbidden(&'static str),
    /// Not allowed in the account's current state (e.g. one's own account).
    #[error("{0}")]
    Refused(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A mailed link's token is wrong, used, expired or not for this purpose.
    #[error("token: the link is invalid, already used or expired; ask for a new one")]
    BadLink,
    /// The address is verified already.
    #[error("the email address is already verified")]
    AlreadyVerified,
}

/// Where a login or refresh came from.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The client's address, as the broker saw it.
    pub ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
}

/// Lifetimes and throttling limits.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a session without refresh.
    pub session_ttl: Duration,
    /// How long a replaced refresh token is only refused; after that, presenting it ends
    /// the session.
    pub refresh_reuse_grace: Duration,
    /// Failed-login limits (docs/SECURITY.md, "Login throttling").
    pub throttle: throttle::Limits,
    /// The argon2id cost of new password hashes.
    pub password_cost: password::Cost,
    /// How long a mailed password-reset link works.
    pub reset_link_ttl: Duration,
    /// How long a mailed email-verification link works.
    pub verify_link_ttl: Duration,
}

/// The result of a login or refresh.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The signed JWT.
    pub access_token: String,
    /// Its expiry.
    pub access_expires_at: DateTime<Utc>,
    /// Opaque; trade it for the next access token.
    pub refresh_token: String,
    /// Who logged in.
    pub user: User,
    /// The session.
    pub session: Session,
    /// The session's CSRF token.
    pub csrf_token: String,
}

/// Accounts, sessions and tokens.
pub struct Accounts {
    store: UserStore,
    keys: SigningKey,
    verifier: TokenVerifier,
    revocations: Arc<RevocationFeed>,
    throttle: LoginThrottle,
    decoy_hash: String,
    policy: Policy,
    outbox: OutboxWaker,
    links: passwords::LinkThrottles,
    sessions: SessionWriter,
}

/// Most sessions stored in one transaction.
const MAX_SESSION_BATCH: usize = 128;

/// Stores the sessions of logins: whatever logins wait when the writer comes round are
/// one transaction. A login storm (every client signing in again after a deploy) was
/// otherwise a write transaction per login, each waiting in turn for the database's one
/// write lock (docs/PERFORMANCE.md, "In-process calls in the all-in-one").
type SessionWriter = GroupCommit<(NewSession, Event), Result<(), StoreError>>;

fn session_writer(store: UserStore) -> SessionWriter {
    GroupCommit::start(MAX_SESSION_BATCH, move |batch: Vec<(NewSession, Event)>| {
        let store = store.clone();
        async move {
            metrics::histogram!("auth_session_batch_size").record(batch.len() as f64);
            let (store, batch) = (&store, &batch);
            batch::each_alone_on_failure(
                batch.len(),
                "session",
                || async move {
                    let sessions: Vec<(&NewSession, &Event)> =
                        batch.iter().map(|(new, event)| (new, event)).collect();
                    store
                        .insert_sessions(sessions)
                        .await
                        .map(|()| vec![(); batch.len()])
                },
                |index| async move {
                    let (new, event) = &batch[index];
                    store.insert_session(new, event).await
                },
            )
            .await
        }
    })
}

/// Who produces auth's events.
const PRODUCER: &str = "auth";

/// Now, at the microsecond precision both databases keep.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// How a session ended, for its `user.logged_out` event.
#[derive(Debug, Clone, Copy)]
struct Ending {
    /// Whether the user's address is verified (only those are mailed).
    email_verified: bool,
    /// No logout mail: another mail tells the user (a password change).
    silent: bool,
}

/// The `user.logged_out` event of a session ended by (or on behalf of) `client`.
fn logged_out(
    user_id: Uuid,
    username: &str,
    email: &str,
    session: Uuid,
    client: &Client,
    ending: Ending,
) -> Event {
    Event::new(
        PRODUCER,
        Payload::UserLoggedOut(events::UserLoggedOut {
            user_id: user_id.to_string(),
            username: username.to_owned(),
            email: email.to_owned(),
            session_id: session.to_string(),
            client: Some(events::Client {
                ip: client.ip.chars().take(64).collect(),
                user_agent: client.user_agent.chars().take(256).collect(),
            }),
            email_verified: ending.email_verified,
            silent: ending.silent,
        }),
    )
}

fn hash_refresh(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

fn new_refresh_token(session: Uuid) -> String {
    let mut secret = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system random generator is available");
    format!("{}.{}", session.simple(), URL_SAFE_NO_PAD.encode(secret))
}

impl Accounts {
    /// Accounts over a store, signing with `keys`.
    pub async fn new(
        store: UserStore,
        keys: SigningKey,
        revocations: Arc<RevocationFeed>,
        policy: Policy,
    ) -> Self {
        let verifier = TokenVerifier::new(100_000);
        verifier
            .set_keys([(keys.kid(), keys.public_x())])
            .expect("our own public key is well-formed");
        Self {
            throttle: LoginThrottle::new(policy.throttle),
            decoy_hash: password::decoy(&policy.password_cost).await,
            sessions: session_writer(store.clone()),
            store,
            keys,
            verifier,
            revocations,
            links: passwords::LinkThrottles::new(policy.throttle.window),
            policy,
            outbox: OutboxWaker::default(),
        }
    }

    /// Wakes the outbox relay when a commit wrote events.
    pub fn outbox_waker(&self) -> &OutboxWaker {
        &self.outbox
    }

    /// The signing key (for publishing its public half).
    pub fn keys(&self) -> &SigningKey {
        &self.keys
    }

    /// The revocation feed.
    pub fn revocations(&self) -> &Arc<RevocationFeed> {
        &self.revocations
    }

    /// The store (for the revocation follower and the outbox relay).
    pub fn store(&self) -> &UserStore {
        &self.store
    }

    /// Creates an account.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<User, AuthError> {
        let account = NewAccount {
            id: Uuid::now_v7(),
            username: Username::parse(username)?,
            email: Email::parse(email)?,
            password_hash: password::hash(Password::parse(password)?, &self.policy.password_cost)
                .await,
            created_at: now(),
        };
        // The registration mail is the verification mail: it carries the link, stored in
        // the same transaction as the account and the event (the mail never names a link
        // that was not stored).
        let (verify_token, verify_hash) = passwords::new_link_token();
        let verify_link = self.verify_link(account.id, account.email.as_str(), verify_hash);
        let event = Event::new(
            PRODUCER,
            Payload::UserRegistered(events::UserRegistered {
                user_id: account.id.to_string(),
                username: account.username.as_str().to_owned(),
                email: account.email.as_str().to_owned(),
                verify_token,
            }),
        );
        match self
            .store
            .insert_account(&account, Some(&verify_link), &event)
            .await
        {
            Ok(user) => {
                self.outbox.wake();
                metrics::counter!("auth_registrations_total").increment(1);
                tracing::info!(user_id = %user.id, username = %user.username, "account registered");
                Ok(user)
            }
            Err(StoreError::Taken(field)) => Err(AuthError::Taken(field)),
            Err(error) => Err(error.into()),
        }
    }

    /// Lets a password check at `account_key` from `ip` go ahead (login, confirmation,
    /// password change: one throttle for all of them), or refuses it for a while.
    pub(super) fn throttle_attempt(
        &self,
        account_key: &str,
        ip: &str,
    ) -> Result<throttle::Attempt, AuthError> {
        self.throttle
            .attempt(account_key, ip, Instant::now())
            .map_err(|retry_after| {
                metrics::counter!("auth_logins_total", "outcome" => "throttled").increment(1);
                AuthError::Throttled(retry_after)
            })
    }

    /// Checks credentials and opens a session.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let parsed = Login::parse(login);
        let account = match &parsed {
            Some(Login::Username(name)) => self.store.account_by_username(name).await?,
            Some(Login::Email(email)) => self.store.account_by_email(email).await?,
            None => None,
        };
        // One count per account, whether the login named it by username or by email.
        let account_key = match (&account, &parsed) {
            (Some(account), _) => format!("account:{}", account.user.id),
            (None, Some(login)) => login.throttle_key(),
            (None, None) => format!(
                "login:{}",
                login.chars().take(64).collect::<String>().to_lowercase()
            ),
        };
        let attempt = self.throttle_attempt(&account_key, &client.ip)?;
        let bounded = password
            .chars()
            .take(*Password::LEN.end())
            .collect::<String>();
        let hash = account
            .as_ref()
            .map_or_else(|| self.decoy_hash.clone(), |a| a.password_hash.clone());
        let matches = password::verify(bounded, hash).await;
        let Some(account) = account.filter(|_| matches) else {
            self.throttle.failed(attempt, Instant::now());
            metrics::counter!("auth_logins_total", "outcome" => "failed").increment(1);
            tracing::info!(client_ip = %client.ip, "login failed");
            return Err(AuthError::BadCredentials);
        };
        self.throttle.succeeded(attempt, Instant::now());
        // Said only after the right password, so it tells nothing to a guesser.
        if account.user.deactivated_at.is_some() {
            tracing::info!(user_id = %account.user.id, "login refused: account deactivated");
            return Err(AuthError::Deactivated);
        }
        let created_at = now();
        let session = Session {
            id: Uuid::now_v7(),
            user_id: account.user.id,
            created_at,
            expires_at: created_at + chrono_duration(self.policy.session_ttl),
            revoked_at: None,
        };
        let refresh_token = new_refresh_token(session.id);
        let new = NewSession {
            session: session.clone(),
            refresh_hash: hash_refresh(&refresh_token),
            client_ip: client.ip.chars().take(64).collect(),
            user_agent: client.user_agent.chars().take(256).collect(),
        };
        let event = Event::at(
            PRODUCER,
            Payload::UserLoggedIn(events::UserLoggedIn {
                user_id: account.user.id.to_string(),
                username: account.user.username.clone(),
                email: account.user.email.clone(),
                session_id: session.id.to_string(),
                client: Some(events::Client {
                    ip: new.client_ip.clone(),
                    user_agent: new.user_agent.clone(),
                }),
                expires_at: Some(timestamp(session.expires_at)),
            }),
            created_at,
        );
        self.sessions
            .submit((new, event))
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::PoolClosed)))?;
        self.outbox.wake();
        metrics::counter!("auth_logins_total", "outcome" => "succeeded").increment(1);
        tracing::info!(user_id = %account.user.id, session_id = %session.id, "logged in");
        Ok(self.issue(account.user, session, refresh_token))
    }

    /// Trades a refresh token for fresh tokens; the old refresh token stops working. The
    /// token a rotation replaced, presented again after the grace period, ends the
    /// session: two parties hold its tokens, and one of them stole them.
    pub async fn refresh(&self, refresh_token: &str, client: Client) -> Result<Issued, AuthError> {
        let session_id = refresh_token
            .split_once('.')
            .and_then(|(id, _)| Uuid::try_parse(id).ok())
            .ok_or(AuthError::SessionEnded)?;
        let (mut session, stored_hash) = self
            .store
            .session(session_id)
            .await?
            .ok_or(AuthError::SessionEnded)?;
        let presented = hash_refresh(refresh_token);
        if presented != stored_hash && session.is_active(now()) {
            self.refused_refresh(&session, &presented, client).await?;
            return Err(AuthError::SessionEnded);
        }
        if !session.is_active(now()) || self.revocations.is_revoked(session.id) {
            return Err(AuthError::SessionEnded);
        }
        let next = new_refresh_token(session.id);
        session.expires_at = now() + chrono_duration(self.policy.session_ttl);
        if !self
            .store
            .rotate_refresh(
                session.id,
                &presented,
                &hash_refresh(&next),
                session.expires_at,
            )
            .await?
        {
            return Err(AuthError::SessionEnded);
        }
        let user = self
            .store
            .user(session.user_id)
            .await?
            .filter(|user| user.deactivated_at.is_none())
            .ok_or(AuthError::SessionEnded)?;
        Ok(self.issue(user, session, next))
    }

    /// A refresh token that is not the session's current one: if it is the one the last
    /// rotation replaced, and the grace period for a concurrent refresh is over, the
    /// session ends (with a logout event, so the user is told by mail).
    async fn refused_refresh(
        &self,
        session: &Session,
        presented: &str,
        client: Client,
    ) -> Result<(), AuthError> {
        let Some((previous, rotated_at)) = self.store.previous_refresh(session.id).await? else {
            return Ok(());
        };
        if previous != presented
            || now() < rotated_at + chrono_duration(self.policy.refresh_reuse_grace)
        {
            return Ok(());
        }
        let Some(user) = self.store.user(session.user_id).await? else {
            return Ok(());
        };
        let ending = Ending {
            email_verified: self.email_verified(user.id).await?,
            silent: false,
        };
        let event = logged_out(
            user.id,
            &user.username,
            &user.email,
            session.id,
            &client,
            ending,
        );
        self.end_session(session.id, Some(&event)).await?;
        metrics::counter!("auth_refresh_reuse_total").increment(1);
        tracing::warn!(user_id = %user.id, session_id = %session.id, client_ip = %client.ip, "a replaced refresh token was presented again: session ended");
        Ok(())
    }

    fn issue(&self, user: User, session: Session, refresh_token: String) -> Issued {
        let issued_at = now();
        let access_expires_at = issued_at + chrono_duration(self.policy.access_ttl);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.id,
            sid: session.id,
            name: user.username.clone(),
            email: user.email.clone(),
            iat: issued_at.timestamp(),
            exp: access_expires_at.timestamp(),
            csrf: self.keys.csrf_token(session.id),
            role: user.role,
        };
        Issued {
            access_token: self.keys.sign(&claims),
            access_expires_at,
            refresh_token,
            csrf_token: claims.csrf,
            user,
            session,
        }
    }

    /// Verifies an access token: signature, expiry, revocation. Memory only.
    pub fn verify(&self, access_token: &str) -> Result<Arc<Claims>, AuthError> {
        let claims = self.verifier.verify(access_token, Utc::now().timestamp())?;
        if self.revocations.is_revoked(claims.sid) {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }

    /// Ends the session of `access_token`, at once, for every token of it.
    pub async fn logout(
        &self,
        access_token: &str,
        client: Client,
    ) -> Result<Arc<Claims>, AuthError> {
        let claims = self.verify(access_token)?;
        let ending = Ending {
            email_verified: self.email_verified(claims.sub).await?,
            silent: false,
        };
        let event = logged_out(
            claims.sub,
            &claims.name,
            &claims.email,
            claims.sid,
            &client,
            ending,
        );
        self.end_session(claims.sid, Some(&event)).await?;
        metrics::counter!("auth_logouts_total").increment(1);
        tracing::info!(user_id = %claims.sub, session_id = %claims.sid, "logged out");
        Ok(claims)
    }

    /// Revokes one session in the store and in the feed, with its event if given; returns
    /// the epoch second after which its tokens have all expired.
    async fn end_session(&self, session: Uuid, event: Option<&Event>) -> Result<i64, AuthError> {
        let entry = roles::revocation_now(session, self.policy.access_ttl);
        if self.store.revoke_session(session, entry, event).await? && event.is_some() {
            self.outbox.wake();
        }
        self.revocations.record(&entry);
        Ok(entry.forget_after)
    }

    /// Starts deleting an account: no more logins, and every session ends now.
    pub async fn begin_deletion(&self, user: Uuid) -> Result<(), AuthError> {
        let sessions = self
            .store
            .begin_deletion(user, now())
            .await?
            .ok_or(AuthError::NotFound)?;
        for session in sessions {
            self.end_session(session, None).await?;
        }
        tracing::info!(user_id = %user, "account deletion begun");
        Ok(())
    }

    /// Finishes deleting an account; false when it was already gone.
    pub async fn complete_deletion(&self, user: Uuid) -> Result<bool, AuthError> {
        let event_for = |user: &User| {
            Event::new(
                PRODUCER,
                Payload::UserDeleted(events::UserDeleted {
                    user_id: user.id.to_string(),
                    username: user.username.clone(),
                    email: user.email.clone(),
                }),
            )
        };
        let deleted = self.store.delete_account(user, &event_for).await?;
        if deleted {
            self.outbox.wake();
            metrics::counter!("auth_accounts_deleted_total").increment(1);
            tracing::info!(user_id = %user, "account deleted");
        }
        Ok(deleted)
    }

    /// Accounts whose deletion began before `begun_before` and never finished.
    pub async fn pending_deletions(
        &self,
        begun_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, AuthError> {
        let limit = if limit == 0 { 100 } else { limit.min(100) };
        Ok(self.store.pending_deletions(begun_before, limit).await?)
    }

    /// A user by id.
    pub async fn user(&self, id: Uuid) -> Result<User, AuthError> {
        self.store.user(id).await?.ok_or(AuthError::NotFound)
    }

    /// One page of users in username order, and the token of the next page if any.
    pub async fn list_users(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<User>, String), AuthError> {
        let size = match page_size {
            0 => 50,
            n => n.min(100),
        };
        let after = if page_token.is_empty() {
            String::new()
        } else {
            Username::parse(page_token)?.as_str().to_owned()
        };
        let mut users = self.store.users_after(&after, size + 1).await?;
        let next = if users.len() > size as usize {
            users.truncate(size as usize);
            users
                .last()
                .map(|user| user.username.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((users, next))
    }
}

mod passwords;

pub use passwords::EndedSessions;
