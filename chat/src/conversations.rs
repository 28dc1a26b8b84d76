//! What chat does, independent of how it is called: rooms, direct conversations,
//! messages, read receipts, typing and presence, each checked against the caller's
//! membership. Speaks chat's types only: it publishes [`LiveEvent`]s and writes its
//! durable events through [`crate::events`]; the gRPC edge (`grpc.rs`) and the live hub
//! map them to the wire ([`crate::wire`]).

use crate::attachments::Files;
use crate::{
    domain::{
        Conversation, ConversationView, Invalid, Kind, LiveEvent, MAX_ATTACHMENTS_PER_MESSAGE,
        Member, Message, MessageBody, Presence, RoomName, Topic, UserRef, direct_key,
    },
    events,
    live::LiveHub,
    mentions::{self, Notification},
    search::{self, CursorRefused, SearchCursor, SearchHit, SearchQuery, SearchText},
    store::{
        ChatSession, ChatStore, Connection, Inserted, NewMention, NewMessage, NotificationPage,
        Page, StoreError,
    },
    writer::MessageWriter,
};
use chrono::{DateTime, SubsecRound, Utc};
use platform::events::outbox::OutboxWaker;
use uuid::Uuid;

/// Why a chat operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A field from the client is not valid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller is not a member (or the conversation does not exist: same answer, so
    /// guessing ids reveals nothing).
    #[error("not a member of this conversation")]
    NotMember,
    /// No such room (rooms are public, so saying so reveals nothing).
    #[error("no such room")]
    NoSuchRoom,
    /// The message named is not in this conversation.
    #[error("no such message in this conversation")]
    NoSuchMessage,
    /// A search cursor of the right shape that this search did not make (another
    /// search's, or altered): it names no page.
    #[error("no such page of this search: start again from the first page")]
    NoSuchCursor,
    /// A room with that name exists.
    #[error("a room with that name already exists")]
    NameTaken,
    /// A direct conversation with oneself.
    #[error("a direct conversation needs another user")]
    WithSelf,
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// Only the message's sender (or, to delete, a moderator) may do that.
    #[error("only the sender of a message may do that")]
    NotAuthor,
    /// The message is deleted: nothing can be done to a tombstone.
    #[error("the message is deleted")]
    MessageDeleted,
    /// A message names an attachment that is not the sender's own finished upload to
    /// this conversation, or one another message carries already.
    #[error(
        "attachment_ids: each must be one of your own uploads to this conversation that no message carries yet"
    )]
    AttachmentsRefused,
    /// No such attachment, or the caller may not see it (the same answer).
    #[error("no such attachment")]
    NoSuchAttachment,
    /// An upload refused for what it is or where it would go.
    #[error(transparent)]
    Upload(#[from] crate::attachments::UploadError),
}

/// The attachment ids of a send: at most [`MAX_ATTACHMENTS_PER_MESSAGE`], none twice.
fn check_attachment_ids(ids: &[Uuid]) -> Result<(), Invalid> {
    let unique: std::collections::HashSet<&Uuid> = ids.iter().collect();
    if ids.len() > MAX_ATTACHMENTS_PER_MESSAGE || unique.len() != ids.len() {
        return Err(Invalid {
            field: "attachment_ids",
            reason: "at most 10 attachments, each once",
        });
    }
    Ok(())
}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken => Self::NameTaken,
            other => Self::Store(other),
        }
    }
}

/// History page size bounds.
pub const MAX_PAGE: u32 = 100;
/// Most notification ids one call may mark read.
pub const MAX_NOTIFICATIONS_MARKED: usize = 100;
/// Most user ids one presence or session query may name.
const MAX_USERS_PER_QUERY: usize = 1000;

/// A page size from a client: 0 means `default`, 1..=`max` is taken as sent, more is
/// refused with `reason` (which states the bounds).
fn page_limit(raw: u32, default: u32, max: u32, reason: &'static str) -> Result<u32, Invalid> {
    match raw {
        0 => Ok(default),
        n if n <= max => Ok(n),
        _ => Err(Invalid {
            field: "limit",
            reason,
        }),
    }
}

