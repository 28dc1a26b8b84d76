//! How many sockets each user may hold open on this broker. Without a cap one account
//! could open thousands (each costs memory here and a presence record in chat); with it
//! the socket over the cap is closed at once with [`close::TOO_MANY_SOCKETS`](super::hub::close::TOO_MANY_SOCKETS).
//! Counted per broker: behind N brokers a user may hold N × the cap.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use uuid::Uuid;

/// Open sockets per user, bounded by a cap.
#[derive(Debug)]
pub struct SocketQuota {
    cap: usize,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open socket's place in its user's quota, given back when dropped.
#[derive(Debug)]
pub struct SocketPermit {
    user: Uuid,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl SocketQuota {
    /// At most `cap` open sockets per user.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Arc::default(),
        }
    }

    /// A place for one more socket of `user`, or `None` when they hold the cap already.
    pub fn acquire(&self, user: Uuid) -> Option<SocketPermit> {
        let mut open = self
            .open
            .lock()
            .expect("no code panics while holding the socket quota");
        let count = open.entry(user).or_insert(0);
        if *count >= self.cap {
            if *count == 0 {
                open.remove(&user);
            }
            return None;
        }
        *count += 1;
        Some(SocketPermit {
            user,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .expect("no code panics while holding the socket quota");
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_over_the_cap_is_refused_until_one_closes() {
        let quota = SocketQuota::new(2);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = quota.acquire(ada).expect("first");
        let _second = quota.acquire(ada).expect("second");
        assert!(quota.acquire(ada).is_none(), "the third is over the cap");
        assert!(quota.acquire(bob).is_some(), "other users have their own");
        drop(first);
        assert!(
            quota.acquire(ada).is_some(),
            "a closed socket frees its place"
        );
    }

    #[test]
    fn users_without_sockets_are_forgotten() {
        let quota = SocketQuota::new(1);
        let ada = Uuid::now_v7();
        drop(quota.acquire(ada));
        assert!(quota.open.lock().unwrap().is_empty());
    }
}
