//! Roles and deactivation, and re-authentication before sensitive steps.
//!
//! Who may do what: only an active owner changes roles; an active admin deactivates or
//! reactivates members, an owner also admins and other owners; nobody changes their own
//! state here. The store keeps at least one active owner. A role or state change that
//! takes rights away ends the account's sessions at once (through the revocation feed
//! every broker follows), so admin checks on token claims are never stale; a gained role
//! arrives with the next token (refresh or sign-in).

use super::{AuthError, Client, now};
use crate::{
    Accounts,
    domain::{Role, User},
    password,
    store::{AccountChange, Revocation, StoreError, UserStore},
};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An account after an administrator's change, and the sessions the change ended.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The account as it is now.
    pub user: User,
    /// Sessions ended because the account lost rights.
    pub ended: Vec<Revocation>,
}

/// The feed entry of a session ended now: every token of it expires within one access
/// token lifetime.
pub(super) fn revocation_now(session: Uuid, access_ttl: Duration) -> Revocation {
    let revoked_at = chrono::Utc::now();
    let lifetime = chrono::Duration::from_std(access_ttl).unwrap_or(chrono::Duration::MAX);
    Revocation {
        session_id: session,
        revoked_at_ms: revoked_at.timestamp_millis(),
        forget_after: revoked_at
            .checked_add_signed(lifetime)
            .map_or(i64::MAX, |at| at.timestamp() + 1),
    }
}

/// Ends the sessions of an account that lost rights in `change`; nothing when it did not.
/// The feed table carries the revocations to every auth replica (and so every broker),
/// also when the change was made by the `microchat admin` command outside the service.
pub async fn end_sessions_after(
    store: &UserStore,
    change: &AccountChange,
    access_ttl: Duration,
) -> Result<Vec<Revocation>, StoreError> {
    let lost_rights =
        change.user.role < change.previous_role || change.user.deactivated_at.is_some();
    let mut ended = Vec::new();
    if !lost_rights {
        return Ok(ended);
    }
    for &session in &change.active_sessions {
        let entry = revocation_now(session, access_ttl);
        store.revoke_session(session, entry, None).await?;
        ended.push(entry);
    }
    Ok(ended)
}

impl Accounts {
    /// Gives `user` the role `role` on behalf of `actor`, an active owner.
    pub async fn change_role(
        &self,
        actor: Uuid,
        user: Uuid,
        role: Role,
    ) -> Result<Changed, AuthError> {
        self.acting(actor, Role::Owner, "only an owner may change roles")
            .await?;
        let change = self
            .store
            .change_role(user, role)
            .await?
            .ok_or(AuthError::NotFound)?;
        tracing::info!(actor = %actor, user_id = %user, from = %change.previous_role, to = %role, "role changed");
        self.settle(change).await
    }

    /// Deactivates (`active` false) or reactivates `user` on behalf of `actor`: an active
    /// admin for members, an owner for admins and owners. A deactivated account keeps its
    /// name and data, cannot sign in, and its sessions end at once.
    pub async fn set_active(
        &self,
        actor: Uuid,
        user: Uuid,
        active: bool,
    ) -> Result<Changed, AuthError> {
        if actor == user {
            return Err(AuthError::Refused(
                "you cannot deactivate or reactivate your own account",
            ));
        }
        let actor_role = self
            .acting(
                actor,
                Role::Admin,
                "only administrators may deactivate accounts",
            )
            .await?;
        let target = self.store.user(user).await?.ok_or(AuthError::NotFound)?;
        if target.role.is_admin() && actor_role != Role::Owner {
            return Err(AuthError::Forbidden(
                "only an owner may deactivate or reactivate an administrator",
            ));
        }
        let change = self
            .store
            .set_deactivated(user, (!active).then(now))
            .await?
            .ok_or(AuthError::NotFound)?;
        tracing::info!(actor = %actor, user_id = %user, active, "account state changed");
        self.settle(change).await
    }

    /// The role of `actor` if it is an active account with at least `needed`.
    async fn acting(
        &self,
        actor: Uuid,
        needed: Role,
        refusal: &'static str,
    ) -> Result<Role, AuthError> {
        match self.store.user(actor).await? {
            Some(user) if user.deactivated_at.is_none() && user.role >= needed => Ok(user.role),
            _ => Err(AuthError::Forbidden(refusal)),
        }
    }

    /// Ends the sessions a change took rights from, here and (through the feed) everywhere.
    async fn settle(&self, change: AccountChange) -> Result<Changed, AuthError> {
        let ended = end_sessions_after(&self.store, &change, self.policy.access_ttl).await?;
        for entry in &ended {
            self.revocations.record(entry);
        }
        Ok(Changed {
            user: change.user,
            ended,
        })
    }

    /// Checks the password of a signed-in user before a step that needs it (deleting the
    /// account). Attempts count toward the same throttles as logins: per account and per
    /// client address.
    pub async fn confirm_password(
        &self,
        user: Uuid,
        password: &str,
        client: Client,
    ) -> Result<(), AuthError> {
        let account_key = format!("account:{user}");
        let attempt = self.throttle_attempt(&account_key, &client.ip)?;
        let account = match self.store.user(user).await? {
            Some(found) => match crate::domain::Username::parse(&found.username) {
                Ok(name) => self.store.account_by_username(&name).await?,
                Err(_) => None,
            },
            None => None,
        };
        let bounded = password
            .chars()
            .take(*crate::domain::Password::LEN.end())
            .collect::<String>();
        let hash = account
            .as_ref()
            .map_or_else(|| self.decoy_hash.clone(), |a| a.password_hash.clone());
        if account.is_some() && password::verify(bounded, hash).await {
            self.throttle.succeeded(attempt, Instant::now());
            return Ok(());
        }
        self.throttle.failed(attempt, Instant::now());
        tracing::info!(user_id = %user, client_ip = %client.ip, "password confirmation failed");
        Err(AuthError::BadCredentials)
    }
}
