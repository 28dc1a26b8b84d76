//! Full-text search, the rules without the I/O: what a search text may be, how a page's
//! cursor is written and checked, and how a snippet marked by the database becomes text
//! plus highlight ranges. The stores run the query (`store/search.rs`).
//!
//! The user's words are never query syntax. PostgreSQL gets them through
//! `plainto_tsquery` (which has none); SQLite's FTS5 gets each word as a quoted string
//! (`"word"`, inner quotes doubled), so `*`, `NEAR`, `AND`, parentheses and quotes are
//! text to find. Both backends match every word (AND).

use crate::domain::{Invalid, Kind, Message};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use std::ops::Range;
use uuid::Uuid;

/// Marks the start of a matched word in a snippet as the databases return it. Bodies
/// refuse control characters, so a body never contains it.
pub const MARK_START: char = '\u{1}';
/// Marks the end of a matched word in a snippet.
pub const MARK_END: char = '\u{2}';

/// How many of the newest matches in the caller's conversations are ranked: a common word
/// may match a hundred thousand messages, and ranking them all costs more than anyone
/// waits for a search box. Older matches beyond these are not found by that search (a
/// narrower search, more words or one conversation, finds them).
pub const SEARCH_WINDOW: u32 = 200;

/// What one may search for: 1–200 characters after trimming, at most 16 words (split at
/// white space), no control characters. Matched literally, every word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    words: Vec<String>,
}

impl SearchText {
    /// Longest search text, in characters (after trimming).
    pub const MAX_CHARS: usize = 200;
    /// Most words.
    pub const MAX_WORDS: usize = 16;

    /// Checks the text and splits it into words.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = Invalid {
            field: "q",
            reason: "must be 1 to 200 characters of text (no control characters), at most 16 words",
        };
        let text = raw.trim();
        if text.is_empty()
            || text.len() > Self::MAX_CHARS * 4
            || text.chars().count() > Self::MAX_CHARS
            || text.chars().any(char::is_control)
        {
            return Err(invalid);
        }
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if words.len() > Self::MAX_WORDS {
            return Err(invalid);
        }
        Ok(Self { words })
    }

    /// The words, as typed.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The words separated by single spaces (for `plainto_tsquery`, which has no syntax).
    pub fn plain(&self) -> String {
        self.words.join(" ")
    }

    /// An FTS5 query matching every word literally: each one a quoted string.
    pub fn fts5(&self) -> String {
        self.words
            .iter()
            .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// FNV-1a over bytes: the same on every replica and every run.
fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where the next page of results starts: at `offset` in the ranked matches among the
/// messages stored before `snapshot`. New messages never shift a search that is being
/// paged through: the window of matches, and so each one's rank, stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchCursor {
    /// No message newer than this id is searched (the first page's time, see [`snapshot_at`]).
    pub snapshot: Uuid,
    /// How many ranked hits the earlier pages held.
    pub offset: u32,
}

/// The cursor's format version (its first byte).
const CURSOR_VERSION: u8 = 1;
/// Bytes of a cursor: version, snapshot, offset, check.
const CURSOR_BYTES: usize = 1 + 16 + 4 + 8;

impl SearchCursor {
    /// The cursor's fields, and a check over them and the search that made it (the words
    /// and the conversation it is narrowed to): a cursor is only taken back by the same
    /// search, and a changed byte is noticed. Not a secret: a forged cursor can only page
    /// through the caller's own conversations, whose membership every query checks.
    fn bytes(&self, text: &SearchText, conversation: Option<Uuid>) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CURSOR_BYTES);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(self.snapshot.as_bytes());
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        let conversation = conversation.unwrap_or_default();
        let search = text
            .words
            .iter()
            .flat_map(|word| word.as_bytes().iter().chain(&[0]))
            .chain(conversation.as_bytes());
        let check = fnv1a(bytes.iter().chain(search));
        bytes.extend_from_slice(&check.to_be_bytes());
        bytes
    }

    /// The opaque text form, for the search of `text` in `conversation`.
    pub fn encode(&self, text: &SearchText, conversation: Option<Uuid>) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes(text, conversation))
    }

    /// Reads a cursor a client sent back. A text that is not a cursor's shape is
    /// [`CursorRefused::Malformed`] (the client sent something else); one of the right
    /// shape that this search did not make (another search's, changed bytes, a version
    /// gone) is [`CursorRefused::Foreign`]: it names no page of this search.
    pub fn decode(
        raw: &str,
        text: &SearchText,
        conversation: Option<Uuid>,
    ) -> Result<Self, CursorRefused> {
        let shaped = raw.len() == CURSOR_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !shaped {
            return Err(CursorRefused::Malformed(Invalid {
                field: "cursor",
                reason: "must be a next_cursor as given: 39 characters of A-Z, a-z, 0-9, '-' and '_'",
            }));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| CursorRefused::Foreign)?;
        if bytes.len() != CURSOR_BYTES || bytes[0] != CURSOR_VERSION {
            return Err(CursorRefused::Foreign);
        }
        let cursor = Self {
            snapshot: Uuid::from_slice(&bytes[1..17]).map_err(|_| CursorRefused::Foreign)?,
            offset: u32::from_be_bytes(
                bytes[17..21]
                    .try_into()
                    .map_err(|_| CursorRefused::Foreign)?,
            ),
        };
        if cursor.offset > SEARCH_WINDOW || cursor.bytes(text, conversation) != bytes {
            return Err(CursorRefused::Foreign);
        }
        Ok(cursor)
    }
}

