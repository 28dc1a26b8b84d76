//! Chat's types in their wire form (`microchat.chat.v1`): the one place that maps the
//! domain to protobuf, used by the gRPC edge for its answers and by the live hub for the
//! events it fans out. Knows the types only, never the services, so the core and the
//! edge both depend on it and not on each other.
//!
//! Conversions take their value: callers hand over what they built (or a clone, when
//! they keep it), and the strings move into the message instead of being copied again.

use crate::{
    domain::{Conversation, ConversationView, Kind, LiveEvent, Member, Message, Presence},
    mentions::Notification,
    search::SearchHit,
    store::ChatSession,
};
use platform::grpc::timestamp;
use proto::chat::v1::{self as pb, live_event::Event};
use uuid::Uuid;

impl From<Message> for pb::Message {
    fn from(message: Message) -> Self {
        Self {
            id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            sender_id: message.sender.id.to_string(),
            sender_name: message.sender.username,
            body: message.body,
            created_at: Some(timestamp(message.created_at)),
            edited_at: message.edited_at.map(timestamp),
            deleted_at: message.deleted_at.map(timestamp),
            reactions: message
                .reactions
                .into_iter()
                .map(|reaction| pb::Reaction {
                    emoji: reaction.emoji.as_str().to_owned(),
                    count: reaction.count,
                    me: reaction.me,
                })
                .collect(),
            attachments: message
                .attachments
                .into_iter()
                .map(pb::Attachment::from)
                .collect(),
        }
    }
}

impl From<crate::domain::Attachment> for pb::Attachment {
    fn from(attachment: crate::domain::Attachment) -> Self {
        let (width, height) = attachment.dimensions.unwrap_or((0, 0));
        Self {
            id: attachment.id.to_string(),
            conversation_id: attachment.conversation_id.to_string(),
            uploader_id: attachment.uploader_id.to_string(),
            image: attachment.dimensions.is_some(),
            name: attachment.name,
            size: attachment.size,
            content_type: attachment.content_type,
            width,
            height,
            created_at: Some(timestamp(attachment.created_at)),
        }
    }
}

impl From<Notification> for pb::Notification {
    fn from(notification: Notification) -> Self {
        Self {
            id: notification.id.to_string(),
            user_id: notification.user_id.to_string(),
            message_id: notification.message_id.to_string(),
            conversation_id: notification.conversation_id.to_string(),
            conversation_name: notification.conversation_name,
            sender_id: notification.sender.id.to_string(),
            sender_name: notification.sender.username,
            snippet: notification.snippet,
            created_at: Some(timestamp(notification.created_at)),
            read_at: notification.read_at.map(timestamp),
        }
    }
}

impl From<Presence> for pb::Presence {
    fn from(presence: Presence) -> Self {
        Self {
            user_id: presence.user.id.to_string(),
            username: presence.user.username,
            online: presence.connections > 0,
            connections: presence.connections,
            since: Some(timestamp(presence.since)),
        }
    }
}

impl From<Member> for pb::Member {
    fn from(member: Member) -> Self {
        Self {
            user_id: member.user.id.to_string(),
            username: member.user.username,
            last_read_id: member
                .last_read_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
        }
    }
}

impl From<Kind> for pb::ConversationKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Room => Self::Room,
            Kind::Direct => Self::Direct,
        }
    }
}

/// A conversation with what the caller sees of it: its member count, whether they
/// joined, the members listed (none unless asked for). Its unread count is 0: only a
/// listing of the caller's conversations fills it in.
pub fn conversation(
    conversation: Conversation,
    member_count: u32,
    joined: bool,
    members: Vec<Member>,
) -> pb::Conversation {
    pb::Conversation {
        id: conversation.id.to_string(),
        kind: pb::ConversationKind::from(conversation.kind) as i32,
        name: conversation.name,
        topic: conversation.topic,
        created_at: Some(timestamp(conversation.created_at)),
        member_count,
        joined,
        members: members.into_iter().map(pb::Member::from).collect(),
        unread_count: 0,
    }
}

/// A conversation as a listing shows it, with the members listed.
pub fn conversation_view(view: ConversationView, members: Vec<Member>) -> pb::Conversation {
    conversation(view.conversation, view.member_count, view.joined, members)
}

impl From<ChatSession> for pb::ChatSession {
    fn from(session: ChatSession) -> Self {
        Self {
            session_id: session.session_id.to_string(),
            user: Some(pb::Caller {
                user_id: session.user.id.to_string(),
                username: session.user.username,
            }),
            started_at: Some(timestamp(session.started_at)),
            expires_at: session.expires_at.map(timestamp),
            client_ip: session.client_ip,
            user_agent: session.user_agent,
        }
    }
}

impl From<SearchHit> for pb::SearchHit {
    fn from(hit: SearchHit) -> Self {
        Self {
            message: Some(hit.message.into()),
            conversation_kind: pb::ConversationKind::from(hit.conversation_kind) as i32,
            conversation_name: hit.conversation_name,
            snippet: hit.snippet.text,
            highlights: hit
                .snippet
                .highlights
                .into_iter()
                .map(|range| pb::HighlightRange {
                    start: range.start,
                    end: range.end,
                })
                .collect(),
        }
    }
}

impl From<LiveEvent> for pb::LiveEvent {
    fn from(event: LiveEvent) -> Self {
        let event = match event {
            LiveEvent::Message(message) => Event::Message(message.into()),
            LiveEvent::MessageEdited(message) => Event::MessageEdited(message.into()),
            LiveEvent::MessageDeleted(message) => Event::MessageDeleted(message.into()),
            LiveEvent::Presence {
                presence,
                conversations,
            } => Event::Presence(pb::PresenceChanged {
                presence: Some(presence.into()),
                conversation_ids: conversations.iter().map(Uuid::to_string).collect(),
            }),
            LiveEvent::Membership {
                conversation,
                user,
                joined,
            } => Event::Membership(pb::MembershipChanged {
                conversation_id: conversation.to_string(),
                user_id: user.to_string(),
                joined,
            }),
            LiveEvent::Read {
                conversation,
                user,
                up_to,
                unread_count,
            } => Event::Read(pb::ReadReceipt {
                conversation_id: conversation.to_string(),
                user_id: user.to_string(),
                up_to: up_to.to_string(),
                unread_count,
            }),
            LiveEvent::Typing { conversation, user } => Event::Typing(pb::Typing {
                conversation_id: conversation.to_string(),
                user_id: user.id.to_string(),
                username: user.username,
            }),
            LiveEvent::ConversationDeleted { conversation } => {
                Event::ConversationDeleted(pb::ConversationDeleted {
                    conversation_id: conversation.to_string(),
                })
            }
            LiveEvent::Reaction {
                conversation,
                message,
                emoji,
                count,
                user,
                added,
            } => Event::Reaction(pb::ReactionChanged {
                conversation_id: conversation.to_string(),
                message_id: message.to_string(),
                emoji: emoji.as_str().to_owned(),
                count,
                user_id: user.to_string(),
                added,
            }),
            LiveEvent::Notification(notification) => Event::Notification(notification.into()),
        };
        Self { event: Some(event) }
    }
}

/// The live event that tells a broker it may have missed events and should resync (it
/// fell behind, or the instances' link broke): the hub's and the stream's own, no
/// domain event.
pub fn resync() -> pb::LiveEvent {
    pb::LiveEvent {
        event: Some(Event::Resync(true)),
    }
}
