//! Chat types and the rules for valid values. Constructors validate, so an invalid room
//! name or message body cannot exist past the gRPC edge. No I/O here.

use crate::mentions::Notification;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why a value from a client was refused; `field` names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending field, as the API names it.
    pub field: &'static str,
    /// What a valid value looks like.
    pub reason: &'static str,
}

/// A room name: 2–32 of `a-z 0-9 _ -`, stored lowercase (an optional leading `#` is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomName(String);

impl RoomName {
    /// Checks length and alphabet after trimming, folding case and dropping a leading `#`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = Invalid {
            field: "name",
            reason: "must be 2 to 32 characters of a-z, 0-9, '_' and '-'",
        };
        let trimmed = raw.trim();
        let trimmed = trimmed.strip_prefix('#').unwrap_or(trimmed);
        if !(2..=32).contains(&trimmed.len()) || !trimmed.is_ascii() {
            return Err(invalid);
        }
        let name = trimmed.to_ascii_lowercase();
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(invalid);
        }
        Ok(Self(name))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room topic: at most 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topic(String);

impl Topic {
    /// Checks length and characters of the topic as sent, then trims it: the rule is the
    /// one the OpenAPI document states (at most 200 characters, none a control character).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let topic = raw.trim();
        if raw.len() > 800 || raw.chars().count() > 200 || raw.chars().any(char::is_control) {
            return Err(Invalid {
                field: "topic",
                reason: "must be at most 200 characters, on one line",
            });
        }
        Ok(Self(topic.to_owned()))
    }

    /// The topic as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message body: 1–4,000 characters, not only white space, no control characters other
/// than newlines and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Longest body, in characters.
    pub const MAX_CHARS: usize = 4_000;

    /// Checks length and characters; keeps the text as sent (no trimming inside).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = Invalid {
            field: "body",
            reason: "must be 1 to 4000 characters of text",
        };
        if raw.len() > Self::MAX_CHARS * 4 || raw.trim().is_empty() {
            return Err(invalid);
        }
        let mut count = 0;
        for c in raw.chars() {
            count += 1;
            if count > Self::MAX_CHARS || (c.is_control() && c != '\n' && c != '\t') {
                return Err(invalid);
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The body as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The author shown on messages of a deleted account (not a valid username, so it
/// never names a real one).
pub const DELETED_USER_NAME: &str = "deleted user";

/// A user as chat knows them: id and username, both given by the broker from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// The user id.
    pub id: Uuid,
    /// The username (immutable in microchat, so chat may keep a copy).
    pub username: String,
}

/// A public room or a 1:1 conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Public, anyone may join.
    Room,
    /// Exactly two members, created by either.
    Direct,
}

impl Kind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Direct => "direct",
        }
    }

    /// Reads the stored form.
    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "room" => Some(Self::Room),
            "direct" => Some(Self::Direct),
            _ => None,
        }
    }
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// UUIDv7.
    pub id: Uuid,
    /// Room or direct.
    pub kind: Kind,
    /// Room name; empty for direct conversations.
    pub name: String,
    /// Room topic; empty for direct conversations.
    pub topic: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A conversation as one user sees it in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    /// The conversation.
    pub conversation: Conversation,
    /// How many members it has.
    pub member_count: u32,
    /// Whether the viewer is a member.
    pub joined: bool,
}

/// A member of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who.
    pub user: UserRef,
    /// The last message they have read.
    pub last_read_id: Option<Uuid>,
}

/// A message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// UUIDv7: time-ordered, so it is also the pagination cursor.
    pub id: Uuid,
    /// Where it was sent.
    pub conversation_id: Uuid,
    /// Who sent it.
    pub sender: UserRef,
    /// What it says.
    pub body: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When its body was last edited, if ever.
    pub edited_at: Option<DateTime<Utc>>,
    /// When it was deleted (a tombstone: empty body, no reactions), if it was.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Its reactions as one viewer sees them, in the order first given (history fills
    /// them in; empty elsewhere).
    pub reactions: Vec<Reaction>,
    /// The files it carries, in the order the sender gave them (none on a tombstone).
    pub attachments: Vec<Attachment>,
}