/// Characters of a cursor's text form: [`CURSOR_BYTES`] in unpadded base64url.
pub const CURSOR_CHARS: usize = (CURSOR_BYTES * 8).div_ceil(6);

/// Why a cursor was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorRefused {
    /// Not a cursor's shape: a bad request.
    Malformed(Invalid),
    /// A cursor's shape, but not one this search made: it names no page of it.
    Foreign,
}

/// The largest message id a message stored at `at` (or before) can have: UUIDv7 ids
/// start with their millisecond, so every id made by then compares lower or equal.
pub fn snapshot_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0xff_u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// A search over the messages of the conversations a user belongs to, as a store runs it.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Whose conversations (membership is decided in the query itself).
    pub user: Uuid,
    /// The words.
    pub text: SearchText,
    /// Only this conversation, when given.
    pub conversation: Option<Uuid>,
    /// Only messages with ids up to this one.
    pub snapshot: Uuid,
    /// How many ranked hits to skip (the earlier pages').
    pub offset: u32,
    /// Most hits to return.
    pub limit: u32,
    /// How many of the newest matches are ranked ([`SEARCH_WINDOW`]).
    pub window: u32,
}

/// One message found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message.
    pub message: Message,
    /// Its conversation's kind.
    pub conversation_kind: Kind,
    /// Its conversation's name (rooms; empty for directs).
    pub conversation_name: String,
    /// How well it matches (higher is better; comparable within one search only).
    pub score: f64,
    /// The part of the body around the matched words.
    pub snippet: Snippet,
}

/// A part of a message body with its matched words located: plain text plus ranges, never
/// markup, so a page shows it with text nodes only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snippet {
    /// The text.
    pub text: String,
    /// The matched words, as ranges of character (Unicode scalar value) offsets into
    /// `text`, in order, not overlapping.
    pub highlights: Vec<Range<u32>>,
}

impl Snippet {
    /// Reads a snippet whose matched words the database wrapped in [`MARK_START`] and
    /// [`MARK_END`]; a mark without its pair is dropped.
    pub fn from_marked(marked: &str) -> Self {
        let mut snippet = Self::default();
        let (mut chars, mut open) = (0_u32, None);
        for c in marked.chars() {
            match c {
                MARK_START => open = Some(chars),
                MARK_END => {
                    if let Some(start) = open.take().filter(|start| *start < chars) {
                        snippet.highlights.push(start..chars);
                    }
                }
                _ => {
                    snippet.text.push(c);
                    chars += 1;
                }
            }
        }
        snippet
    }
}

