//! Log entries and queries, and the rules for valid ones. Constructors validate, so an
//! entry with a 300-character name or `data` that is not a JSON object cannot exist past
//! the gRPC edge, and both stores can trust what they are given. No I/O here.
//!
//! Times are kept to the millisecond: MongoDB's dates have no finer grain, and both
//! stores must order and page entries identically.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use platform::trace::TraceId;
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// Most entries in one write batch.
pub const MAX_BATCH: usize = 1_000;
/// Longest `data` text, in bytes.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Deepest nesting of `data` (objects and arrays): MongoDB refuses documents past 100
/// levels, and a shallow limit keeps every recursive walk over it cheap.
pub const MAX_DATA_DEPTH: usize = 32;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest service name, in characters.
pub const MAX_SERVICE_CHARS: usize = 40;
/// Page size when the query names none.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page.
pub const MAX_LIMIT: u32 = 500;
/// How far ahead of the logger's clock an entry's time may be (clocks drift; a time far in
/// the future would sit on top of every newest-first page for good).
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::hours(1);

/// Why a value from a client was refused; `field` names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending field, as the API names it.
    pub field: &'static str,
    /// What a valid value looks like.
    pub reason: &'static str,
}

fn invalid(field: &'static str, reason: &'static str) -> Invalid {
    Invalid { field, reason }
}

/// Why a write batch was refused (as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More than [`MAX_BATCH`] entries.
    #[error("entries: a batch holds at most {MAX_BATCH} entries")]
    TooLarge,
    /// One entry broke a rule.
    #[error("entries[{index}].{invalid}")]
    Entry {
        /// Its position in the batch.
        index: usize,
        /// What was wrong with it.
        invalid: Invalid,
    },
}