/// Now, at the microsecond precision both databases keep.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A page request from a client.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    /// Newest messages older than this.
    pub before: Option<Uuid>,
    /// Oldest messages newer than this.
    pub after: Option<Uuid>,
    /// Page size, 1..=100 (0 means 50).
    pub limit: u32,
}

/// Conversations and everything in them.
pub struct Chat {
    store: ChatStore,
    writer: MessageWriter,
    live: LiveHub,
    outbox: OutboxWaker,
    files: Files,
}

impl Chat {
    /// Chat over a store, publishing to `live`, keeping files in `files`.
    pub fn new(store: ChatStore, live: LiveHub, files: Files) -> Self {
        let outbox = OutboxWaker::default();
        Self {
            writer: MessageWriter::start(store.clone(), outbox.clone()),
            store,
            live,
            outbox,
            files,
        }
    }

    /// Where files go, and their limits.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Wakes the outbox relay when a commit wrote events.
    pub fn outbox_waker(&self) -> &OutboxWaker {
        &self.outbox
    }

    /// The store (for readiness checks).
    pub fn store(&self) -> &ChatStore {
        &self.store
    }

    /// The live hub (for subscriptions).
    pub fn live(&self) -> &LiveHub {
        &self.live
    }

    fn membership_event(&self, conversation: Uuid, user: Uuid, joined: bool) {
        self.live.publish(LiveEvent::Membership {
            conversation,
            user,
            joined,
        });
    }

    async fn require_member(&self, conversation: Uuid, user: Uuid) -> Result<(), ChatError> {
        if self.store.is_member(conversation, user).await? {
            Ok(())
        } else {
            Err(ChatError::NotMember)
        }
    }

    async fn room(&self, id: Uuid) -> Result<Conversation, ChatError> {
        match self.store.conversation(id).await? {
            Some(conversation) if conversation.kind == Kind::Room => Ok(conversation),
            _ => Err(ChatError::NoSuchRoom),
        }
    }

    /// Creates a public room; the caller is its first member.
    pub async fn create_room(
        &self,
        caller: &UserRef,
        name: &str,
        topic: &str,
    ) -> Result<ConversationView, ChatError> {
        let conversation = Conversation {
            id: Uuid::now_v7(),
            kind: Kind::Room,
            name: RoomName::parse(name)?.as_str().to_owned(),
            topic: Topic::parse(topic)?.as_str().to_owned(),
            created_at: now(),
        };
        self.store.create_room(&conversation, caller).await?;
        self.membership_event(conversation.id, caller.id, true);
        tracing::info!(
            conversation_id = %conversation.id,
            name = %conversation.name,
            "room created"
        );
        Ok(ConversationView {
            conversation,
            member_count: 1,
            joined: true,
        })
    }

    /// Every public room, as the caller sees it.
    pub async fn rooms(&self, caller: &UserRef) -> Result<Vec<ConversationView>, ChatError> {
        Ok(self.store.rooms(caller.id).await?)
    }

    /// Joins a public room (joining twice is fine).
    pub async fn join_room(
        &self,
        caller: &UserRef,
        id: Uuid,
    ) -> Result<ConversationView, ChatError> {
        let conversation = self.room(id).await?;
        if self.store.join(id, caller, now()).await? {
            self.membership_event(id, caller.id, true);
        }
        let member_count = u32::try_from(self.store.members(id).await?.len()).unwrap_or(u32::MAX);
        Ok(ConversationView {
            conversation,
            member_count,
            joined: true,
        })
    }

    /// Leaves a public room (leaving twice is fine).
    pub async fn leave_room(&self, caller: &UserRef, id: Uuid) -> Result<(), ChatError> {
        self.room(id).await?;
        if self.store.leave(id, caller.id).await? {
            self.membership_event(id, caller.id, false);
        }
        Ok(())
    }

