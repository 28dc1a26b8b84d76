//! Passwords, sessions and email verification: change a password (the old one
//! required), reset it through a mailed one-time link, list and end one's sessions, and
//! verify an address through a mailed link.
//!
//! A mailed link carries a random token; only its SHA-256 is stored. It works once,
//! until it expires, and a reset link stops working when the password changes. Mails
//! other than the verification go only to verified addresses, so registering someone
//! else's address cannot make microchat mail it at will.

use super::{Accounts, AuthError, Client, Ending, PRODUCER, hash_refresh, logged_out, now};
use crate::{
    domain::{Email, Password, User},
    password,
    store::{NewAccountToken, SessionRecord, TokenPurpose},
    throttle::RequestLimit,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use platform::{events::Event, grpc::timestamp};
use proto::events::v1::{self as events, envelope::Payload};
use ring::rand::SecureRandom;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Characters of a link token: 32 random bytes, base64url without padding.
const LINK_TOKEN_CHARS: usize = 43;
/// Mailed links (reset or verification) one account may ask for per throttling window.
const LINKS_PER_WINDOW: u32 = 3;
/// A reset request answers no sooner than this, known address or not, so the time it
/// takes does not tell whether an account exists.
const RESET_ANSWER_TIME: Duration = Duration::from_millis(400);

/// How often each account may have links mailed.
#[derive(Debug)]
pub struct LinkThrottles {
    /// Reset requests (and the verification links they send to unverified addresses).
    reset: RequestLimit,
    /// Verification links asked for again.
    resend: RequestLimit,
}

impl LinkThrottles {
    /// [`LINKS_PER_WINDOW`] of each kind per account per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            reset: RequestLimit::new(LINKS_PER_WINDOW, window),
            resend: RequestLimit::new(LINKS_PER_WINDOW, window),
        }
    }
}

/// Sessions a call ended: their tokens are refused from now on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndedSessions {
    /// The ended sessions.
    pub sessions: Vec<Uuid>,
    /// Epoch second after which every token of them has expired anyway.
    pub forget_after: i64,
}

/// A new link token and the hash that is stored of it.
pub(super) fn new_link_token() -> (String, String) {
    let mut secret = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .expect("the system random generator is available");
    let token = URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_refresh(&token);
    (token, hash)
}

/// The stored hash of a link token, or `BadLink` for anything that cannot be one (no
/// database lookup for a malformed token).
fn link_hash(token: &str) -> Result<String, AuthError> {
    let token = token.trim();
    let well_formed = token.len() == LINK_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(hash_refresh(token))
    } else {
        Err(AuthError::BadLink)
    }
}

fn event_client(client: &Client) -> events::Client {
    events::Client {
        ip: client.ip.chars().take(64).collect(),
        user_agent: client.user_agent.chars().take(256).collect(),
    }
}

/// The `user.password_changed` event.
fn password_changed(user: &User, email_verified: bool, client: &Client, by_reset: bool) -> Event {
    Event::new(
        PRODUCER,
        Payload::PasswordChanged(events::PasswordChanged {
            user_id: user.id.to_string(),
            username: user.username.clone(),
            email: user.email.clone(),
            email_verified,
            client: Some(event_client(client)),
            by_reset,
        }),
    )
}

impl Accounts {
    /// Whether the user's address is verified; `NotFound` for no such account.
    pub async fn email_verified(&self, user: Uuid) -> Result<bool, AuthError> {
        let verified_at = self
            .store
            .email_verified_at(user)
            .await?
            .ok_or(AuthError::NotFound)?;
        Ok(verified_at.is_some())
    }

    /// A new account's verification link (its registration mail carries the token),
    /// stored with the account.
    pub(super) fn verify_link(&self, user_id: Uuid, email: &str, hash: String) -> NewAccountToken {
        self.link_token(user_id, email, hash, TokenPurpose::Verify)
    }

    fn link_token(
        &self,
        user_id: Uuid,
        email: &str,
        hash: String,
        purpose: TokenPurpose,
    ) -> NewAccountToken {
        let created_at = now();
        let ttl = match purpose {
            TokenPurpose::Reset => self.policy.reset_link_ttl,
            TokenPurpose::Verify => self.policy.verify_link_ttl,
        };
        NewAccountToken {
            hash,
            purpose,
            user_id,
            email: email.to_owned(),
            created_at,
            expires_at: created_at + super::chrono_duration(ttl),
        }
    }

