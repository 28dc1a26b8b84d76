//! Edits, deletes and reactions: what a member may do to a message once it is sent. The
//! sender alone edits; the sender or a moderator deletes (the message becomes a
//! tombstone); any member reacts with one of a bounded set of emoji. A non-member gets
//! the answer a missing message gets, so guessing ids reveals nothing. Edits and deletes
//! commit with their durable events (the audit trail); all three are published live.

use crate::{
    conversations::{Chat, ChatError, now},
    domain::{Attachment, LiveEvent, Message, MessageBody, ReactionEmoji, UserRef},
    events,
    store::{Deleted, Edited, Reacted},
};
use uuid::Uuid;

/// A reaction after a change: its emoji, how many react with it, whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionCount {
    /// The emoji, canonical.
    pub emoji: ReactionEmoji,
    /// How many users react with it now.
    pub count: u32,
    /// False when the caller's reaction was already so.
    pub changed: bool,
}

/// The ids of the messages that are not tombstones (a tombstone has no reactions and no
/// files).
fn living(messages: &[Message]) -> Vec<Uuid> {
    messages
        .iter()
        .filter(|message| message.deleted_at.is_none())
        .map(|message| message.id)
        .collect()
}

impl Chat {
    /// A member's way to a message: anyone else is told there is no such message.
    async fn require_member_for_message(
        &self,
        conversation: Uuid,
        user: Uuid,
    ) -> Result<(), ChatError> {
        if self.store().is_member(conversation, user).await? {
            Ok(())
        } else {
            Err(ChatError::NoSuchMessage)
        }
    }

    /// Fills in the reactions of `messages` as `viewer` sees them, in one query.
    pub(crate) async fn with_reactions(
        &self,
        viewer: Uuid,
        messages: &mut [Message],
    ) -> Result<(), ChatError> {
        let ids = living(messages);
        if ids.is_empty() {
            return Ok(());
        }
        let mut reactions = self.store().reactions(&ids, viewer).await?.into_iter();
        let mut next = reactions.next();
        // Both come back in id order (the page either way round): match them up by id.
        let mut by_id: Vec<&mut Message> = messages.iter_mut().collect();
        by_id.sort_by_key(|message| message.id);
        for message in by_id {
            while let Some((id, reaction)) = next.take_if(|(id, _)| *id <= message.id) {
                if id == message.id {
                    message.reactions.push(reaction);
                }
                next = reactions.next();
            }
        }
        Ok(())
    }

    /// Fills in the attachments of `messages`, in one query.
    pub(crate) async fn with_attachments(&self, messages: &mut [Message]) -> Result<(), ChatError> {
        let ids = living(messages);
        if ids.is_empty() {
            return Ok(());
        }
        let mut by_message: std::collections::HashMap<Uuid, Vec<Attachment>> =
            std::collections::HashMap::new();
        for (message, attachment) in self.store().attachments_of(&ids).await? {
            by_message.entry(message).or_default().push(attachment);
        }
        for message in messages.iter_mut() {
            if let Some(attachments) = by_message.remove(&message.id) {
                message.attachments = attachments;
            }
        }
        Ok(())
    }

    /// Replaces the body of the caller's own message and tells the members.
    pub async fn edit(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        id: Uuid,
        body: &str,
    ) -> Result<Message, ChatError> {
        let body = MessageBody::parse(body)?;
        self.require_member_for_message(conversation, caller.id)
            .await?;
        let at = now();
        let event = events::message_edited(conversation, id, caller.id, body.as_str(), at);
        let edited = self
            .store()
            .edit_message(conversation, id, caller.id, body.as_str(), at, &event)
            .await?;
        let mut message = match edited {
            Edited::Done(message) => message,
            Edited::Missing => return Err(ChatError::NoSuchMessage),
            Edited::NotAuthor => return Err(ChatError::NotAuthor),
            Edited::Deleted => return Err(ChatError::MessageDeleted),
        };
        self.outbox_waker().wake();
        // The edit's frame replaces the message on the pages: with its files.
        self.with_attachments(std::slice::from_mut(&mut message))
            .await?;
        self.live()
            .publish(LiveEvent::MessageEdited(message.clone()));
        tracing::info!(message_id = %id, conversation_id = %conversation, "message edited");
        self.with_reactions(caller.id, std::slice::from_mut(&mut message))
            .await?;
        Ok(message)
    }

    /// Makes a message a tombstone, by its sender or (`moderator`) anyone the broker says
    /// moderates, and tells the members. False when it was one already.
    pub async fn delete(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        id: Uuid,
        moderator: bool,
    ) -> Result<bool, ChatError> {
        self.require_member_for_message(conversation, caller.id)
            .await?;
        let at = now();
        let event = |message: &Message| events::message_deleted(message, caller.id, at);
        let deleted = self
            .store()
            .delete_message(conversation, id, caller.id, moderator, at, &event)
            .await?;
        match deleted {
            Deleted::Done(message) => {
                self.outbox_waker().wake();
                let by_moderator = message.sender.id != caller.id;
                self.live().publish(LiveEvent::MessageDeleted(message));
                tracing::info!(
                    message_id = %id,
                    conversation_id = %conversation,
                    by_moderator,
                    "message deleted"
                );
                Ok(true)
            }
            Deleted::Already(_) => Ok(false),
            Deleted::Missing => Err(ChatError::NoSuchMessage),
            Deleted::NotAuthor => Err(ChatError::NotAuthor),
        }
    }

    /// Adds (`add`) or removes the caller's reaction to a message and tells the members.
    pub async fn react(
        &self,
        caller: &UserRef,
        conversation: Uuid,
        id: Uuid,
        emoji: &str,
        add: bool,
    ) -> Result<ReactionCount, ChatError> {
        let emoji = ReactionEmoji::parse(emoji)?;
        self.require_member_for_message(conversation, caller.id)
            .await?;
        let reacted = self
            .store()
            .set_reaction(conversation, id, caller.id, emoji, add, now())
            .await?;
        let (changed, count) = match reacted {
            Reacted::Done { changed, count } => (changed, count),
            Reacted::Missing => return Err(ChatError::NoSuchMessage),
            Reacted::Deleted => return Err(ChatError::MessageDeleted),
        };
        if changed {
            self.live().publish(LiveEvent::Reaction {
                conversation,
                message: id,
                emoji,
                count,
                user: caller.id,
                added: add,
            });
        }
        Ok(ReactionCount {
            emoji,
            count,
            changed,
        })
    }
}
