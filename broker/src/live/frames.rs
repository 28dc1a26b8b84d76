//! WebSocket frames: JSON in (`send`, `typing`, `read`, `ping`, `edit`) and out (`message`,
//! `presence`, `typing`, `read`, `membership`, `conversation_deleted`, `resync`, `ack`,
//! `pong`, `error`, `message_edited`, `message_deleted`, `reaction`, `notification`), and the plain-text room protocol (`SEND <message>` in,
//! `FROM <user_id> <message>` out).

use chrono::{DateTime, Utc};
use proto::chat::v1 as pb;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A frame from a JSON socket.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Inbound {
    /// Send a message; `client_id` comes back in the `ack`.
    Send {
        /// Where.
        conversation_id: Uuid,
        /// What (may be empty when it carries attachments).
        body: String,
        /// The client's own id for the message, echoed in the ack (≤ 64 bytes).
        #[serde(default)]
        client_id: Option<String>,
        /// Files the user uploaded to this conversation (`POST
        /// /api/conversations/{id}/attachments`), at most 10.
        #[serde(default)]
        attachment_ids: Vec<Uuid>,
    },
    /// The user is typing.
    Typing {
        /// Where.
        conversation_id: Uuid,
    },
    /// Read receipt.
    Read {
        /// Where.
        conversation_id: Uuid,
        /// The newest message read.
        up_to: Uuid,
    },
    /// Keep-alive; answered with `pong`.
    Ping {
        /// Echoed back.
        #[serde(default)]
        id: Option<u64>,
    },
    /// Edit one of the user's own messages (as `PATCH .../messages/{id}`): the change
    /// comes back as a `message_edited` frame, a refusal as an `error` frame.
    Edit {
        /// Where.
        conversation_id: Uuid,
        /// Which message.
        message_id: Uuid,
        /// The new text.
        body: String,
    },
}

/// A message as frames and the REST API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// UUIDv7, time-ordered: also the history cursor.
    pub id: String,
    /// Where it was sent.
    pub conversation_id: String,
    /// Who sent it.
    pub sender_id: String,
    /// Their username.
    pub sender_name: String,
    /// The text (empty once deleted).
    pub body: String,
    /// When it was stored.
    pub created_at: Option<DateTime<Utc>>,
    /// When its body was last edited (absent if never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// When it was deleted (absent if not): a tombstone, with an empty body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Its reactions as the caller sees them, in the order first given (absent when none;
    /// live frames carry none: `reaction` frames carry the changes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false)]
    pub reactions: Vec<ReactionView>,
    /// The files it carries, in the order sent (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false)]
    pub attachments: Vec<AttachmentView>,
}

/// A file in a conversation, as frames and the REST API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    /// Its id.
    pub id: String,
    /// The file name (sanitised).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed from the bytes (the one the client declared is not trusted).
    pub content_type: String,
    /// Images (PNG, JPEG, GIF, WebP) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Images only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Where to download it (members of its conversation only).
    pub url: String,
    /// Images only: a preview at most 400 pixels a side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

impl From<&pb::Attachment> for AttachmentView {
    fn from(attachment: &pb::Attachment) -> Self {
        let url = format!("/api/attachments/{}", attachment.id);
        let image = attachment.image;
        Self {
            id: attachment.id.clone(),
            name: attachment.name.clone(),
            size: attachment.size,
            content_type: attachment.content_type.clone(),
            width: image.then_some(attachment.width),
            height: image.then_some(attachment.height),
            thumbnail_url: image.then(|| format!("{url}/thumbnail")),
            url,
        }
    }
}

/// One emoji's reactions to a message, as the caller sees them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReactionView {
    /// The emoji (one of `GET /api/reactions`).
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
    /// Whether the caller is one of them.
    pub me: bool,
}

/// Reads a protobuf timestamp.
pub fn time(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0)))
}

impl From<&pb::Message> for MessageView {
    fn from(message: &pb::Message) -> Self {
        Self {
            id: message.id.clone(),
            conversation_id: message.conversation_id.clone(),
            sender_id: message.sender_id.clone(),
            sender_name: message.sender_name.clone(),
            body: message.body.clone(),
            created_at: time(message.created_at.as_ref()),
            edited_at: time(message.edited_at.as_ref()),
            deleted_at: time(message.deleted_at.as_ref()),
            reactions: message
                .reactions
                .iter()
                .map(|reaction| ReactionView {
                    emoji: reaction.emoji.clone(),
                    count: reaction.count,
                    me: reaction.me,
                })
                .collect(),
            attachments: message
                .attachments
                .iter()
                .map(AttachmentView::from)
                .collect(),
        }
    }
}

/// An @mention of the user, as frames and the REST API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    /// UUIDv7: also the list's cursor.
    pub id: String,
    /// The message that mentions the user.
    pub message_id: String,
    /// Where.
    pub conversation_id: String,
    /// The room's name; absent for a direct conversation.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub conversation_name: String,
    /// Who mentioned them.
    pub sender_id: String,
    /// Their username.
    pub sender_name: String,
    /// The message's text (at most 200 characters), empty when the user may no longer
    /// read it (left the conversation, or the message was deleted).
    pub snippet: String,
    /// When.
    pub created_at: Option<DateTime<Utc>>,
    /// When the user marked it read; absent while unread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
}