    /// Stores a new link of `purpose` for `user` with the event that mails it.
    async fn mail_link(&self, user: &User, purpose: TokenPurpose) -> Result<(), AuthError> {
        let (token, hash) = new_link_token();
        let stored = self.link_token(user.id, &user.email, hash, purpose);
        let expires_at = Some(timestamp(stored.expires_at));
        let (user_id, username, email) = (
            user.id.to_string(),
            user.username.clone(),
            user.email.clone(),
        );
        let payload = match purpose {
            TokenPurpose::Reset => {
                Payload::PasswordResetRequested(events::PasswordResetRequested {
                    user_id,
                    username,
                    email,
                    token,
                    expires_at,
                })
            }
            TokenPurpose::Verify => Payload::VerificationRequested(events::VerificationRequested {
                user_id,
                username,
                email,
                token,
                expires_at,
            }),
        };
        let event = Event::new(PRODUCER, payload);
        self.store
            .insert_account_token(&stored, Some(&event))
            .await?;
        self.outbox.wake();
        Ok(())
    }

    /// Sets a new password for the caller of `access_token` after checking the old one
    /// (a wrong one counts as a failed login); every other session of the user ends.
    pub async fn change_password(
        &self,
        access_token: &str,
        old_password: &str,
        new_password: &str,
        client: Client,
    ) -> Result<EndedSessions, AuthError> {
        let claims = self.verify(access_token)?;
        let new_password = Password::parse(new_password)?;
        let account = self
            .store
            .account_by_id(claims.sub)
            .await?
            .ok_or(AuthError::SessionEnded)?;
        let account_key = format!("account:{}", account.user.id);
        let attempt = self.throttle_attempt(&account_key, &client.ip)?;
        let bounded = old_password
            .chars()
            .take(*Password::LEN.end())
            .collect::<String>();
        if !password::verify(bounded, account.password_hash.clone()).await {
            self.throttle.failed(attempt, Instant::now());
            tracing::info!(user_id = %account.user.id, client_ip = %client.ip, "password change refused: wrong old password");
            return Err(AuthError::BadCredentials);
        }
        self.throttle.succeeded(attempt, Instant::now());
        let hash = password::hash(new_password, &self.policy.password_cost).await;
        let email_verified = self.email_verified(account.user.id).await?;
        let event = password_changed(&account.user, email_verified, &client, false);
        if !self
            .store
            .set_password(account.user.id, &hash, &event)
            .await?
        {
            return Err(AuthError::SessionEnded);
        }
        self.outbox.wake();
        metrics::counter!("auth_password_changes_total", "by" => "user").increment(1);
        tracing::info!(user_id = %account.user.id, session_id = %claims.sid, "password changed");
        self.end_sessions_of(&account.user, email_verified, Some(claims.sid))
            .await
    }

    /// Mails a one-time reset link to the account of `email`, if there is one; answers
    /// the same, after the same time, either way. An unverified address gets a
    /// verification link instead (the only mail it may get); both are limited per account.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), AuthError> {
        let email = Email::parse(email)?;
        let started = tokio::time::Instant::now();
        let account = self.store.account_by_email(&email).await;
        let outcome = match account {
            Ok(Some(account)) => self.mail_reset_link(&account.user).await,
            Ok(None) => Ok(()),
            Err(error) => Err(error.into()),
        };
        tokio::time::sleep_until(started + RESET_ANSWER_TIME).await;
        match outcome {
            // The lookup failed: the same for every address.
            Err(AuthError::Store(error)) if account_lookup_failed(&error) => Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "cannot mail a password reset link");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    async fn mail_reset_link(&self, user: &User) -> Result<(), AuthError> {
        let key = format!("account:{}", user.id);
        if self.links.reset.take(&key, Instant::now()).is_err() {
            tracing::info!(user_id = %user.id, "reset link not mailed: asked for too often");
            return Ok(());
        }
        let purpose = if self.email_verified(user.id).await? {
            TokenPurpose::Reset
        } else {
            TokenPurpose::Verify
        };
        self.mail_link(user, purpose).await?;
        metrics::counter!("auth_reset_links_total", "mailed" => purpose.as_str()).increment(1);
        tracing::info!(user_id = %user.id, link = purpose.as_str(), "password reset asked for");
        Ok(())
    }

