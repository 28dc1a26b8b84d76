//! The set of revoked sessions whose tokens have not expired yet.
//!
//! Auth fills it as sessions end and streams it to brokers; both check it on every
//! token they accept. Entries are forgotten once every token of the session has expired,
//! so the set stays as small as the number of sessions ended within one token lifetime.

use std::{collections::HashMap, sync::RwLock};
use uuid::Uuid;

/// Revoked session ids, each with the epoch second after which it can be forgotten.
#[derive(Debug, Default)]
pub struct RevocationList {
    sessions: RwLock<HashMap<Uuid, i64>>,
}

impl RevocationList {
    /// True when the session has been revoked.
    pub fn is_revoked(&self, session: Uuid) -> bool {
        self.sessions
            .read()
            .expect("no code panics while holding the revocation lock")
            .contains_key(&session)
    }

    /// Records one revocation.
    pub fn revoke(&self, session: Uuid, forget_after: i64) {
        self.sessions
            .write()
            .expect("no code panics while holding the revocation lock")
            .insert(session, forget_after);
    }

    /// Replaces everything known with a snapshot.
    pub fn replace(&self, snapshot: impl IntoIterator<Item = (Uuid, i64)>) {
        let fresh: HashMap<Uuid, i64> = snapshot.into_iter().collect();
        *self
            .sessions
            .write()
            .expect("no code panics while holding the revocation lock") = fresh;
    }

    /// Forgets sessions whose tokens have all expired by `now` (epoch seconds).
    pub fn prune(&self, now: i64) {
        self.sessions
            .write()
            .expect("no code panics while holding the revocation lock")
            .retain(|_, forget_after| *forget_after > now);
    }

    /// Every entry, for a snapshot.
    pub fn entries(&self) -> Vec<(Uuid, i64)> {
        let sessions = self
            .sessions
            .read()
            .expect("no code panics while holding the revocation lock");
        sessions.iter().map(|(id, until)| (*id, *until)).collect()
    }

    /// How many sessions are listed.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .expect("no code panics while holding the revocation lock")
            .len()
    }

    /// True when no session is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_sessions_are_forgotten_after_their_tokens_expire() {
        let list = RevocationList::default();
        let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
        list.revoke(old, 100);
        list.revoke(recent, 200);
        list.prune(150);
        assert!(!list.is_revoked(old));
        assert!(list.is_revoked(recent));
    }

    #[test]
    fn a_snapshot_replaces_what_was_known() {
        let list = RevocationList::default();
        let (stale, fresh) = (Uuid::now_v7(), Uuid::now_v7());
        list.revoke(stale, 100);
        list.replace([(fresh, 100)]);
        assert!(!list.is_revoked(stale));
        assert!(list.is_revoked(fresh));
        assert_eq!(list.len(), 1);
    }
}
