//! The broker's sockets, in memory: which socket follows which conversation, and which
//! belong to which user and session. A live event is serialized once and the same bytes
//! are queued to every follower. Each socket's queue is bounded: a socket that cannot keep
//! up is closed rather than allowed to grow the broker's memory.

use axum::extract::ws::Utf8Bytes;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use uuid::Uuid;

use super::outgoing::Refused;
pub use super::outgoing::{Outgoing, OutgoingQueue};

/// Frames queued per socket before it counts as too slow.
pub const QUEUE_FRAMES: usize = 256;

/// A queued frame: made once per event and shared by all its recipients.
pub type Frame = Arc<Utf8Bytes>;

/// Close codes the broker uses.
pub mod close {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol or policy violation (flooding, bad frames).
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// A service the socket needs is unavailable.
    pub const UNAVAILABLE: u16 = 1013;
    /// The session ended (logout, revocation, account deletion).
    pub const SESSION_ENDED: u16 = 4001;
    /// The socket could not keep up with its frames.
    pub const TOO_SLOW: u16 = 4008;
    /// No frame within the idle timeout.
    pub const IDLE: u16 = 4009;
    /// The user already holds the most open sockets allowed (`BROKER_WS_MAX_SOCKETS_PER_USER`).
    pub const TOO_MANY_SOCKETS: u16 = 4029;
}

/// What a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON frames, every conversation of the user.
    Json,
    /// The plain-text room protocol (`FROM <user> <message>`), one room.
    Text,
}

/// Identifies one socket on this broker.
pub type SocketId = u64;

struct Entry {
    user: Uuid,
    session: Uuid,
    protocol: Protocol,
    outgoing: Arc<OutgoingQueue>,
    /// Sorted and without repeats: a few ids at most for most users, and 16 bytes each
    /// instead of a hash set's ~100 bytes for one.
    conversations: Vec<Uuid>,
}

impl Entry {
    /// Adds or removes one followed conversation; true when that changed anything.
    fn follow(&mut self, conversation: Uuid, follow: bool) -> bool {
        match (self.conversations.binary_search(&conversation), follow) {
            (Err(at), true) => {
                self.conversations.insert(at, conversation);
                true
            }
            (Ok(at), false) => {
                self.conversations.remove(at);
                true
            }
            _ => false,
        }
    }
}

#[derive(Default)]
struct Registry {
    sockets: HashMap<SocketId, Entry>,
    by_conversation: HashMap<Uuid, Vec<SocketId>>,
    by_user: HashMap<Uuid, Vec<SocketId>>,
    by_session: HashMap<Uuid, Vec<SocketId>>,
}

fn unlink(index: &mut HashMap<Uuid, Vec<SocketId>>, key: Uuid, id: SocketId) {
    if let Some(ids) = index.get_mut(&key) {
        ids.retain(|other| *other != id);
        if ids.is_empty() {
            index.remove(&key);
        }
    }
}

/// A new socket's registration.
pub struct Registration {
    /// Its id in the hub.
    pub id: SocketId,
    /// Its frames to write, and close requests from elsewhere.
    pub outgoing: Arc<OutgoingQueue>,
}

/// Frames for one live event, made on first need and shared by every recipient.
pub struct Frames<'a> {
    json: Option<Frame>,
    make_json: &'a dyn Fn() -> String,
    text: Option<Frame>,
    make_text: Option<&'a dyn Fn() -> String>,
}

impl<'a> Frames<'a> {
    /// An event with a JSON form, and a text form when text sockets should see it.
    pub fn new(
        make_json: &'a dyn Fn() -> String,
        make_text: Option<&'a dyn Fn() -> String>,
    ) -> Self {
        Self {
            json: None,
            make_json,
            text: None,
            make_text,
        }
    }

    fn for_protocol(&mut self, protocol: Protocol) -> Option<Frame> {
        match protocol {
            Protocol::Json => Some(Arc::clone(
                self.json
                    .get_or_insert_with(|| Arc::new((self.make_json)().into())),
            )),
            Protocol::Text => {
                let make = self.make_text?;
                Some(Arc::clone(
                    self.text.get_or_insert_with(|| Arc::new(make().into())),
                ))
            }
        }
    }
}