/// Severity, lowest first: `Level::Warn > Level::Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// Detail for developers.
    Debug,
    /// Something worth knowing happened.
    Info,
    /// Something looks wrong, but work goes on.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Self; 5] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
    ];

    /// The name stored and shown: `trace`, `debug`, `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// The level a stored name stands for.
    pub fn from_stored(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == name)
    }

    /// This level and every one above it, lowest first (a "min level" filter as a set,
    /// which an index on the level name can serve).
    pub fn and_above(self) -> &'static [Self] {
        &Self::ALL[self as usize..]
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, e.g. `user registered`: 1–200 characters on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Checks length and that it is one line of text.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let count = raw.chars().count();
        if !(1..=MAX_NAME_CHARS).contains(&count)
            || raw.trim().is_empty()
            || raw.chars().any(char::is_control)
        {
            return Err(invalid(
                "name",
                "must be 1 to 200 characters on one line, not only spaces",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The service that wrote an entry, e.g. `auth`: 1–40 of `a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service(String);

impl Service {
    /// Checks length and alphabet.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if !(1..=MAX_SERVICE_CHARS).contains(&raw.len()) || !raw.chars().all(allowed) {
            return Err(invalid(
                "service",
                "must be 1 to 40 characters of a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads a W3C trace id (32 hex digits, not all zero; either case), the one type every
/// service's trace ids have ([`TraceId`], kept and shown lowercase).
pub fn parse_trace_id(raw: &str) -> Result<TraceId, Invalid> {
    raw.parse().map_err(|()| {
        invalid(
            "trace_id",
            "must be 32 hex digits, not all zero (a W3C trace id)",
        )
    })
}

/// An entry's details: a JSON object (`{}` when there are none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogData(Map<String, Value>);

impl LogData {
    /// Parses the text of a JSON object of at most 16 KiB and 32 levels; empty means `{}`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.len() > MAX_DATA_BYTES {
            return Err(invalid("data", "must be at most 16 KiB"));
        }
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let not_an_object = invalid("data", "must be the text of a JSON object");
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return Err(not_an_object);
        };
        if map.values().any(|value| depth(value) >= MAX_DATA_DEPTH) {
            return Err(invalid("data", "must nest at most 32 levels deep"));
        }
        if has_nul_key(&map) {
            // MongoDB keys are C strings.
            return Err(invalid("data", "keys must not contain the NUL character"));
        }
        Ok(Self(map))
    }

    /// Details read back from a store, which were checked when written.
    pub fn from_stored(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Details read back from a store as JSON text, which were checked when written.
    pub fn from_stored_text(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Self)
    }

    /// The object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The object as compact JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(&self.0).expect("a map of JSON values always serializes")
    }
}

/// Levels of nesting inside `value`: 0 for a scalar, 1 for a flat array or object.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// True when a key anywhere inside `map` holds a NUL character.
fn has_nul_key(map: &Map<String, Value>) -> bool {
    fn inside(value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().any(inside),
            Value::Object(map) => has_nul_key(map),
            _ => false,
        }
    }
    map.iter()
        .any(|(key, value)| key.contains('\0') || inside(value))
}

/// `at` rounded down to the millisecond.
pub fn floor_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// `at` rounded up to the millisecond.
fn ceil_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_millis(at);
    if floor == at {
        at
    } else {
        floor + TimeDelta::milliseconds(1)
    }
}

/// One stored log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The writer's id, or a UUIDv7 made from `created_at` (so ids sort like times). A
    /// store keeps the first entry written with an id and ignores later ones.
    pub id: Uuid,
    /// What happened.
    pub name: Name,
    /// Details.
    pub data: LogData,
    /// Severity.
    pub level: Level,
    /// Who wrote it.
    pub service: Service,
    /// The user it is about.
    pub user_id: Option<Uuid>,
    /// The request it belongs to.
    pub trace_id: Option<TraceId>,
    /// When it happened, to the millisecond.
    pub created_at: DateTime<Utc>,
}

/// An entry as a client sends it, before any check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// A UUID the writer chose (an audit entry takes its event's id, so writing it again
    /// stores nothing new), or empty for a fresh one.
    pub id: String,
    /// What happened.
    pub name: String,
    /// JSON object text, or empty.
    pub data: String,
    /// Severity; `None` when the client gave none.
    pub level: Option<Level>,
    /// Who wrote it.
    pub service: String,
    /// A UUID, or empty.
    pub user_id: String,
    /// 32 hex digits, or empty.
    pub trace_id: String,
    /// When it happened; `None` means now.
    pub created_at: Option<DateTime<Utc>>,
}

impl LogEntry {
    /// Checks every field of `raw` and gives the entry a fresh id unless it brought its
    /// own; `now` is the logger's clock.
    pub fn parse(raw: &RawEntry, now: DateTime<Utc>) -> Result<Self, Invalid> {
        let created_at = floor_millis(raw.created_at.unwrap_or(now));
        if created_at > now + MAX_CLOCK_SKEW {
            return Err(invalid(
                "created_at",
                "must not be more than an hour ahead of the logger's clock",
            ));
        }
        let Ok(millis) = u64::try_from(created_at.timestamp_millis()) else {
            return Err(invalid("created_at", "must not be before 1970"));
        };
        let id = optional(&raw.id, |text| match Uuid::try_parse(text) {
            Ok(id) if !id.is_nil() => Ok(id),
            _ => Err(invalid("id", "must be a UUID other than nil, or empty")),
        })?;
        Ok(Self {
            id: id.unwrap_or_else(|| id_at(millis)),
            name: Name::parse(&raw.name)?,
            data: LogData::parse(&raw.data)?,
            level: raw.level.ok_or(invalid("level", "is required"))?,
            service: Service::parse(&raw.service)?,
            user_id: optional(&raw.user_id, |text| {
                Uuid::try_parse(text).map_err(|_| invalid("user_id", "must be a UUID, or empty"))
            })?,
            trace_id: optional(&raw.trace_id, parse_trace_id)?,
            created_at,
        })
    }
}

/// A UUIDv7 whose time part is `millis` after the Unix epoch.
fn id_at(millis: u64) -> Uuid {
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1_000,
        (millis % 1_000) as u32 * 1_000_000,
    );
    Uuid::new_v7(timestamp)
}

/// `None` for empty text, else what `parse` makes of it.
fn optional<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Result<Option<T>, Invalid> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

/// Checks a write batch: all of it is valid, or none of it is taken.
pub fn parse_batch(raws: &[RawEntry], now: DateTime<Utc>) -> Result<Vec<LogEntry>, BatchError> {
    if raws.len() > MAX_BATCH {
        return Err(BatchError::TooLarge);
    }
    raws.iter()
        .enumerate()
        .map(|(index, raw)| {
            LogEntry::parse(raw, now).map_err(|invalid| BatchError::Entry { index, invalid })
        })
        .collect()
}

/// Where a page ends: the (time, id) of the last entry seen. The next page holds what
/// sorts strictly after it in newest-first order, so an entry written meanwhile never
/// shifts a page and none is shown twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last entry seen (milliseconds).
    pub created_at: DateTime<Utc>,
    /// Id of the last entry seen.
    pub id: Uuid,
}

/// Cursor times end before 2^52 milliseconds after 1970.
const CURSOR_MILLIS_END: i64 = 1 << 52;

impl Cursor {
    /// The cursor just past `entry`.
    pub fn after(entry: &LogEntry) -> Self {
        Self {
            created_at: entry.created_at,
            id: entry.id,
        }
    }

    /// The opaque text a client passes back.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.created_at.timestamp_millis().to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, Invalid> {
        let refused = invalid("cursor", "must be the next_cursor of an earlier page");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| refused.clone())?;
        let (millis, id) = bytes.split_first_chunk::<8>().ok_or(refused.clone())?;
        let id = Uuid::from_slice(id).map_err(|_| refused.clone())?;
        // Entries are written after 1970 and long before 2^52 ms (year 144,683): any time in
        // between reads, so a cursor is exactly 32 characters starting `AA` (the API's
        // documented pattern), and none can be out of the time range the stores keep.
        let millis = i64::from_be_bytes(*millis);
        if !(0..CURSOR_MILLIS_END).contains(&millis) {
            return Err(refused);
        }
        let created_at = DateTime::from_timestamp_millis(millis).ok_or(refused)?;
        Ok(Self { created_at, id })
    }
}

/// Which entries to show: each filter given must match. Newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Only this service's entries.
    pub service: Option<Service>,
    /// Only entries at this level or above.
    pub min_level: Option<Level>,
    /// Only entries about this user.
    pub user_id: Option<Uuid>,
    /// Only entries of this request.
    pub trace_id: Option<TraceId>,
    /// Only entries at or after this time (milliseconds).
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time (milliseconds).
    pub until: Option<DateTime<Utc>>,
    /// Most entries in the page, 1–500.
    pub limit: u32,
    /// Only entries after this one, newest first (the next page).
    pub after: Option<Cursor>,
}

impl Default for LogQuery {
    fn default() -> Self {
        Self {
            service: None,
            min_level: None,
            user_id: None,
            trace_id: None,
            since: None,
            until: None,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// A query as a client sends it, before any check; empty text means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawQuery {
    /// A service name, or empty.
    pub service: String,
    /// The lowest level shown; `None` for all.
    pub min_level: Option<Level>,
    /// A UUID, or empty.
    pub user_id: String,
    /// 32 hex digits, or empty.
    pub trace_id: String,
    /// From this time on (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Up to this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// 1–500, or 0 for the default.
    pub limit: u32,
    /// `next_cursor` of the previous page, or empty.
    pub cursor: String,
}

impl LogQuery {
    /// Checks every filter of `raw`.
    pub fn parse(raw: &RawQuery) -> Result<Self, Invalid> {
        let limit = match raw.limit {
            0 => DEFAULT_LIMIT,
            limit if limit <= MAX_LIMIT => limit,
            _ => return Err(invalid("limit", "must be 1 to 500")),
        };
        // Stored times are whole milliseconds: `t >= since` and `t < until` hold for a
        // stored `t` exactly when they hold for the bounds rounded up.
        // An empty window (`since` at or after `until`) is no mistake: it holds no entry,
        // and the page is empty.
        let since = raw.since.map(ceil_millis);
        let until = raw.until.map(ceil_millis);
        Ok(Self {
            service: optional(&raw.service, Service::parse)?,
            min_level: raw.min_level,
            user_id: optional(&raw.user_id, |text| {
                Uuid::try_parse(text).map_err(|_| invalid("user_id", "must be a UUID, or empty"))
            })?,
            trace_id: optional(&raw.trace_id, parse_trace_id)?,
            since,
            until,
            limit,
            after: optional(&raw.cursor, Cursor::decode)?,
        })
    }

    /// How many entries a store fetches: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> u32 {
        self.limit + 1
    }

    /// True when `entry` passes every filter (the stores' filters, spelled out once).
    pub fn matches(&self, entry: &LogEntry) -> bool {
        self.service
            .as_ref()
            .is_none_or(|service| *service == entry.service)
            && self.min_level.is_none_or(|level| entry.level >= level)
            && self.user_id.is_none_or(|user| entry.user_id == Some(user))
            && self
                .trace_id
                .as_ref()
                .is_none_or(|trace| entry.trace_id.as_ref() == Some(trace))
            && self.since.is_none_or(|since| entry.created_at >= since)
            && self.until.is_none_or(|until| entry.created_at < until)
            && self
                .after
                .is_none_or(|cursor| (entry.created_at, entry.id) < (cursor.created_at, cursor.id))
    }
}

/// One page of a query's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The entries, newest first.
    pub entries: Vec<LogEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl Page {
    /// The page made of what a store fetched (newest first, at most
    /// [`LogQuery::fetch_limit`]): a fetched entry past `limit` means another page follows.
    pub fn from_fetched(mut entries: Vec<LogEntry>, limit: u32) -> Self {
        let limit = limit as usize;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more.then(|| entries.last().map(Cursor::after)).flatten();
        Self { entries, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawEntry {
        RawEntry {
            id: String::new(),
            name: "user registered".to_owned(),
            data: r#"{"username": "ada"}"#.to_owned(),
            level: Some(Level::Info),
            service: "auth".to_owned(),
            user_id: "0190b6b4-3f6e-7a3c-9c39-2f1ab0c2d3e4".to_owned(),
            trace_id: "4BF92F3577B34DA6A3CE929D0E0E4736".to_owned(),
            created_at: None,
        }
    }

    fn refused_field(raw: &RawEntry) -> &'static str {
        LogEntry::parse(raw, Utc::now()).expect_err("refused").field
    }

    #[test]
    fn an_entry_keeps_the_id_it_brings_and_otherwise_gets_one_from_its_time() {
        let given = "01a23f0c-4370-76fc-b507-dbf82e2a6b82";
        let kept = LogEntry::parse(
            &RawEntry {
                id: given.to_owned(),
                ..raw()
            },
            Utc::now(),
        )
        .expect("valid");
        assert_eq!(kept.id.to_string(), given);
        let fresh = LogEntry::parse(&raw(), Utc::now()).expect("valid");
        assert_eq!(fresh.id.get_version_num(), 7);
        for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
            let refused = RawEntry {
                id: bad.to_owned(),
                ..raw()
            };
            assert_eq!(refused_field(&refused), "id", "{bad}");
        }
    }

    #[test]
    fn levels_are_ordered_and_named() {
        assert!(Level::Trace < Level::Debug && Level::Warn < Level::Error);
        assert_eq!(Level::Warn.and_above(), &[Level::Warn, Level::Error]);
        assert_eq!(Level::Trace.and_above().len(), 5);
        for level in Level::ALL {
            assert_eq!(Level::from_stored(level.as_str()), Some(level));
        }
        assert_eq!(Level::from_stored("fatal"), None);
    }

    #[test]
    fn a_valid_entry_keeps_its_fields_and_gets_a_time_ordered_id() {
        let now = Utc::now();
        let entry = LogEntry::parse(&raw(), now).expect("valid");
        assert_eq!(entry.name.as_str(), "user registered");
        assert_eq!(entry.data.as_map()["username"], "ada");
        assert_eq!(
            entry.trace_id.expect("given").to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(entry.created_at, floor_millis(now));
        assert_eq!(entry.id.get_version_num(), 7);
        let (seconds, nanos) = entry.id.get_timestamp().expect("v7").to_unix();
        assert_eq!(
            i64::try_from(seconds).expect("a v7 id of now") * 1_000 + i64::from(nanos / 1_000_000),
            entry.created_at.timestamp_millis()
        );
    }

    #[test]
    fn optional_fields_may_be_empty() {
        let entry = LogEntry::parse(
            &RawEntry {
                data: String::new(),
                user_id: String::new(),
                trace_id: String::new(),
                ..raw()
            },
            Utc::now(),
        )
        .expect("valid");
        assert!(entry.data.as_map().is_empty());
        assert_eq!(entry.data.to_text(), "{}");
        assert_eq!((entry.user_id, entry.trace_id), (None, None));
    }

    #[test]
    fn names_are_one_line_of_1_to_200_characters() {
        for name in ["", "   ", "two\nlines", &"x".repeat(201)] {
            let entry = RawEntry {
                name: name.to_owned(),
                ..raw()
            };
            assert_eq!(refused_field(&entry), "name", "{name:?}");
        }
        assert!(Name::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn services_are_short_lowercase_words() {
        for service in ["", "Auth", "auth service", "a.b", &"a".repeat(41)] {
            let entry = RawEntry {
                service: service.to_owned(),
                ..raw()
            };
            assert_eq!(refused_field(&entry), "service", "{service:?}");
        }
        assert!(Service::parse("mail-relay_2").is_ok());
    }

    #[test]
    fn data_is_a_bounded_json_object() {
        for data in ["[1, 2]", "\"text\"", "42", "{not json", "null"] {
            let entry = RawEntry {
                data: data.to_owned(),
                ..raw()
            };
            assert_eq!(refused_field(&entry), "data", "{data:?}");
        }
        let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(MAX_DATA_BYTES));
        assert_eq!(
            LogData::parse(&big),
            Err(invalid("data", "must be at most 16 KiB"))
        );
        let deep = format!("{{\"x\": {}1{}}}", "[".repeat(32), "]".repeat(32));
        assert!(LogData::parse(&deep).is_err());
        let fine = format!("{{\"x\": {}1{}}}", "[".repeat(31), "]".repeat(31));
        assert!(LogData::parse(&fine).is_ok());
        assert!(LogData::parse(r#"{"a": [{"b\u0000": 1}]}"#).is_err());
        assert!(LogData::parse(r#"{"a": "text with \u0000 is fine"}"#).is_ok());
    }

    #[test]
    fn ids_and_trace_ids_must_be_well_formed() {
        let entry = RawEntry {
            user_id: "ada".to_owned(),
            ..raw()
        };
        assert_eq!(refused_field(&entry), "user_id");
        for trace_id in ["abc", "0".repeat(32).as_str(), &"g".repeat(32)] {
            let entry = RawEntry {
                trace_id: trace_id.to_owned(),
                ..raw()
            };
            assert_eq!(refused_field(&entry), "trace_id", "{trace_id:?}");
        }
    }

    #[test]
    fn level_is_required() {
        assert_eq!(
            refused_field(&RawEntry {
                level: None,
                ..raw()
            }),
            "level"
        );
    }

    #[test]
    fn times_far_ahead_or_before_1970_are_refused() {
        let now = Utc::now();
        let ahead = RawEntry {
            created_at: Some(now + TimeDelta::hours(2)),
            ..raw()
        };
        assert_eq!(refused_field(&ahead), "created_at");
        let old = RawEntry {
            created_at: DateTime::from_timestamp(-1, 0),
            ..raw()
        };
        assert_eq!(refused_field(&old), "created_at");
        let given = now - TimeDelta::days(3);
        let entry = LogEntry::parse(
            &RawEntry {
                created_at: Some(given),
                ..raw()
            },
            now,
        );
        assert_eq!(entry.expect("valid").created_at, floor_millis(given));
    }

    #[test]
    fn a_batch_is_refused_whole_naming_the_bad_entry() {
        let bad = RawEntry {
            name: String::new(),
            ..raw()
        };
        let error = parse_batch(&[raw(), bad], Utc::now()).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "entries[1].name: must be 1 to 200 characters on one line, not only spaces"
        );
        let too_many = vec![raw(); MAX_BATCH + 1];
        assert_eq!(
            parse_batch(&too_many, Utc::now()),
            Err(BatchError::TooLarge)
        );
        assert_eq!(
            parse_batch(&vec![raw(); MAX_BATCH], Utc::now()).map(|b| b.len()),
            Ok(MAX_BATCH)
        );
    }

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let entry = LogEntry::parse(&raw(), Utc::now()).expect("valid");
        let cursor = Cursor::after(&entry);
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        let far_future = URL_SAFE_NO_PAD.encode([[0x00, 0x10].as_slice(), &[0u8; 22]].concat());
        let before_1970 = URL_SAFE_NO_PAD.encode([0xffu8; 24]);
        for text in [
            "x",
            "not a cursor!",
            &URL_SAFE_NO_PAD.encode([0u8; 10]),
            &far_future,
            &before_1970,
        ] {
            assert_eq!(Cursor::decode(text).map_err(|e| e.field), Err("cursor"));
        }
    }

    #[test]
    fn query_limits_default_and_bound() {
        let query = |limit| {
            LogQuery::parse(&RawQuery {
                limit,
                ..RawQuery::default()
            })
        };
        assert_eq!(query(0).map(|q| q.limit), Ok(DEFAULT_LIMIT));
        assert_eq!(query(500).map(|q| q.limit), Ok(500));
        assert!(query(501).is_err());
    }

    #[test]
    fn query_filters_are_checked() {
        let bad = [
            RawQuery {
                service: "Auth".to_owned(),
                ..RawQuery::default()
            },
            RawQuery {
                user_id: "1".to_owned(),
                ..RawQuery::default()
            },
            RawQuery {
                trace_id: "1".to_owned(),
                ..RawQuery::default()
            },
            RawQuery {
                cursor: "1".to_owned(),
                ..RawQuery::default()
            },
        ];
        for raw in bad {
            assert!(LogQuery::parse(&raw).is_err(), "{raw:?}");
        }
        let now = Utc::now();
        let empty_window = LogQuery::parse(&RawQuery {
            since: Some(now),
            until: Some(now),
            ..RawQuery::default()
        })
        .expect("an empty window is a valid query");
        let entry = LogEntry::parse(&raw(), now).expect("valid");
        assert!(!empty_window.matches(&entry));
    }

    #[test]
    fn query_bounds_round_up_to_the_millisecond() {
        let at = DateTime::from_timestamp(100, 1_500_000).expect("valid");
        let query = LogQuery::parse(&RawQuery {
            since: Some(at),
            until: Some(at + TimeDelta::milliseconds(3)),
            ..RawQuery::default()
        })
        .expect("valid");
        assert_eq!(query.since.map(|t| t.timestamp_millis()), Some(100_002));
        assert_eq!(query.until.map(|t| t.timestamp_millis()), Some(100_005));
    }

    #[test]
    fn a_page_says_whether_another_follows() {
        let now = Utc::now();
        let entries: Vec<_> = (0..3)
            .map(|_| LogEntry::parse(&raw(), now).expect("valid"))
            .collect();
        let page = Page::from_fetched(entries.clone(), 2);
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.next, Some(Cursor::after(&entries[1])));
        let last = Page::from_fetched(entries, 3);
        assert_eq!((last.entries.len(), last.next), (3, None));
    }
}