/// A file in a conversation, as messages and uploads show it (docs/ARCHITECTURE.md,
/// "Attachments").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// UUIDv7; its objects' keys are made from it.
    pub id: Uuid,
    /// The conversation it was uploaded to (only its members may read it).
    pub conversation_id: Uuid,
    /// Who uploaded it.
    pub uploader_id: Uuid,
    /// Sanitised file name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed from its bytes.
    pub content_type: String,
    /// Width and height of an image (PNG, JPEG, GIF, WebP); `None` for anything else.
    pub dimensions: Option<(u32, u32)>,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
}

impl Attachment {
    /// Whether it is an image pages show inline, with a thumbnail.
    pub fn is_image(&self) -> bool {
        self.dimensions.is_some()
    }
}

/// The most attachments one message carries.
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 10;

/// One emoji's reactions to a message, as one viewer sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The emoji, canonical.
    pub emoji: ReactionEmoji,
    /// How many users reacted with it.
    pub count: u32,
    /// Whether the viewer is one of them.
    pub me: bool,
}

/// An emoji a reaction may use: one of [`proto::chat::v1::REACTION_EMOJI`], kept in its
/// canonical spelling.
///
/// Variation selectors: an emoji like ❤️ is spelled U+2764 U+FE0F (fully qualified) or
/// bare U+2764, and keyboards send either. Both are accepted and stored canonical, so one
/// heart is one reaction whichever way it was typed. Nothing else is folded: a skin tone,
/// a zero-width joiner, a text-style selector (U+FE0E) or any extra code point makes a
/// different string that is not in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReactionEmoji(&'static str);

impl ReactionEmoji {
    /// The set's entry that `raw` spells, with or without U+FE0F after its one code point.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bare = |text: &str| text.strip_suffix('\u{fe0f}').unwrap_or(text).to_owned();
        // Longest entry: two code points (8 bytes); anything longer is not one.
        let candidate = (raw.len() <= 8).then(|| bare(raw));
        proto::chat::v1::REACTION_EMOJI
            .iter()
            .find(|emoji| candidate.as_deref() == Some(bare(emoji).as_str()))
            .map(|emoji| Self(emoji))
            .ok_or(Invalid {
                field: "emoji",
                reason: "must be one of the reaction emoji (GET /api/reactions)",
            })
    }

    /// The canonical spelling, as stored.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Who.
    pub user: UserRef,
    /// Open sockets over every broker; 0 means offline.
    pub connections: u32,
    /// Online since (online), or last seen (offline).
    pub since: DateTime<Utc>,
}

/// Something that happened that the members' sockets should see now, published on the
/// live channel ([`crate::live::LiveHub`]) once its state change has committed. Plain
/// chat types: the hub maps each to its wire form once, when it publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A new message.
    Message(Message),
    /// A message whose body was edited (its reactions are not repeated: they did not
    /// change).
    MessageEdited(Message),
    /// A message that became a tombstone.
    MessageDeleted(Message),
    /// A user came online (first socket) or went offline (last socket).
    Presence {
        /// Their presence now.
        presence: Presence,
        /// Their conversations: the members of these are the ones to tell.
        conversations: Vec<Uuid>,
    },
    /// A user joined or left a conversation.
    Membership {
        /// Which conversation.
        conversation: Uuid,
        /// Who.
        user: Uuid,
        /// Joined (true) or left (false).
        joined: bool,
    },
    /// A member moved their read marker.
    Read {
        /// Which conversation.
        conversation: Uuid,
        /// Who read.
        user: Uuid,
        /// The last message they have read now.
        up_to: Uuid,
        /// Their messages still unread in the conversation after it.
        unread_count: u32,
    },
    /// A member is typing.
    Typing {
        /// Where.
        conversation: Uuid,
        /// Who.
        user: UserRef,
    },
    /// A direct conversation is gone (one of its members deleted their data).
    ConversationDeleted {
        /// Which one.
        conversation: Uuid,
    },
    /// A user added or removed a reaction to a message.
    Reaction {
        /// Where the message is.
        conversation: Uuid,
        /// The message.
        message: Uuid,
        /// The emoji.
        emoji: ReactionEmoji,
        /// How many users react with it now.
        count: u32,
        /// Who reacted.
        user: Uuid,
        /// Added (true) or removed (false).
        added: bool,
    },
    /// Someone mentioned a user: for that user's sockets only.
    Notification(Notification),
}

