//! The MongoDB adapter of [`LogStore`], on the official driver's ordinary API, so it runs
//! unchanged on MongoDB itself and on wire-compatible servers (the tests use SecantusDB).
//!
//! One document per entry, meant to be read in Compass as much as by this code:
//!
//! ```text
//! { _id: "0190…" (UUIDv7 text: sorts like the time), name: "user registered",
//!   data: { username: "ada" } (a sub-document, not JSON text), level: "info",
//!   service: "auth", user_id: "…" | null, trace_id: "…" | null, created_at: ISODate(…) }
//! ```
//!
//! `level` is the name only, no numeric severity: a minimum level is asked for as
//! `level: {$in: [names at or above it]}`, which the `{service, level, created_at, _id}`
//! index serves. A TTL index on `created_at` keeps the collection bounded; when the
//! retention changes, `collMod` moves the existing index to the new one.

use super::{LogStore, StoreError, timed};
use crate::domain::{
    Cursor, Level, LogData, LogEntry, LogQuery, Name, Page, Service, parse_trace_id,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::{self, Bson, Document, RawDocumentBuf, doc},
    error::ErrorKind,
    options::{ClientOptions, IndexOptions},
};
use serde_json::{Map, Value};
use std::time::Duration;
use uuid::Uuid;

/// The collection of entries, in the configured database.
pub const COLLECTION: &str = "logs";
/// Name of the TTL index on `created_at`.
pub const TTL_INDEX: &str = "created_at_ttl";
/// MongoDB's codes for "an index of that name exists with other options": 85 from
/// MongoDB, 86 from some wire-compatible servers (SecantusDB).
const INDEX_CONFLICTS: [i32; 2] = [85, 86];

impl From<mongodb::error::Error> for StoreError {
    fn from(error: mongodb::error::Error) -> Self {
        let unavailable = matches!(
            *error.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
        ) || error.contains_label("RetryableWriteError");
        if unavailable {
            Self::Unavailable(error.into())
        } else {
            Self::Database(error.into())
        }
    }
}

/// Log entries in a MongoDB collection.
#[derive(Debug, Clone)]
pub struct MongoLogStore {
    database: Database,
    /// Raw documents: the driver's serde path would read a `data` key such as `$oid` as
    /// Extended JSON and fail; the raw form keeps every key as it is.
    logs: Collection<RawDocumentBuf>,
}

impl MongoLogStore {
    /// Connects to `url` and creates the indexes of `database.logs`, the TTL index
    /// expiring entries `retention` after their `created_at`.
    pub async fn connect(
        url: &str,
        database: &str,
        retention: Duration,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await?;
        options
            .app_name
            .get_or_insert_with(|| "microchat-logger".to_owned());
        // Fail fast when the server is away instead of the driver's 30 s.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        let database = Client::with_options(options)?.database(database);
        let store = Self {
            logs: database.collection(COLLECTION),
            database,
        };
        timed(store.create_indexes(retention)).await?;
        Ok(store)
    }

    /// The collection, for tests and tools.
    pub fn collection(&self) -> Collection<Document> {
        self.logs.clone_with_type()
    }

    async fn create_indexes(&self, retention: Duration) -> Result<(), StoreError> {
        match self.logs.create_indexes(indexes(retention)).await {
            Err(error)
                if command_code(&error).is_some_and(|code| INDEX_CONFLICTS.contains(&code)) =>
            {
                // The TTL index exists with another retention: change it in place.
                let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
                self.database
                    .run_command(doc! {
                        "collMod": COLLECTION,
                        "index": { "name": TTL_INDEX, "expireAfterSeconds": seconds },
                    })
                    .await?;
                self.logs.create_indexes(indexes(retention)).await?;
                Ok(())
            }
            outcome => outcome.map(drop).map_err(StoreError::from),
        }
    }

