//! The gRPC face of the logger: translates `microchat.logger.v1` to and from the domain,
//! and maps every failure to a `Status` in one place.
//!
//! The logger's own log lines are shipped to the logger, so nothing here logs above
//! debug per request: a warning per failed write would feed itself. Failures are
//! counted in metrics instead.

use crate::{
    domain::{BatchError, Invalid, Level, LogEntry, LogQuery, RawEntry, RawQuery, parse_batch},
    store::{LogStore, StoreError},
};
use chrono::{DateTime, Utc};
use platform::grpc::timestamp;
use proto::logger::v1::{self as pb, logger_server};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// A write batch broke a rule.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A query broke a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoggerError> for Status {
    fn from(error: LoggerError) -> Self {
        let kind = match &error {
            LoggerError::Batch(_) | LoggerError::Invalid(_) => "invalid",
            LoggerError::Store(StoreError::Unavailable(_)) => "unavailable",
            LoggerError::Store(StoreError::Database(_)) => "database",
        };
        metrics::counter!("logger_failures_total", "kind" => kind).increment(1);
        tracing::debug!(%error, "logger call failed");
        match error {
            LoggerError::Batch(_) | LoggerError::Invalid(_) => {
                Status::invalid_argument(error.to_string())
            }
            LoggerError::Store(StoreError::Unavailable(_)) => {
                Status::unavailable("the log database is unavailable")
            }
            LoggerError::Store(StoreError::Database(_)) => Status::internal("internal error"),
        }
    }
}

/// `microchat.logger.v1.Logger`.
pub struct LoggerApi {
    store: Arc<dyn LogStore>,
}

impl LoggerApi {
    /// The API over a store.
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        Self { store }
    }

    /// Checks a batch whole, then stores it; returns how many entries it held.
    async fn write_batch(&self, batch: pb::WriteLogsRequest) -> Result<u64, LoggerError> {
        if batch.entries.len() > crate::domain::MAX_BATCH {
            return Err(BatchError::TooLarge.into());
        }
        let raws = batch
            .entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                raw_entry(entry).map_err(|invalid| BatchError::Entry { index, invalid })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entries = parse_batch(&raws, Utc::now())?;
        if entries.is_empty() {
            return Ok(0);
        }
        self.store.insert(&entries).await?;
        Ok(entries.len() as u64)
    }

    async fn query(
        &self,
        request: pb::QueryLogsRequest,
    ) -> Result<pb::QueryLogsResponse, LoggerError> {
        let query = LogQuery::parse(&raw_query(request)?)?;
        let page = self.store.query(&query).await?;
        Ok(pb::QueryLogsResponse {
            entries: page.entries.iter().map(entry_message).collect(),
            next_cursor: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        })
    }
}

fn level(value: i32) -> Result<Option<Level>, Invalid> {
    match pb::Level::try_from(value) {
        Ok(pb::Level::Unspecified) => Ok(None),
        Ok(pb::Level::Trace) => Ok(Some(Level::Trace)),
        Ok(pb::Level::Debug) => Ok(Some(Level::Debug)),
        Ok(pb::Level::Info) => Ok(Some(Level::Info)),
        Ok(pb::Level::Warn) => Ok(Some(Level::Warn)),
        Ok(pb::Level::Error) => Ok(Some(Level::Error)),
        Err(_) => Err(Invalid {
            field: "level",
            reason: "must be one of the Level values",
        }),
    }
}

fn level_message(level: Level) -> pb::Level {
    match level {
        Level::Trace => pb::Level::Trace,
        Level::Debug => pb::Level::Debug,
        Level::Info => pb::Level::Info,
        Level::Warn => pb::Level::Warn,
        Level::Error => pb::Level::Error,
    }
}

fn time(
    field: &'static str,
    at: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Invalid> {
    at.map(|at| {
        u32::try_from(at.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
            .ok_or(Invalid {
                field,
                reason: "must be a valid time",
            })
    })
    .transpose()
}

fn raw_entry(entry: pb::LogEntry) -> Result<RawEntry, Invalid> {
    Ok(RawEntry {
        id: entry.id,
        level: level(entry.level)?,
        created_at: time("created_at", entry.created_at)?,
        name: entry.name,
        data: entry.data,
        service: entry.service,
        user_id: entry.user_id,
        trace_id: entry.trace_id,
    })
}

fn raw_query(request: pb::QueryLogsRequest) -> Result<RawQuery, Invalid> {
    Ok(RawQuery {
        min_level: level(request.min_level)?,
        since: time("since", request.since)?,
        until: time("until", request.until)?,
        service: request.service,
        user_id: request.user_id,
        trace_id: request.trace_id,
        limit: request.limit,
        cursor: request.cursor,
    })
}

fn entry_message(entry: &LogEntry) -> pb::LogEntry {
    pb::LogEntry {
        id: entry.id.to_string(),
        name: entry.name.as_str().to_owned(),
        data: entry.data.to_text(),
        level: level_message(entry.level) as i32,
        service: entry.service.as_str().to_owned(),
        user_id: entry.user_id.map(|id| id.to_string()).unwrap_or_default(),
        trace_id: entry.trace_id.map(|id| id.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(entry.created_at)),
    }
}

#[tonic::async_trait]
impl logger_server::Logger for LoggerApi {
    async fn write_logs(
        &self,
        request: Request<Streaming<pb::WriteLogsRequest>>,
    ) -> Result<Response<pb::WriteLogsResponse>, Status> {
        let mut batches = request.into_inner();
        let mut written = 0;
        while let Some(batch) = batches.message().await? {
            let stored = self.write_batch(batch).await?;
            metrics::counter!("logger_entries_written_total").increment(stored);
            tracing::debug!(entries = stored, "log batch stored");
            written += stored;
        }
        Ok(Response::new(pb::WriteLogsResponse { written }))
    }

    async fn query_logs(
        &self,
        request: Request<pb::QueryLogsRequest>,
    ) -> Result<Response<pb::QueryLogsResponse>, Status> {
        let page = self.query(request.into_inner()).await?;
        tracing::debug!(entries = page.entries.len(), "logs queried");
        Ok(Response::new(page))
    }
}