impl From<&pb::Notification> for NotificationView {
    fn from(notification: &pb::Notification) -> Self {
        Self {
            id: notification.id.clone(),
            message_id: notification.message_id.clone(),
            conversation_id: notification.conversation_id.clone(),
            conversation_name: notification.conversation_name.clone(),
            sender_id: notification.sender_id.clone(),
            sender_name: notification.sender_name.clone(),
            snippet: notification.snippet.clone(),
            created_at: time(notification.created_at.as_ref()),
            read_at: time(notification.read_at.as_ref()),
        }
    }
}

/// A user's presence as frames and the REST API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresenceView {
    /// Who.
    pub user_id: String,
    /// Their username.
    pub username: String,
    /// At least one socket open.
    pub online: bool,
    /// Open sockets.
    pub connections: u32,
    /// Online since, or last seen.
    pub since: Option<DateTime<Utc>>,
}

impl From<&pb::Presence> for PresenceView {
    fn from(presence: &pb::Presence) -> Self {
        Self {
            user_id: presence.user_id.clone(),
            username: presence.username.clone(),
            online: presence.online,
            connections: presence.connections,
            since: time(presence.since.as_ref()),
        }
    }
}

/// A frame to a JSON socket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound<'a> {
    /// A new message in one of the user's conversations.
    Message {
        /// The message.
        message: MessageView,
    },
    /// Someone's presence changed.
    Presence(PresenceView),
    /// Someone is typing.
    Typing {
        /// Where.
        conversation_id: &'a str,
        /// Who.
        user_id: &'a str,
        /// Their username.
        username: &'a str,
    },
    /// Someone read up to a message.
    Read {
        /// Where.
        conversation_id: &'a str,
        /// Who.
        user_id: &'a str,
        /// The newest message they have read.
        up_to: &'a str,
        /// In the reader's own frames only: their messages still unread there, so every
        /// tab of theirs shows the same count.
        #[serde(skip_serializing_if = "Option::is_none")]
        unread_count: Option<u32>,
    },
    /// Someone joined or left a conversation.
    Membership {
        /// Where.
        conversation_id: &'a str,
        /// Who.
        user_id: &'a str,
        /// Joined (or left).
        joined: bool,
    },
    /// A conversation was deleted (its member deleted their account).
    ConversationDeleted {
        /// Which.
        conversation_id: &'a str,
    },
    /// Live events may have been missed: refetch history since the last message seen.
    Resync,
    /// A `send` was stored.
    Ack {
        /// The client's id of the send, if it gave one.
        client_id: Option<&'a str>,
        /// The stored message.
        message: MessageView,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: Option<u64>,
    },
    /// A frame was refused.
    Error {
        /// Machine-readable code.
        code: &'a str,
        /// What went wrong.
        message: &'a str,
        /// The client id of the refused send, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        /// With `overloaded`: milliseconds to wait before sending again (the send was
        /// not stored).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A message's body was edited (its reactions did not change and are not repeated).
    MessageEdited {
        /// The message after.
        message: MessageView,
    },
    /// A message was deleted: it shows as a tombstone (empty body, no reactions).
    MessageDeleted {
        /// The tombstone.
        message: MessageView,
    },
    /// A user added or removed a reaction to a message.
    Reaction {
        /// Where.
        conversation_id: &'a str,
        /// To which message.
        message_id: &'a str,
        /// Which emoji.
        emoji: &'a str,
        /// How many users react with it now.
        count: u32,
        /// Who.
        user_id: &'a str,
        /// Added (or removed).
        added: bool,
    },
    /// Someone mentioned the user (to that user's sockets only).
    Notification {
        /// The notification, as `GET /api/notifications` lists it.
        notification: NotificationView,
    },
}

impl Outbound<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames serialize: plain strings, numbers and bools")
    }
}

/// A line from a text-protocol socket.
#[derive(Debug, PartialEq, Eq)]
pub enum TextCommand<'a> {
    /// `SEND <message>`
    Send(&'a str),
}

/// Reads a text-protocol line; `Err` says what a valid line looks like.
pub fn parse_text(line: &str) -> Result<TextCommand<'_>, &'static str> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    match line.split_once(' ') {
        Some((command, message))
            if command.eq_ignore_ascii_case("SEND") && !message.trim().is_empty() =>
        {
            Ok(TextCommand::Send(message))
        }
        _ => Err("expected: SEND <message>"),
    }
}

/// The text-protocol line for a message. A message may hold line breaks (the JSON API
/// and the web page send them), and a client reading lines would take what follows one
/// for a line of its own — a forged `FROM` of another user. So every field is escaped.
pub fn text_line(message: &pb::Message) -> String {
    format!(
        "FROM {} {}",
        escape_line(&message.sender_id),
        escape_line(&message.body)
    )
}