    async fn query_now(&self, query: &LogQuery) -> Result<Page, StoreError> {
        let documents: Vec<RawDocumentBuf> = self
            .logs
            .find(filter(query))
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(i64::from(query.fetch_limit()))
            .await?
            .try_collect()
            .await?;
        let entries = documents
            .iter()
            .map(|raw| {
                let document = raw
                    .to_document()
                    .map_err(|error| StoreError::Database(error.into()))?;
                entry(&document)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_fetched(entries, query.limit))
    }
}

/// Names of the indexes besides the TTL one, for tests and tools.
pub const QUERY_INDEXES: [&str; 4] = [
    "created_at_id",
    "service_level_created_at_id",
    "trace_id",
    "user_id_created_at_id",
];

/// Every index of the collection. Pages sort by `(created_at, _id)`, so the indexes that
/// serve a filter end with both; the TTL index may hold one field only, so the plain
/// newest-first page has an index of its own.
fn indexes(retention: Duration) -> Vec<IndexModel> {
    let index = |name: &str, keys: Document| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build()
    };
    let [by_time, by_service, by_trace, by_user] = QUERY_INDEXES;
    vec![
        IndexModel::builder()
            .keys(doc! { "created_at": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_owned())
                    .expire_after(retention)
                    .build(),
            )
            .build(),
        index(by_time, doc! { "created_at": -1, "_id": -1 }),
        index(
            by_service,
            doc! { "service": 1, "level": 1, "created_at": -1, "_id": -1 },
        ),
        index(by_trace, doc! { "trace_id": 1 }),
        index(by_user, doc! { "user_id": 1, "created_at": -1, "_id": -1 }),
    ]
}

/// The server's error code, when the error is a command's answer.
fn command_code(error: &mongodb::error::Error) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

fn date(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

/// The filter of a query: every condition given, and past the cursor.
fn filter(query: &LogQuery) -> Document {
    let mut filter = Document::new();
    if let Some(service) = &query.service {
        filter.insert("service", service.as_str());
    }
    // With a service, the levels are always named (all of them when no minimum is
    // given): the server then merges the `{service, level, created_at, _id}` index's
    // ranges, one per level, into one newest-first page instead of sorting.
    let levels = query
        .min_level
        .or(query.service.is_some().then_some(Level::Trace));
    if let Some(level) = levels {
        let names: Vec<&str> = level
            .and_above()
            .iter()
            .map(|level| level.as_str())
            .collect();
        filter.insert("level", doc! { "$in": names });
    }
    if let Some(user_id) = query.user_id {
        filter.insert("user_id", user_id.to_string());
    }
    if let Some(trace_id) = &query.trace_id {
        filter.insert("trace_id", trace_id.to_string());
    }
    let mut time = Document::new();
    if let Some(since) = query.since {
        time.insert("$gte", date(since));
    }
    if let Some(until) = query.until {
        time.insert("$lt", date(until));
    }
    if let Some(Cursor { created_at, id }) = query.after {
        // (created_at, _id) < cursor, written so the index on created_at bounds the scan.
        time.insert("$lte", date(created_at));
        filter.insert(
            "$or",
            vec![
                doc! { "created_at": { "$lt": date(created_at) } },
                doc! { "_id": { "$lt": id.to_string() } },
            ],
        );
    }
    if !time.is_empty() {
        filter.insert("created_at", time);
    }
    filter
}

/// The document of an entry.
fn document(entry: &LogEntry) -> Result<RawDocumentBuf, StoreError> {
    let document = doc! {
        "_id": entry.id.to_string(),
        "name": entry.name.as_str(),
        "data": to_document(entry.data.as_map()),
        "level": entry.level.as_str(),
        "service": entry.service.as_str(),
        "user_id": entry.user_id.map(|id| id.to_string()),
        "trace_id": entry.trace_id.map(|id| id.to_string()),
        "created_at": date(entry.created_at),
    };
    RawDocumentBuf::from_document(&document).map_err(|error| StoreError::Database(error.into()))
}

/// MongoDB's code for a write refused by a unique index (here `_id`).
const DUPLICATE_KEY: i32 = 11_000;

/// Whether an unordered insert failed only because some ids were stored already.
fn only_duplicate_ids(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|error| error.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}

/// The entry a document holds.
fn entry(document: &Document) -> Result<LogEntry, StoreError> {
    let id = document.get_str("_id").unwrap_or("?").to_owned();
    let broken = |what: String| StoreError::Database(format!("entry {id}: {what}").into());
    let text = |field: &str| {
        document
            .get_str(field)
            .map_err(|_| broken(format!("{field} is not a string")))
    };
    let optional_text = |field: &str| match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(broken(format!("{field} is not a string"))),
    };
    let level = text("level")?;
    Ok(LogEntry {
        id: Uuid::try_parse(&id).map_err(|e| broken(e.to_string()))?,
        name: Name::parse(text("name")?).map_err(|e| broken(e.to_string()))?,
        data: match document.get("data") {
            Some(Bson::Document(data)) => LogData::from_stored(to_map(data)),
            None | Some(Bson::Null) => LogData::default(),
            Some(_) => return Err(broken("data is not a document".to_owned())),
        },
        level: Level::from_stored(level)
            .ok_or_else(|| broken(format!("unknown level {level:?}")))?,
        service: Service::parse(text("service")?).map_err(|e| broken(e.to_string()))?,
        user_id: optional_text("user_id")?
            .map(Uuid::try_parse)
            .transpose()
            .map_err(|e| broken(e.to_string()))?,
        trace_id: optional_text("trace_id")?
            .map(parse_trace_id)
            .transpose()
            .map_err(|e| broken(e.to_string()))?,
        created_at: document
            .get_datetime("created_at")
            .ok()
            .and_then(|at| DateTime::from_timestamp_millis(at.timestamp_millis()))
            .ok_or_else(|| broken("created_at is not a date in range".to_owned()))?,
    })
}