    /// The direct conversation of the caller and `peer`, created on first use.
    pub async fn open_direct(
        &self,
        caller: &UserRef,
        peer: &UserRef,
    ) -> Result<(Conversation, Vec<Member>), ChatError> {
        if caller.id == peer.id {
            return Err(ChatError::WithSelf);
        }
        let key = direct_key(caller.id, peer.id);
        let conversation = match self.store.direct_by_key(&key).await? {
            Some(existing) => existing,
            None => {
                let fresh = Conversation {
                    id: Uuid::now_v7(),
                    kind: Kind::Direct,
                    name: String::new(),
                    topic: String::new(),
                    created_at: now(),
                };
                let stored = self
                    .store
                    .create_direct(&fresh, &key, [caller, peer])
                    .await?;
                if stored.id == fresh.id {
                    self.membership_event(fresh.id, caller.id, true);
                    self.membership_event(fresh.id, peer.id, true);
                }
                stored
            }
        };
        let members = self.store.members(conversation.id).await?;
        Ok((conversation, members))
    }

    /// The caller's conversations.
    pub async fn conversations(
        &self,
        caller: &UserRef,
    ) -> Result<Vec<(ConversationView, Vec<Member>)>, ChatError> {
        let views = self.store.conversations_of(caller.id).await?;
        let mut listed = Vec::with_capacity(views.len());
        for view in views {
            let members = match view.conversation.kind {
                Kind::Direct => self.store.members(view.conversation.id).await?,
                Kind::Room => Vec::new(),
            };
            listed.push((view, members));
        }
        Ok(listed)
    }

    /// Stores and publishes a message from a member, with the caller's uploads
    /// `attachments` (their own, finished, unclaimed, to this conversation; the body may be
    /// empty when there are some).
    pub async fn send(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        body: &str,
        attachments: &[Uuid],
    ) -> Result<Message, ChatError> {
        check_attachment_ids(attachments)?;
        let body = if body.is_empty() && !attachments.is_empty() {
            String::new()
        } else {
            MessageBody::parse(body)?.as_str().to_owned()
        };
        let mut message = Message {
            id: Uuid::now_v7(),
            conversation_id: conversation,
            sender: caller.clone(),
            body,
            created_at: now(),
            edited_at: None,
            deleted_at: None,
            reactions: Vec::new(),
            attachments: Vec::new(),
        };
        let new = NewMessage {
            mentions: self.mentions_in(&message).await?,
            message: message.clone(),
            attachments: attachments.to_vec(),
        };
        let notifications = match self.writer.insert(new).await? {
            Inserted::Stored {
                notifications,
                attachments,
            } => {
                message.attachments = attachments;
                notifications
            }
            Inserted::NotMember => return Err(ChatError::NotMember),
            Inserted::AttachmentsRefused => return Err(ChatError::AttachmentsRefused),
        };
        metrics::counter!("chat_messages_total").increment(1);
        self.live.publish(LiveEvent::Message(message.clone()));
        for notification in notifications {
            self.live.publish(LiveEvent::Notification(notification));
        }
        Ok(message)
    }

    /// The members a new message mentions (never its sender), each with a notification
    /// and its `message.mentioned` event. Only a body with `@` costs a lookup.
    async fn mentions_in(&self, message: &Message) -> Result<Vec<NewMention>, ChatError> {
        let names = mentions::mentioned_names(&message.body);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let members = self
            .store
            .members_named(message.conversation_id, &names)
            .await?;
        Ok(members
            .into_iter()
            .filter(|member| member.id != message.sender.id)
            .map(|member| {
                let notification = Notification {
                    id: Uuid::now_v7(),
                    user_id: member.id,
                    message_id: message.id,
                    conversation_id: message.conversation_id,
                    conversation_name: String::new(),
                    sender: message.sender.clone(),
                    snippet: mentions::snippet(&message.body),
                    created_at: message.created_at,
                    read_at: None,
                };
                let event = events::message_mentioned(message, &notification, &member);
                NewMention {
                    notification,
                    event,
                }
            })
            .collect())
    }