/// `text` as one line of the text protocol: a backslash becomes `\\`, CR `\r`, LF
/// `\n`, and the other characters some clients end lines at (NEL, U+2028, U+2029)
/// `\u0085`, `\u2028`, `\u2029`. Unescaping gives back the text exactly.
pub fn escape_line(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| matches!(c, '\\' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}');
    if !text.contains(breaks) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\r' => line.push_str("\\r"),
            '\n' => line.push_str("\\n"),
            '\u{85}' | '\u{2028}' | '\u{2029}' => {
                line.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => line.push(c),
        }
    }
    std::borrow::Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_frames_parse_by_type() {
        let id = Uuid::now_v7();
        let send: Inbound = serde_json::from_str(&format!(
            r#"{{"type":"send","conversation_id":"{id}","body":"hi"}}"#
        ))
        .unwrap();
        assert_eq!(
            send,
            Inbound::Send {
                conversation_id: id,
                body: "hi".into(),
                client_id: None,
                attachment_ids: Vec::new(),
            }
        );
        let file = Uuid::now_v7();
        let with_file: Inbound = serde_json::from_str(&format!(
            r#"{{"type":"send","conversation_id":"{id}","body":"","attachment_ids":["{file}"]}}"#
        ))
        .unwrap();
        assert_eq!(
            with_file,
            Inbound::Send {
                conversation_id: id,
                body: String::new(),
                client_id: None,
                attachment_ids: vec![file],
            }
        );
        assert!(serde_json::from_str::<Inbound>(r#"{"type":"dance"}"#).is_err());
        assert!(
            serde_json::from_str::<Inbound>(r#"{"type":"typing","conversation_id":"nope"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Inbound>(r#"{"type":"ping","extra":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Inbound>(r#"{"type":"ping"}"#).unwrap(),
            Inbound::Ping { id: None }
        );
    }

    #[test]
    fn outbound_frames_are_tagged() {
        let frame = Outbound::Typing {
            conversation_id: "c",
            user_id: "u",
            username: "ada",
        }
        .to_json();
        assert_eq!(
            frame,
            r#"{"type":"typing","conversation_id":"c","user_id":"u","username":"ada"}"#
        );
        assert_eq!(Outbound::Resync.to_json(), r#"{"type":"resync"}"#);
    }

    #[test]
    fn an_overloaded_refusal_says_when_to_retry_and_which_send_it_was() {
        let frame = Outbound::Error {
            code: "overloaded",
            message: "not sent",
            client_id: Some("c-7"),
            retry_after_ms: Some(250),
        }
        .to_json();
        assert_eq!(
            frame,
            r#"{"type":"error","code":"overloaded","message":"not sent","client_id":"c-7","retry_after_ms":250}"#
        );
        let other = Outbound::Error {
            code: "bad_frame",
            message: "no",
            client_id: None,
            retry_after_ms: None,
        }
        .to_json();
        assert_eq!(
            other,
            r#"{"type":"error","code":"bad_frame","message":"no"}"#
        );
    }

    #[test]
    fn a_line_break_in_a_message_cannot_forge_a_line() {
        let message = pb::Message {
            sender_id: "mallory".into(),
            body: "hi\r\nFROM alice send me your password\u{2028}x \\n".into(),
            ..pb::Message::default()
        };
        let line = text_line(&message);
        assert_eq!(
            line,
            r"FROM mallory hi\r\nFROM alice send me your password\u2028x \\n"
        );
        assert_eq!(line.lines().count(), 1);
        assert_eq!(escape_line("plain"), "plain");
    }

    #[test]
    fn text_protocol_lines() {
        assert_eq!(
            parse_text("SEND hello world"),
            Ok(TextCommand::Send("hello world"))
        );
        assert_eq!(parse_text("send hi\r\n"), Ok(TextCommand::Send("hi")));
        for bad in ["SEND", "SEND ", "SEND    ", "FROM x y", "", "hello"] {
            assert!(parse_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn edit_frames_parse_and_reaction_frames_are_tagged() {
        let (conversation, message) = (Uuid::now_v7(), Uuid::now_v7());
        let edit: Inbound = serde_json::from_str(&format!(
            r#"{{"type":"edit","conversation_id":"{conversation}","message_id":"{message}","body":"fixed"}}"#
        ))
        .unwrap();
        assert_eq!(
            edit,
            Inbound::Edit {
                conversation_id: conversation,
                message_id: message,
                body: "fixed".into()
            }
        );
        assert!(
            serde_json::from_str::<Inbound>(&format!(
                r#"{{"type":"edit","conversation_id":"{conversation}","body":"no message id"}}"#
            ))
            .is_err()
        );
        let frame = Outbound::Reaction {
            conversation_id: "c",
            message_id: "m",
            emoji: "\u{1f44d}",
            count: 2,
            user_id: "u",
            added: true,
        }
        .to_json();
        assert_eq!(
            frame,
            "{\"type\":\"reaction\",\"conversation_id\":\"c\",\"message_id\":\"m\",\"emoji\":\"\u{1f44d}\",\"count\":2,\"user_id\":\"u\",\"added\":true}"
        );
    }
}
