//! The durable events chat writes to its outbox, in the same transaction as the change
//! they record, built from chat's types: the one place that knows their protobuf
//! payloads (`microchat.events.v1`), so the core calls these instead of filling them in.
//!
//! A message sent or read has no event: its row (or the read marker) is the record, no
//! service has work to do for it, and the audit trail is for security-relevant actions
//! (docs/ARCHITECTURE.md, "Events"). Mentions, edits and deletions have events.

use crate::{
    domain::{Message, UserRef},
    mentions::Notification,
};
use chrono::{DateTime, Utc};
use platform::events::Event as DurableEvent;
use proto::events::v1::{self as events, envelope::Payload};
use uuid::Uuid;

/// Who produces chat's durable events.
const PRODUCER: &str = "chat";

/// A body's length in characters, as the events report it (never the text itself).
fn body_chars(body: &str) -> u32 {
    u32::try_from(body.chars().count()).unwrap_or(u32::MAX)
}

/// `message.mentioned`: `message` mentions `mentioned`, who gets `notification`.
pub fn message_mentioned(
    message: &Message,
    notification: &Notification,
    mentioned: &UserRef,
) -> DurableEvent {
    DurableEvent::at(
        PRODUCER,
        Payload::MessageMentioned(events::MessageMentioned {
            notification_id: notification.id.to_string(),
            message_id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            sender_id: message.sender.id.to_string(),
            sender_name: message.sender.username.clone(),
            user_id: mentioned.id.to_string(),
            username: mentioned.username.clone(),
        }),
        message.created_at,
    )
}

/// `message.edited`: `editor` gave the message `id` of `conversation` a new `body` at `at`.
pub fn message_edited(
    conversation: Uuid,
    id: Uuid,
    editor: Uuid,
    body: &str,
    at: DateTime<Utc>,
) -> DurableEvent {
    DurableEvent::at(
        PRODUCER,
        Payload::MessageEdited(events::MessageEdited {
            message_id: id.to_string(),
            conversation_id: conversation.to_string(),
            editor_id: editor.to_string(),
            body_chars: body_chars(body),
        }),
        at,
    )
}

/// `message.deleted`: `deleted_by` made `message` a tombstone at `at` (as a moderator
/// when it is not the sender).
pub fn message_deleted(message: &Message, deleted_by: Uuid, at: DateTime<Utc>) -> DurableEvent {
    DurableEvent::at(
        PRODUCER,
        Payload::MessageDeleted(events::MessageDeleted {
            message_id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            sender_id: message.sender.id.to_string(),
            deleted_by: deleted_by.to_string(),
            moderator: message.sender.id != deleted_by,
        }),
        at,
    )
}

/// `attachment.removed`: the rows of attachments `ids` were deleted (`reason`: what
/// deleted them); their objects are the listener's to have deleted.
pub fn attachment_removed(ids: &[Uuid], reason: &str) -> DurableEvent {
    DurableEvent::new(
        PRODUCER,
        Payload::AttachmentRemoved(events::AttachmentRemoved {
            attachment_ids: ids.iter().map(Uuid::to_string).collect(),
            reason: reason.to_owned(),
        }),
    )
}