    /// A page of history, for members only. Also returns whether more lie beyond.
    pub async fn history(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        query: HistoryQuery,
    ) -> Result<(Vec<Message>, bool), ChatError> {
        let limit = page_limit(query.limit, 50, MAX_PAGE, "must be 1 to 100")?;
        let page = match (query.before, query.after) {
            (before, None) => Page::Before(before),
            (before, Some(after)) => Page::After { after, before },
        };
        self.require_member(conversation, caller.id).await?;
        let mut messages = self.store.messages(conversation, page, limit + 1).await?;
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        self.with_reactions(caller.id, &mut messages).await?;
        self.with_attachments(&mut messages).await?;
        Ok((messages, more))
    }

    /// Moves the caller's read marker forward and tells the other members; returns the
    /// marker and the caller's unread messages left in the conversation.
    pub async fn mark_read(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        up_to: Uuid,
    ) -> Result<(Option<Uuid>, u32), ChatError> {
        self.require_member(conversation, caller.id).await?;
        if !self.store.has_message(conversation, up_to).await? {
            return Err(ChatError::NoSuchMessage);
        }
        let marker = self.store.mark_read(conversation, caller.id, up_to).await?;
        let unread = self.store.unread_count(conversation, caller.id).await?;
        if let Some(marker) = marker {
            self.live.publish(LiveEvent::Read {
                conversation,
                user: caller.id,
                up_to: marker,
                unread_count: unread,
            });
        }
        Ok((marker, unread))
    }

    /// Tells the other members that the caller is typing.
    pub async fn typing(&self, caller: &UserRef, conversation: Uuid) -> Result<(), ChatError> {
        self.require_member(conversation, caller.id).await?;
        self.live.publish(LiveEvent::Typing {
            conversation,
            user: caller.clone(),
        });
        Ok(())
    }

    /// Records an open socket; announces the user coming online.
    pub async fn open_connection(
        &self,
        caller: &UserRef,
        id: Uuid,
        broker_id: &str,
    ) -> Result<Presence, ChatError> {
        let connection = Connection {
            id,
            user: caller.clone(),
            broker_id: broker_id.to_owned(),
            opened_at: now(),
        };
        let presence = self.store.open_connection(&connection).await?;
        if presence.connections == 1 {
            let conversations = self.store.membership_ids(caller.id).await?;
            self.live.publish(LiveEvent::Presence {
                presence: presence.clone(),
                conversations,
            });
        }
        Ok(presence)
    }

    /// Forgets a closed socket; announces the user going offline with their last one.
    pub async fn close_connection(&self, id: Uuid) -> Result<Option<Presence>, ChatError> {
        let presence = self.store.close_connection(id, now()).await?;
        if let Some(presence) = presence
            .as_ref()
            .filter(|presence| presence.connections == 0)
        {
            self.announce_offline(presence).await?;
        }
        Ok(presence)
    }

    async fn announce_offline(&self, presence: &Presence) -> Result<(), ChatError> {
        let conversations = self.store.membership_ids(presence.user.id).await?;
        self.live.publish(LiveEvent::Presence {
            presence: presence.clone(),
            conversations,
        });
        Ok(())
    }

    /// Records that these brokers follow this instance's live stream now.
    pub async fn brokers_seen(&self, brokers: &[String]) -> Result<(), ChatError> {
        Ok(self.store.touch_brokers(brokers, now()).await?)
    }