/// A JSON object as a BSON document: integers stay integers (32-bit when they fit),
/// other numbers become doubles.
fn to_document(map: &Map<String, Value>) -> Document {
    map.iter()
        .map(|(key, value)| (key.clone(), to_bson(value)))
        .collect()
}

fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(flag) => Bson::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(int) => i32::try_from(int).map_or(Bson::Int64(int), Bson::Int32),
            None => number.as_f64().map_or(Bson::Null, Bson::Double),
        },
        Value::String(text) => Bson::String(text.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(map) => Bson::Document(to_document(map)),
    }
}

/// A BSON document as a JSON object; types JSON lacks (dates, ids someone stored by
/// hand) become their relaxed Extended JSON.
fn to_map(document: &Document) -> Map<String, Value> {
    document
        .iter()
        .map(|(key, value)| (key.clone(), to_json(value)))
        .collect()
}

fn to_json(value: &Bson) -> Value {
    match value {
        Bson::Null => Value::Null,
        Bson::Boolean(flag) => Value::Bool(*flag),
        Bson::Int32(int) => Value::from(*int),
        Bson::Int64(int) => Value::from(*int),
        Bson::Double(float) => {
            serde_json::Number::from_f64(*float).map_or(Value::Null, Value::Number)
        }
        Bson::String(text) => Value::String(text.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Bson::Document(document) => Value::Object(to_map(document)),
        other => other.clone().into_relaxed_extjson(),
    }
}

#[async_trait]
impl LogStore for MongoLogStore {
    async fn insert(&self, entries: &[LogEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let documents = entries
            .iter()
            .map(document)
            .collect::<Result<Vec<_>, _>>()?;
        timed(async {
            // Unordered, so one entry already stored (an id written before: a redelivered
            // audit) neither stops the others nor fails the batch; any other error does.
            match self.logs.insert_many(documents).ordered(false).await {
                Ok(_) => Ok(()),
                Err(error) if only_duplicate_ids(&error) => Ok(()),
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    async fn query(&self, query: &LogQuery) -> Result<Page, StoreError> {
        timed(self.query_now(query)).await
    }

    async fn purge_older_than(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        timed(async {
            let deleted = self
                .logs
                .delete_many(doc! { "created_at": { "$lt": date(before) } })
                .await?;
            Ok(deleted.deleted_count)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed(async {
            self.database.run_command(doc! { "ping": 1 }).await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_keep_their_kind_through_bson() {
        let text = r#"{"small":1,"big":9007199254740993,"float":1.5,"whole":2.0,"huge":18446744073709551615,"list":[true,null,"x"],"nested":{"a":{}}}"#;
        let data = LogData::parse(text).expect("valid");
        let document = to_document(data.as_map());
        assert_eq!(document.get("small"), Some(&Bson::Int32(1)));
        assert_eq!(
            document.get("big"),
            Some(&Bson::Int64(9_007_199_254_740_993))
        );
        assert_eq!(document.get("whole"), Some(&Bson::Double(2.0)));
        let back = LogData::from_stored(to_map(&document));
        let mut expected = data.as_map().clone();
        expected.insert(
            "huge".to_owned(),
            Value::from(18_446_744_073_709_551_615_f64),
        );
        assert_eq!(back.as_map(), &expected);
    }

    #[test]
    fn a_cursor_filters_on_time_then_id() {
        let at = DateTime::from_timestamp_millis(1_000).expect("valid");
        let id = Uuid::nil();
        let query = LogQuery {
            since: Some(at),
            after: Some(Cursor { created_at: at, id }),
            ..LogQuery::default()
        };
        let filter = filter(&query);
        assert_eq!(
            filter.get_document("created_at").expect("a time filter"),
            &doc! { "$gte": date(at), "$lte": date(at) }
        );
        assert_eq!(filter.get_array("$or").map(Vec::len), Ok(2));
    }
}