/// Every socket of this broker.
#[derive(Default)]
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    fed: std::sync::atomic::AtomicBool,
}

impl Hub {
    /// Registers a socket following `conversations`.
    pub fn register(
        &self,
        user: Uuid,
        session: Uuid,
        protocol: Protocol,
        conversations: impl IntoIterator<Item = Uuid>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outgoing = Arc::new(OutgoingQueue::new(QUEUE_FRAMES));
        let mut conversations: Vec<Uuid> = conversations.into_iter().collect();
        conversations.sort_unstable();
        conversations.dedup();
        conversations.shrink_to_fit();
        let mut registry = self
            .registry
            .write()
            .expect("no code panics while holding the hub lock");
        for conversation in &conversations {
            registry
                .by_conversation
                .entry(*conversation)
                .or_default()
                .push(id);
        }
        registry.by_user.entry(user).or_default().push(id);
        registry.by_session.entry(session).or_default().push(id);
        let entry = Entry {
            user,
            session,
            protocol,
            outgoing: Arc::clone(&outgoing),
            conversations,
        };
        registry.sockets.insert(id, entry);
        metrics::gauge!("broker_sockets").increment(1.0);
        Registration { id, outgoing }
    }

    /// Forgets a socket.
    pub fn unregister(&self, id: SocketId) {
        let mut registry = self
            .registry
            .write()
            .expect("no code panics while holding the hub lock");
        let Some(entry) = registry.sockets.remove(&id) else {
            return;
        };
        for conversation in &entry.conversations {
            unlink(&mut registry.by_conversation, *conversation, id);
        }
        unlink(&mut registry.by_user, entry.user, id);
        unlink(&mut registry.by_session, entry.session, id);
        metrics::gauge!("broker_sockets").decrement(1.0);
    }

    /// Records whether chat's live stream currently feeds this hub.
    pub fn set_fed(&self, fed: bool) {
        self.fed.store(fed, Ordering::Relaxed);
    }

    /// True while chat's live stream feeds this hub (sockets would miss events otherwise).
    pub fn is_fed(&self) -> bool {
        self.fed.load(Ordering::Relaxed)
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.registry
            .read()
            .expect("no code panics while holding the hub lock")
            .sockets
            .len()
    }

    /// True when no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues the event's frames to every socket following any of `conversations`, each
    /// socket once, skipping sockets of `except_user`. Returns how many were queued.
    pub fn deliver(
        &self,
        conversations: &[Uuid],
        except_user: Option<Uuid>,
        frames: &mut Frames<'_>,
    ) -> usize {
        let registry = self
            .registry
            .read()
            .expect("no code panics while holding the hub lock");
        let mut seen = HashSet::new();
        let mut queued = 0;
        for conversation in conversations {
            let Some(ids) = registry.by_conversation.get(conversation) else {
                continue;
            };
            for id in ids {
                if conversations.len() > 1 && !seen.insert(*id) {
                    continue;
                }
                let Some(entry) = registry.sockets.get(id) else {
                    continue;
                };
                if Some(entry.user) == except_user {
                    continue;
                }
                let Some(frame) = frames.for_protocol(entry.protocol) else {
                    continue;
                };
                queued += usize::from(Self::offer(entry, frame));
            }
        }
        metrics::counter!("broker_frames_queued_total").increment(queued as u64);
        queued
    }