impl Snippet {
    /// At most `max_chars` characters of the text, around its first highlight, with `…`
    /// where text was cut; highlights that do not fit are dropped.
    pub fn around_first_match(self, max_chars: usize) -> Self {
        let chars: Vec<char> = self.text.chars().collect();
        if chars.len() <= max_chars {
            return self;
        }
        let first = self
            .highlights
            .first()
            .map_or(0, |range| range.start as usize);
        // A little context before the first match, the rest after it.
        let start = first
            .saturating_sub(max_chars / 4)
            .min(chars.len() - max_chars);
        let end = start + max_chars;
        let mut text = String::new();
        let lead = usize::from(start > 0);
        if start > 0 {
            text.push('…');
        }
        text.extend(&chars[start..end]);
        if end < chars.len() {
            text.push('…');
        }
        let shift = |at: u32| at as usize - start + lead;
        let highlights = self
            .highlights
            .into_iter()
            .filter(|range| range.start as usize >= start && range.end as usize <= end)
            .map(|range| {
                let at = |offset| u32::try_from(shift(offset)).unwrap_or(u32::MAX);
                at(range.start)..at(range.end)
            })
            .collect();
        Self { text, highlights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(raw: &str) -> SearchText {
        SearchText::parse(raw).expect("a valid search text")
    }

    #[test]
    fn search_text_is_bounded_and_split_into_words() {
        assert_eq!(text("  hello   world ").words(), ["hello", "world"]);
        assert!(SearchText::parse(&"a".repeat(200)).is_ok());
        for bad in [
            "",
            "   ",
            &"a".repeat(201),
            &"a".repeat(1000),
            "nul\0here",
            "bell\u{7}",
            &"w ".repeat(17),
        ] {
            assert!(SearchText::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn fts5_query_quotes_every_word() {
        assert_eq!(
            text(r#"NEAR( "x" a*b AND"#).fts5(),
            r#""NEAR(" """x""" "a*b" "AND""#
        );
    }

    #[test]
    fn cursor_round_trips_and_refuses_tampering() {
        let words = text("hello world");
        let room = Some(Uuid::now_v7());
        let cursor = SearchCursor {
            snapshot: Uuid::now_v7(),
            offset: 40,
        };
        let encoded = cursor.encode(&words, room);
        assert_eq!(SearchCursor::decode(&encoded, &words, room), Ok(cursor));
        // Another search, another conversation, flipped bytes, garbage: all refused.
        assert!(SearchCursor::decode(&encoded, &text("hello"), room).is_err());
        assert!(SearchCursor::decode(&encoded, &words, None).is_err());
        let mut flipped = encoded.clone().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ASCII");
        assert!(SearchCursor::decode(&flipped, &words, room).is_err());
        assert_eq!(
            SearchCursor::decode(&flipped, &words, room),
            Err(CursorRefused::Foreign)
        );
        assert_eq!(encoded.len(), CURSOR_CHARS);
        assert_eq!(
            SearchCursor::decode(&"A".repeat(CURSOR_CHARS), &words, room),
            Err(CursorRefused::Foreign),
            "the right shape names no page"
        );
        for bad in [
            "",
            "!!!",
            "AAAA",
            &"A".repeat(500),
            &"%".repeat(CURSOR_CHARS),
        ] {
            assert!(
                matches!(
                    SearchCursor::decode(bad, &words, room),
                    Err(CursorRefused::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let beyond = SearchCursor {
            snapshot: Uuid::now_v7(),
            offset: SEARCH_WINDOW + 1,
        };
        assert!(SearchCursor::decode(&beyond.encode(&words, room), &words, room).is_err());
    }

    #[test]
    fn snapshot_is_above_every_id_made_until_then() {
        let before = Uuid::now_v7();
        let snapshot = snapshot_at(Utc::now());
        assert!(before <= snapshot);
        let later = snapshot_at(Utc::now() + chrono::Duration::seconds(1));
        assert!(Uuid::now_v7() < later);
    }

    #[test]
    fn marked_snippet_becomes_text_and_ranges() {
        let snippet = Snippet::from_marked("\u{1}Élan\u{2} vital, \u{1}élan\u{2}!");
        assert_eq!(snippet.text, "Élan vital, élan!");
        assert_eq!(snippet.highlights, vec![0..4, 12..16]);
        let long = format!(
            "{} \u{1}needle\u{2} {}",
            "hay ".repeat(100),
            "straw ".repeat(100)
        );
        let cut = Snippet::from_marked(&long).around_first_match(40);
        assert_eq!(cut.text.chars().count(), 42);
        assert!(cut.text.starts_with('…') && cut.text.ends_with('…'));
        let chars: Vec<char> = cut.text.chars().collect();
        let range = cut.highlights[0].clone();
        let found: String = chars[range.start as usize..range.end as usize]
            .iter()
            .collect();
        assert_eq!(found, "needle");
        let unpaired = Snippet::from_marked("a\u{2}b\u{1}c");
        assert_eq!(unpaired.text, "abc");
        assert!(unpaired.highlights.is_empty());
    }
}