    /// Forgets the sockets of a broker whose live stream ended, unless some instance
    /// has seen it since `since` (it follows another chat instance now). True if forgotten.
    pub async fn forget_broker_unless_seen(
        &self,
        broker_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, ChatError> {
        if self.store.broker_seen_since(broker_id, since).await? {
            return Ok(false);
        }
        self.forget_broker(broker_id).await?;
        Ok(true)
    }

    /// Forgets the sockets of every broker no instance has seen since `since` (a broker
    /// that died together with the chat instance it followed); returns how many.
    pub async fn forget_unseen_brokers(&self, since: DateTime<Utc>) -> Result<usize, ChatError> {
        let gone = self.store.unseen_brokers(since).await?;
        for broker_id in &gone {
            tracing::info!(
                %broker_id,
                "broker not seen by any chat instance; forgetting its sockets"
            );
            self.forget_broker(broker_id).await?;
        }
        Ok(gone.len())
    }

    /// Forgets every socket of a broker that went away.
    pub async fn forget_broker(&self, broker_id: &str) -> Result<(), ChatError> {
        for presence in self.store.reset_broker(broker_id, &[], now()).await? {
            if presence.connections == 0 {
                self.announce_offline(&presence).await?;
            }
        }
        Ok(())
    }

    /// Presence of the given users (everyone online when empty).
    pub async fn presence(&self, users: &[Uuid]) -> Result<Vec<Presence>, ChatError> {
        if users.len() > MAX_USERS_PER_QUERY {
            return Err(Invalid {
                field: "user_ids",
                reason: "at most 1000 at a time",
            }
            .into());
        }
        Ok(self.store.presence(users).await?)
    }

    /// Conversation ids of a user.
    pub async fn memberships(&self, user: Uuid) -> Result<Vec<Uuid>, ChatError> {
        Ok(self.store.membership_ids(user).await?)
    }

    /// Removes a user's private conversations, memberships and presence (idempotent).
    pub async fn delete_user_data(&self, user: Uuid) -> Result<u32, ChatError> {
        let mut gone = Vec::new();
        let mut left = Vec::new();
        for id in self.store.membership_ids(user).await? {
            match self.store.conversation(id).await? {
                Some(conversation) if conversation.kind == Kind::Direct => gone.push(id),
                Some(_) => left.push(id),
                None => {}
            }
        }
        let deleted = self.store.delete_user_data(user).await?;
        for id in gone {
            self.live
                .publish(LiveEvent::ConversationDeleted { conversation: id });
        }
        for id in left {
            self.membership_event(id, user, false);
        }
        tracing::info!(user_id = %user, conversations_deleted = deleted, "user data deleted");
        Ok(deleted)
    }

    /// Records a login session (from a `user.logged_in` event); idempotent.
    pub async fn start_chat_session(&self, session: &ChatSession) -> Result<bool, ChatError> {
        let started = self.store.start_chat_session(session).await?;
        if started {
            tracing::info!(
                user_id = %session.user.id,
                session_id = %session.session_id,
                "chat session started"
            );
        }
        Ok(started)
    }

    /// Records the end of a login session (from a `user.logged_out` event); idempotent.
    pub async fn end_chat_session(
        &self,
        session_id: Uuid,
        user: &UserRef,
        at: DateTime<Utc>,
    ) -> Result<bool, ChatError> {
        let ended = self.store.end_chat_session(session_id, user, at).await?;
        if ended {
            tracing::info!(user_id = %user.id, session_id = %session_id, "chat session ended");
        }
        Ok(ended)
    }

    /// Forgets every session of a deleted user; idempotent.
    pub async fn forget_chat_sessions(&self, user: Uuid) -> Result<u32, ChatError> {
        Ok(self.store.forget_chat_sessions(user).await?)
    }

    /// Sessions open now (not ended, not expired) of the given users, or of everyone.
    pub async fn open_chat_sessions(&self, users: &[Uuid]) -> Result<Vec<ChatSession>, ChatError> {
        if users.len() > MAX_USERS_PER_QUERY {
            return Err(Invalid {
                field: "user_ids",
                reason: "at most 1000 at a time",
            }
            .into());
        }
        let now = now();
        let mut sessions = self.store.open_chat_sessions(users).await?;
        sessions.retain(|session| session.expires_at.is_none_or(|expires| expires > now));
        Ok(sessions)
    }

    /// The caller's unread messages in each of their conversations (capped, see
    /// [`crate::store::UNREAD_CAP`]), in one query.
    pub async fn unread_counts(
        &self,
        caller: &UserRef,
    ) -> Result<std::collections::HashMap<Uuid, u32>, ChatError> {
        Ok(self
            .store
            .unread_counts(caller.id)
            .await?
            .into_iter()
            .collect())
    }

    /// A page of the caller's notifications, newest first, whether more lie beyond, and
    /// how many are unread.
    pub async fn notifications(
        &self,
        caller: &UserRef,
        unread_only: bool,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<Notification>, bool, u32), ChatError> {
        let limit = page_limit(limit, 50, MAX_PAGE, "must be 1 to 100")?;
        let page = NotificationPage {
            unread_only,
            before,
            limit: limit + 1,
        };
        let mut listed = self.store.notifications(caller.id, page).await?;
        let more = listed.len() > limit as usize;
        listed.truncate(limit as usize);
        let unread = self.store.unread_notifications(caller.id).await?;
        Ok((listed, more, unread))
    }

    /// Marks the caller's notifications read (those of `ids`, or all); ids of other
    /// users' notifications change nothing. Returns how many moved, and how many unread
    /// are left.
    pub async fn mark_notifications_read(
        &self,
        caller: &UserRef,
        ids: Option<&[Uuid]>,
    ) -> Result<(u32, u32), ChatError> {
        if ids.is_some_and(|ids| ids.len() > MAX_NOTIFICATIONS_MARKED) {
            return Err(Invalid {
                field: "ids",
                reason: "at most 100 at a time",
            }
            .into());
        }
        let marked = self
            .store
            .mark_notifications_read(caller.id, ids, now())
            .await?;
        let unread = self.store.unread_notifications(caller.id).await?;
        Ok((marked, unread))
    }

    /// Searches the messages of the caller's conversations (or of one of them, for its
    /// members only); returns a page of hits and the cursor of the next one, if any.
    pub async fn search(
        &self,
        caller: &UserRef,
        request: &SearchRequest,
    ) -> Result<(Vec<SearchHit>, Option<String>), ChatError> {
        let text = SearchText::parse(&request.text)?;
        let limit = page_limit(request.limit, 20, MAX_SEARCH_PAGE, "must be 1 to 50")?;
        let cursor = match request.cursor.as_str() {
            "" => None,
            raw => Some(
                SearchCursor::decode(raw, &text, request.conversation).map_err(|refused| {
                    match refused {
                        CursorRefused::Malformed(invalid) => ChatError::Invalid(invalid),
                        CursorRefused::Foreign => ChatError::NoSuchCursor,
                    }
                })?,
            ),
        };
        if let Some(conversation) = request.conversation {
            self.require_member(conversation, caller.id).await?;
        }
        let snapshot = cursor.map_or_else(|| search::snapshot_at(now()), |c| c.snapshot);
        let query = SearchQuery {
            user: caller.id,
            text,
            conversation: request.conversation,
            snapshot,
            offset: cursor.map_or(0, |cursor| cursor.offset),
            limit: limit + 1,
            window: search::SEARCH_WINDOW,
        };
        let mut hits = self.store.search_messages(&query).await?;
        let next = if hits.len() > limit as usize {
            hits.truncate(limit as usize);
            let next = SearchCursor {
                snapshot,
                offset: query.offset + limit,
            };
            Some(next.encode(&query.text, request.conversation))
        } else {
            None
        };
        Ok((hits, next))
    }
}

/// Most search hits per page.
pub const MAX_SEARCH_PAGE: u32 = 50;

/// A search from a client.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// The words (see [`SearchText`]).
    pub text: String,
    /// Only this conversation, when given.
    pub conversation: Option<Uuid>,
    /// The previous page's `next_cursor`, or empty for the first page.
    pub cursor: String,
    /// Page size, 1..=50 (0 means 20).
    pub limit: u32,
}