    /// Queues the event's frames to every socket of `user` on this broker (whatever they
    /// follow), and to no other socket. Returns how many were queued.
    pub fn deliver_to_user(&self, user: Uuid, frames: &mut Frames<'_>) -> usize {
        let registry = self
            .registry
            .read()
            .expect("no code panics while holding the hub lock");
        let mut queued = 0;
        for id in registry
            .by_user
            .get(&user)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(entry) = registry.sockets.get(id) else {
                continue;
            };
            let Some(frame) = frames.for_protocol(entry.protocol) else {
                continue;
            };
            queued += usize::from(Self::offer(entry, frame));
        }
        metrics::counter!("broker_frames_queued_total").increment(queued as u64);
        queued
    }

    /// Queues one frame to every socket of the hub (e.g. "resync").
    pub fn broadcast(&self, frames: &mut Frames<'_>) {
        let registry = self
            .registry
            .read()
            .expect("no code panics while holding the hub lock");
        for entry in registry.sockets.values() {
            if let Some(frame) = frames.for_protocol(entry.protocol) {
                Self::offer(entry, frame);
            }
        }
    }

    fn offer(entry: &Entry, frame: Frame) -> bool {
        match entry.outgoing.offer(frame) {
            Ok(()) => true,
            Err(Refused::Full) => {
                metrics::counter!("broker_slow_sockets_closed_total").increment(1);
                false
            }
            Err(Refused::Closing) => false,
        }
    }

    /// A user joined or left a conversation: their JSON sockets follow it or stop.
    pub fn set_membership(&self, user: Uuid, conversation: Uuid, joined: bool) {
        let mut registry = self
            .registry
            .write()
            .expect("no code panics while holding the hub lock");
        let ids: Vec<SocketId> = registry.by_user.get(&user).cloned().unwrap_or_default();
        for id in ids {
            let Some(entry) = registry.sockets.get_mut(&id) else {
                continue;
            };
            if entry.protocol != Protocol::Json {
                continue;
            }
            let changed = entry.follow(conversation, joined);
            if changed && joined {
                registry
                    .by_conversation
                    .entry(conversation)
                    .or_default()
                    .push(id);
            } else if changed {
                unlink(&mut registry.by_conversation, conversation, id);
            }
        }
    }

    /// A conversation is gone: nobody follows it any more.
    pub fn forget_conversation(&self, conversation: Uuid) {
        let mut registry = self
            .registry
            .write()
            .expect("no code panics while holding the hub lock");
        for id in registry
            .by_conversation
            .remove(&conversation)
            .unwrap_or_default()
        {
            if let Some(entry) = registry.sockets.get_mut(&id) {
                entry.follow(conversation, false);
            }
        }
    }

    /// Closes every socket of a session (logout, revocation); returns how many.
    pub fn close_session(&self, session: Uuid) -> usize {
        let registry = self
            .registry
            .read()
            .expect("no code panics while holding the hub lock");
        let ids = registry
            .by_session
            .get(&session)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for id in ids {
            if let Some(entry) = registry.sockets.get(id) {
                entry.outgoing.close(close::SESSION_ENDED);
            }
        }
        ids.len()
    }

    /// Closes the sockets of every session for which `ended` is true.
    pub fn close_sessions_where(&self, ended: impl Fn(Uuid) -> bool) {
        let registry = self
            .registry
            .read()
            .expect("no code panics while holding the hub lock");
        for (session, ids) in &registry.by_session {
            if ended(*session) {
                for id in ids {
                    if let Some(entry) = registry.sockets.get(id) {
                        entry.outgoing.close(close::SESSION_ENDED);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> impl Fn() -> String {
        move || s.to_owned()
    }

    /// The first of the frames waiting for `socket`.
    async fn first_frame(socket: &Registration) -> String {
        match socket.outgoing.next().await {
            Outgoing::Frames(frames) => frames[0].as_str().to_owned(),
            Outgoing::Close(code) => panic!("expected a frame, got close {code}"),
        }
    }

    #[tokio::test]
    async fn events_reach_followers_only_once_each() {
        let hub = Hub::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (room, other) = (Uuid::now_v7(), Uuid::now_v7());
        let first = hub.register(a, Uuid::now_v7(), Protocol::Json, [room, other]);
        let second = hub.register(b, Uuid::now_v7(), Protocol::Json, [other]);
        let json = text("{}");
        assert_eq!(hub.deliver(&[room], None, &mut Frames::new(&json, None)), 1);
        assert_eq!(
            hub.deliver(&[room, other], None, &mut Frames::new(&json, None)),
            2,
            "no socket twice"
        );
        assert_eq!(first_frame(&first).await, "{}");
        assert_eq!(first_frame(&second).await, "{}");
        assert_eq!(
            hub.deliver(&[other], Some(a), &mut Frames::new(&json, None)),
            1,
            "the typer is skipped"
        );
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_socket_as_too_slow() {
        let hub = Hub::default();
        let room = Uuid::now_v7();
        let slow = hub.register(Uuid::now_v7(), Uuid::now_v7(), Protocol::Json, [room]);
        let json = text("{}");
        for _ in 0..QUEUE_FRAMES {
            hub.deliver(&[room], None, &mut Frames::new(&json, None));
        }
        assert_eq!(slow.outgoing.close_code(), None);
        hub.deliver(&[room], None, &mut Frames::new(&json, None));
        assert_eq!(slow.outgoing.close_code(), Some(close::TOO_SLOW));
    }

    #[tokio::test]
    async fn membership_changes_move_sockets_between_conversations() {
        let hub = Hub::default();
        let (user, room) = (Uuid::now_v7(), Uuid::now_v7());
        let socket = hub.register(user, Uuid::now_v7(), Protocol::Json, []);
        let json = text("{}");
        assert_eq!(hub.deliver(&[room], None, &mut Frames::new(&json, None)), 0);
        hub.set_membership(user, room, true);
        assert_eq!(hub.deliver(&[room], None, &mut Frames::new(&json, None)), 1);
        first_frame(&socket).await;
        hub.set_membership(user, room, false);
        assert_eq!(hub.deliver(&[room], None, &mut Frames::new(&json, None)), 0);
    }

    #[tokio::test]
    async fn text_sockets_get_the_text_form_or_nothing() {
        let hub = Hub::default();
        let room = Uuid::now_v7();
        let plain = hub.register(Uuid::now_v7(), Uuid::now_v7(), Protocol::Text, [room]);
        let (json, line) = (text("{}"), text("FROM u hi"));
        assert_eq!(hub.deliver(&[room], None, &mut Frames::new(&json, None)), 0);
        assert_eq!(
            hub.deliver(&[room], None, &mut Frames::new(&json, Some(&line))),
            1
        );
        assert_eq!(first_frame(&plain).await, "FROM u hi");
    }

    #[tokio::test]
    async fn frames_for_a_user_reach_that_users_sockets_only() {
        let hub = Hub::default();
        let (ada, bob, room) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let tab = hub.register(ada, Uuid::now_v7(), Protocol::Json, [room]);
        let other_tab = hub.register(ada, Uuid::now_v7(), Protocol::Json, []);
        let bobs = hub.register(bob, Uuid::now_v7(), Protocol::Json, [room]);
        let json = text("{\"type\":\"notification\"}");
        assert_eq!(hub.deliver_to_user(ada, &mut Frames::new(&json, None)), 2);
        assert_eq!(first_frame(&tab).await, "{\"type\":\"notification\"}");
        assert_eq!(first_frame(&other_tab).await, "{\"type\":\"notification\"}");
        assert_eq!(bobs.outgoing.close_code(), None);
        assert_eq!(
            hub.deliver(&[room], Some(ada), &mut Frames::new(&json, None)),
            1
        );
        assert_eq!(
            hub.deliver_to_user(Uuid::now_v7(), &mut Frames::new(&json, None)),
            0
        );
    }

    #[test]
    fn closing_a_session_closes_its_sockets_and_no_other() {
        let hub = Hub::default();
        let session = Uuid::now_v7();
        let mine = hub.register(Uuid::now_v7(), session, Protocol::Json, []);
        let theirs = hub.register(Uuid::now_v7(), Uuid::now_v7(), Protocol::Json, []);
        assert_eq!(hub.close_session(session), 1);
        assert_eq!(mine.outgoing.close_code(), Some(close::SESSION_ENDED));
        assert_eq!(theirs.outgoing.close_code(), None);
        hub.unregister(mine.id);
        hub.unregister(theirs.id);
        assert!(hub.is_empty());
    }
}
