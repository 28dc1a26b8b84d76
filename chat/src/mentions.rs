//! `@username` mentions in a message body, and the notifications they make. No I/O: the
//! parser finds the names; [`crate::conversations::Chat`] resolves them against the
//! conversation's members and the store writes each notification (and its
//! `message.mentioned` event) in the message's own transaction.

use crate::domain::UserRef;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Most distinct users one message may mention (more names are ignored), so a body full
/// of `@a @b @c ...` costs a bounded lookup and at most this many notifications.
pub const MAX_MENTIONS: usize = 20;

/// Longest text of a notification's message shown in the list, in characters.
pub const SNIPPET_CHARS: usize = 200;

/// Username length bounds (auth's rule: 3–32 of `a-z 0-9 _ . -`, stored lowercase).
const NAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;

/// A character of auth's username alphabet, in either case.
fn in_alphabet(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The distinct usernames `@`-mentioned in `body`, lowercase, in order of first mention,
/// at most [`MAX_MENTIONS`]. A mention is `@` not preceded by a username character (so an
/// email address is none), then username characters up to the first other one; a
/// trailing `.` or `-` (end of a sentence) is not part of it. Bodies without `@` cost
/// one scan.
pub fn mentioned_names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if !body.contains('@') {
        return names;
    }
    let mut previous = None;
    let mut rest = body.char_indices().peekable();
    while let Some((at, c)) = rest.next() {
        let starts = c == '@' && !previous.is_some_and(in_alphabet);
        previous = Some(c);
        if !starts {
            continue;
        }
        let start = at + 1;
        let mut end = start;
        while let Some(&(i, next)) = rest.peek() {
            if !in_alphabet(next) {
                break;
            }
            end = i + next.len_utf8();
            previous = Some(next);
            rest.next();
        }
        let name = body[start..end].trim_end_matches(['.', '-']);
        if !NAME_CHARS.contains(&name.len()) {
            continue;
        }
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
            if names.len() == MAX_MENTIONS {
                break;
            }
        }
    }
    names
}

/// An @mention of a user, as their notification list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// UUIDv7: time-ordered, so also the list's cursor.
    pub id: Uuid,
    /// Whom it notifies.
    pub user_id: Uuid,
    /// The message that mentions them.
    pub message_id: Uuid,
    /// Where.
    pub conversation_id: Uuid,
    /// The room's name; empty for a direct conversation.
    pub conversation_name: String,
    /// Who wrote the message.
    pub sender: UserRef,
    /// The message's text while the user may read it, else empty; at most
    /// [`SNIPPET_CHARS`].
    pub snippet: String,
    /// When the message was sent.
    pub created_at: DateTime<Utc>,
    /// When the user marked it read; `None` while unread.
    pub read_at: Option<DateTime<Utc>>,
}

/// The first [`SNIPPET_CHARS`] characters of a body.
pub fn snippet(body: &str) -> String {
    match body.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stop_at_the_first_character_outside_the_alphabet() {
        assert_eq!(
            mentioned_names("hi @Ada, ask @bob.smith: and @ADA again."),
            ["ada", "bob.smith"]
        );
        assert_eq!(mentioned_names("thanks @carol."), ["carol"]);
        assert_eq!(mentioned_names("(@dave)"), ["dave"]);
    }

    #[test]
    fn emails_lone_ats_and_short_names_mention_no_one() {
        for body in ["mail bob@example.com", "@", "@ @ @", "@ab", "x@@", "@…"] {
            assert!(mentioned_names(body).is_empty(), "{body:?}");
        }
        assert_eq!(
            mentioned_names(&format!("@{}", "a".repeat(33))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn look_alikes_outside_ascii_are_not_part_of_a_name() {
        // A Cyrillic 'а' (U+0430) ends the name: `@аda` names nobody, `@adа` names "ad"
        // which is too short.
        assert!(mentioned_names("@\u{430}da").is_empty());
        assert!(mentioned_names("@ad\u{430}").is_empty());
        assert_eq!(mentioned_names("＠ada @eve"), ["eve"]);
    }

    #[test]
    fn at_most_twenty_distinct_names_count() {
        let body: String = (0..10_000).map(|i| format!("@user{i} ")).collect();
        let names = mentioned_names(&body);
        assert_eq!(names.len(), MAX_MENTIONS);
        assert_eq!(names[0], "user0");
        let same = "@aaa ".repeat(800);
        assert_eq!(mentioned_names(&same), ["aaa"]);
    }

    #[test]
    fn snippets_are_bounded() {
        assert_eq!(snippet("short"), "short");
        let long = "é".repeat(500);
        assert_eq!(snippet(&long).chars().count(), SNIPPET_CHARS + 1);
    }
}