/// The key that makes a direct conversation unique: both ids, smaller first.
pub fn direct_key(a: Uuid, b: Uuid) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("{}:{}", low.simple(), high.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_folded_and_checked() {
        assert_eq!(
            RoomName::parse(" #General ").map(|n| n.0),
            Ok("general".to_owned())
        );
        for bad in ["a", "#", "with space", "caf\u{e9}", &"x".repeat(33)] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_printable() {
        assert!(MessageBody::parse("hello\nworld\t!").is_ok());
        assert!(MessageBody::parse(&"é".repeat(4_000)).is_ok());
        for bad in [
            "",
            "   \n",
            "bell\u{7}",
            &"x".repeat(4_001),
            &"x".repeat(1_000_000),
        ] {
            assert!(
                MessageBody::parse(bad).is_err(),
                "{:?}",
                &bad[..bad.len().min(20)]
            );
        }
    }

    #[test]
    fn topics_are_one_short_line() {
        assert!(Topic::parse("Everything about Rust").is_ok());
        assert!(Topic::parse("two\nlines").is_err());
        assert!(Topic::parse(&"t".repeat(201)).is_err());
        // The rule holds for the topic as sent: a trailing newline is no loophole.
        assert!(Topic::parse("one line\n").is_err());
        assert!(Topic::parse(&format!(" {}", "t".repeat(200))).is_err());
        assert_eq!(
            Topic::parse("  spaced  ").map(|t| t.0),
            Ok("spaced".to_owned())
        );
    }

    #[test]
    fn reaction_emoji_are_the_bounded_set_with_or_without_the_selector() {
        let heart = ReactionEmoji::parse("\u{2764}\u{fe0f}").expect("the heart");
        assert_eq!(
            ReactionEmoji::parse("\u{2764}"),
            Ok(heart),
            "bare heart folds"
        );
        assert_eq!(heart.as_str(), "\u{2764}\u{fe0f}");
        let thumbs = ReactionEmoji::parse("\u{1f44d}").expect("thumbs up");
        assert_eq!(ReactionEmoji::parse("\u{1f44d}\u{fe0f}"), Ok(thumbs));
        for bad in [
            "",
            "x",
            ":+1:",
            "\u{1f44d}\u{1f3fd}",         // skin tone
            "\u{2764}\u{fe0e}",           // text style
            "\u{1f44d}\u{fe0f}\u{fe0f}",  // two selectors
            "\u{1f44d}\u{200d}\u{1f44d}", // joined
            "\u{1f44d}\u{1f44d}",
            " \u{1f44d}",
            "\u{fe0f}",
            "\u{1f9a9}", // flamingo: an emoji, not in the set
        ] {
            assert!(ReactionEmoji::parse(bad).is_err(), "{bad:?}");
        }
        for emoji in proto::chat::v1::REACTION_EMOJI {
            assert_eq!(
                ReactionEmoji::parse(emoji).map(ReactionEmoji::as_str),
                Ok(*emoji)
            );
            let points = emoji.chars().count();
            assert!(
                points == 1 || (points == 2 && emoji.ends_with('\u{fe0f}')),
                "{emoji:?} is one code point, or one and U+FE0F"
            );
        }
        let distinct: std::collections::HashSet<_> =
            proto::chat::v1::REACTION_EMOJI.iter().collect();
        assert_eq!(distinct.len(), proto::chat::v1::REACTION_EMOJI.len());
    }

    #[test]
    fn direct_keys_ignore_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(direct_key(a, b), direct_key(b, a));
        assert_ne!(direct_key(a, b), direct_key(a, a));
    }
}