    /// Sets a new password with a mailed reset token; every session of the user ends.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: Client,
    ) -> Result<EndedSessions, AuthError> {
        let hash = link_hash(token)?;
        let new_password = Password::parse(new_password)?;
        // Checked before hashing, so wrong tokens cost no argon2 work.
        if self
            .store
            .account_token(&hash, TokenPurpose::Reset, now())
            .await?
            .is_none()
        {
            return Err(AuthError::BadLink);
        }
        let new_hash = password::hash(new_password, &self.policy.password_cost).await;
        let event_for =
            |user: &User, verified: bool| Some(password_changed(user, verified, &client, true));
        let token = self
            .store
            .redeem_account_token(
                &hash,
                TokenPurpose::Reset,
                now(),
                Some(&new_hash),
                &event_for,
            )
            .await?
            .ok_or(AuthError::BadLink)?;
        self.outbox.wake();
        let user = self.user(token.user_id).await?;
        // The reset link reached the address: the store marked it verified.
        let ended = self.end_sessions_of(&user, true, None).await?;
        // A good reset is a good login: the account's failures are forgotten.
        self.throttle.clear_account(&format!("account:{}", user.id));
        metrics::counter!("auth_password_changes_total", "by" => "reset").increment(1);
        tracing::info!(user_id = %user.id, sessions_ended = ended.sessions.len(), "password reset");
        Ok(ended)
    }

    /// Marks the address a verification token was mailed to as verified; returns the
    /// account.
    pub async fn verify_email(&self, token: &str) -> Result<User, AuthError> {
        let hash = link_hash(token)?;
        let redeemed = self
            .store
            .redeem_account_token(&hash, TokenPurpose::Verify, now(), None, &|_, _| None)
            .await?
            .ok_or(AuthError::BadLink)?;
        tracing::info!(user_id = %redeemed.user_id, "email address verified");
        self.user(redeemed.user_id).await
    }

    /// Mails the user a new verification link.
    pub async fn resend_verification(&self, user_id: Uuid) -> Result<(), AuthError> {
        if self.email_verified(user_id).await? {
            return Err(AuthError::AlreadyVerified);
        }
        let user = self.user(user_id).await?;
        self.links
            .resend
            .take(&format!("account:{user_id}"), Instant::now())
            .map_err(AuthError::Throttled)?;
        self.mail_link(&user, TokenPurpose::Verify).await?;
        tracing::info!(%user_id, "verification link mailed again");
        Ok(())
    }

    /// The user's active sessions, newest first.
    pub async fn sessions(&self, user: Uuid) -> Result<Vec<SessionRecord>, AuthError> {
        let at = now();
        let mut sessions = self.store.unrevoked_sessions(user).await?;
        sessions.retain(|record| {
            record.session.is_active(at) && !self.revocations.is_revoked(record.session.id)
        });
        Ok(sessions)
    }

    /// Ends one active session of the user, like a logout from it (with its mail);
    /// `NotFound` when the user has no such session.
    pub async fn end_session_of(
        &self,
        user: Uuid,
        session: Uuid,
    ) -> Result<EndedSessions, AuthError> {
        let record = self
            .sessions(user)
            .await?
            .into_iter()
            .find(|record| record.session.id == session)
            .ok_or(AuthError::NotFound)?;
        let account = self.user(user).await?;
        let ending = Ending {
            email_verified: self.email_verified(user).await?,
            silent: false,
        };
        let client = Client {
            ip: record.client_ip,
            user_agent: record.user_agent,
        };
        let event = logged_out(
            user,
            &account.username,
            &account.email,
            session,
            &client,
            ending,
        );
        let forget_after = self.end_session(session, Some(&event)).await?;
        tracing::info!(user_id = %user, session_id = %session, "session ended by its user");
        Ok(EndedSessions {
            sessions: vec![session],
            forget_after,
        })
    }

    /// Ends every active session of the user but `keep`.
    pub async fn end_other_sessions(
        &self,
        user: Uuid,
        keep: Uuid,
    ) -> Result<EndedSessions, AuthError> {
        let account = self.user(user).await?;
        let verified = self.email_verified(user).await?;
        self.end_sessions_of(&account, verified, Some(keep)).await
    }

    /// Ends every active session of `user` but `keep`, each with a silent logout event
    /// (chat forgets the session; the mail that matters is sent by the caller's event).
    async fn end_sessions_of(
        &self,
        user: &User,
        email_verified: bool,
        keep: Option<Uuid>,
    ) -> Result<EndedSessions, AuthError> {
        let mut ended = EndedSessions::default();
        for record in self.sessions(user.id).await? {
            if Some(record.session.id) == keep {
                continue;
            }
            let client = Client {
                ip: record.client_ip,
                user_agent: record.user_agent,
            };
            let ending = Ending {
                email_verified,
                silent: true,
            };
            let event = logged_out(
                user.id,
                &user.username,
                &user.email,
                record.session.id,
                &client,
                ending,
            );
            let forget_after = self.end_session(record.session.id, Some(&event)).await?;
            ended.forget_after = ended.forget_after.max(forget_after);
            ended.sessions.push(record.session.id);
        }
        Ok(ended)
    }
}

/// Whether a store error came from looking the address up (and so would have happened
/// for any address): only an unreachable database.
fn account_lookup_failed(error: &crate::store::StoreError) -> bool {
    matches!(error, crate::store::StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_random_and_only_their_shape_is_accepted() {
        let (token, hash) = new_link_token();
        let (other, _) = new_link_token();
        assert_ne!(token, other);
        assert_eq!(token.len(), LINK_TOKEN_CHARS);
        assert_eq!(link_hash(&token).ok(), Some(hash));
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", &token[..42]),
            &format!("{}/", &token[..42]),
            &"é".repeat(22),
        ] {
            assert!(matches!(link_hash(bad), Err(AuthError::BadLink)), "{bad:?}");
        }
    }
}
