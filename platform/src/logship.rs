//! Shipping log lines to the logger service, never on the request path.
//!
//! [`ShipLayer`] is a `tracing` layer: for each event at `info` or above it builds a log
//! entry (message, fields as JSON, level, service, user id, the current trace id) and
//! hands it to a bounded buffer with `try_send`. When the buffer is full the entry is
//! dropped and counted (`logs_dropped_total{reason="buffer_full"}`): a request never
//! waits for logging.
//!
//! One shipper thread per process, with its own small runtime (so it outlives any one
//! tokio runtime, and a busy request runtime never delays it), drains the buffer in
//! batches and streams them to every logger registered with [`ship_to`] — one in a
//! deployment; tests run several systems in one process and each finds its own lines by
//! trace id. A batch a logger does not take in time is dropped and counted
//! (`reason="logger_unavailable"`): when the logger is down, nothing else slows down, and
//! lines flow again as soon as it is back.

use crate::{grpc::TracedChannel, service_auth::Credentials, trace::TraceId};
use proto::logger::v1::{
    Level as PbLevel, LogEntry, WriteLogsRequest, logger_client::LoggerClient,
};
use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, SystemTime},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::Context};

/// Entries waiting to be shipped, at most.
const BUFFER: usize = 16 * 1024;
/// Entries per `WriteLogs` batch, at most (the logger's own limit is 1,000).
const BATCH: usize = 500;
/// How long entries may wait for a fuller batch.
const LINGER: Duration = Duration::from_millis(200);
/// How long one logger may take to store a batch before it is given up.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// The logger's limits on one entry (see `logger.proto`).
const MAX_NAME_CHARS: usize = 200;
const MAX_DATA_BYTES: usize = 16 * 1024;

/// Crates whose own lines are never shipped: the transport the shipper itself uses (a
/// failing logger connection must not produce lines about itself, endlessly).
const UNSHIPPED_TARGETS: &[&str] = &["h2", "hyper", "tonic", "tower", "platform::logship"];

/// Services whose code runs in this repository: a line's service is the crate of its
/// target when it is one of these, the process's own name otherwise.
const SERVICES: &[&str] = &["auth", "chat", "broker", "mail", "listener", "logger"];

enum Command {
    Entry(LogEntry),
    Flush(oneshot::Sender<()>),
}

struct Shipper {
    commands: mpsc::Sender<Command>,
    destinations: Mutex<Vec<(u64, String, Credentials)>>,
}

fn shipper() -> &'static Shipper {
    static SHIPPER: OnceLock<Shipper> = OnceLock::new();
    SHIPPER.get_or_init(|| {
        let (commands, receiver) = mpsc::channel(BUFFER);
        let spawned = std::thread::Builder::new()
            .name("log-shipper".into())
            .spawn(move || run_shipper(receiver));
        if let Err(error) = spawned {
            // Without the thread the buffer fills and every line is counted as dropped.
            eprintln!("log shipping disabled: cannot start its thread: {error}");
        }
        Shipper {
            commands,
            destinations: Mutex::new(Vec::new()),
        }
    })
}

/// Log shipping to one logger: it receives this process's lines until this guard is dropped.
#[derive(Debug)]
#[must_use = "lines are shipped only while the guard lives"]
pub struct LogShipping {
    id: u64,
}

impl Drop for LogShipping {
    fn drop(&mut self) {
        let mut destinations = shipper()
            .destinations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        destinations.retain(|(id, _, _)| *id != self.id);
    }
}

/// Ships this process's lines to the logger at `url` (gRPC), calling it with
/// `credentials`, while the guard lives.
pub fn ship_to(url: &str, credentials: Credentials) -> LogShipping {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shipper()
        .destinations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((id, url.to_owned(), credentials));
    LogShipping { id }
}

/// Waits (at most `limit`) until every line logged so far has been offered to the
/// loggers: called before a process exits, so its last lines are not lost.
pub async fn flush(limit: Duration) {
    let (done, wait) = oneshot::channel();
    if shipper().commands.try_send(Command::Flush(done)).is_ok() {
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

fn run_shipper(mut receiver: mpsc::Receiver<Command>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("log shipping disabled: cannot start its runtime: {error}");
            return;
        }
    };
    runtime.block_on(async move {
        let mut clients: HashMap<u64, LoggerClient<TracedChannel>> = HashMap::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut commands = Vec::with_capacity(BATCH);
        loop {
            if receiver.recv_many(&mut commands, BATCH).await == 0 {
                return;
            }
            // Linger briefly for a fuller batch, unless someone waits for a flush.
            let deadline = tokio::time::Instant::now() + LINGER;
            while commands.len() < BATCH && !has_flush(&commands) {
                let room = BATCH - commands.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut commands, room))
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let mut flushed = Vec::new();
            for command in commands.drain(..) {
                match command {
                    Command::Entry(entry) => batch.push(entry),
                    Command::Flush(done) => flushed.push(done),
                }
            }
            if !batch.is_empty() {
                deliver(&mut clients, std::mem::take(&mut batch)).await;
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    });
}

fn has_flush(commands: &[Command]) -> bool {
    commands
        .iter()
        .any(|command| matches!(command, Command::Flush(_)))
}

async fn deliver(clients: &mut HashMap<u64, LoggerClient<TracedChannel>>, batch: Vec<LogEntry>) {
    let destinations = shipper()
        .destinations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let count = batch.len() as u64;
    if destinations.is_empty() {
        metrics::counter!("logs_dropped_total", "reason" => "no_logger").increment(count);
        return;
    }
    clients.retain(|id, _| destinations.iter().any(|(live, _, _)| live == id));
    let mut writes = Vec::with_capacity(destinations.len());
    for (id, url, credentials) in destinations {
        let client = match clients.get(&id) {
            Some(client) => client.clone(),
            None => match connect(&url, credentials) {
                Some(client) => clients.entry(id).or_insert(client).clone(),
                None => {
                    metrics::counter!("logs_dropped_total", "reason" => "bad_logger_url")
                        .increment(count);
                    continue;
                }
            },
        };
        let request = WriteLogsRequest {
            entries: batch.clone(),
        };
        writes.push(async move {
            let mut client = client;
            let call = client.write_logs(tokio_stream::once(request));
            tokio::time::timeout(WRITE_DEADLINE, call).await
        });
    }
    for written in futures::future::join_all(writes).await {
        match written {
            Ok(Ok(_)) => metrics::counter!("logs_shipped_total").increment(count),
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("logs_dropped_total", "reason" => "logger_unavailable")
                    .increment(count);
            }
        }
    }
}

fn connect(url: &str, credentials: Credentials) -> Option<LoggerClient<TracedChannel>> {
    let deadlines = crate::grpc::Deadlines {
        connect: Duration::from_millis(500),
        request: WRITE_DEADLINE,
    };
    crate::grpc::channel(url, deadlines, credentials)
        .ok()
        .map(LoggerClient::new)
}

/// The `tracing` layer that turns events into log entries for the logger.
#[derive(Debug, Clone)]
pub struct ShipLayer {
    service: &'static str,
}

impl ShipLayer {
    /// Ships lines as coming from `service`, unless their target names another service
    /// of this repository (the all-in-one hosts them all in one process).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }

    fn service_of(&self, target: &str) -> String {
        let krate = target.split("::").next().unwrap_or(target);
        let service = SERVICES
            .iter()
            .find(|service| **service == krate)
            .copied()
            .unwrap_or(self.service);
        service.to_owned()
    }
}

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        // `tracing` orders levels by verbosity: INFO < DEBUG < TRACE.
        if *metadata.level() > Level::INFO || is_unshipped(metadata.target()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let entry = LogEntry {
            id: String::new(),
            name: fields.name(metadata.name()),
            data: fields.data(),
            level: level(*metadata.level()) as i32,
            service: self.service_of(metadata.target()),
            user_id: fields.user_id.unwrap_or_default(),
            trace_id: TraceId::current()
                .map(|id| id.to_string())
                .or(fields.trace_id)
                .unwrap_or_default(),
            created_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        };
        if shipper().commands.try_send(Command::Entry(entry)).is_err() {
            metrics::counter!("logs_dropped_total", "reason" => "buffer_full").increment(1);
        }
    }
}

fn is_unshipped(target: &str) -> bool {
    UNSHIPPED_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn level(level: Level) -> PbLevel {
    match level {
        Level::ERROR => PbLevel::Error,
        Level::WARN => PbLevel::Warn,
        Level::INFO => PbLevel::Info,
        Level::DEBUG => PbLevel::Debug,
        Level::TRACE => PbLevel::Trace,
    }
}

/// An event's fields: the message, the ids the logger indexes, and the rest as JSON.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    user_id: Option<String>,
    trace_id: Option<String>,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn name(&mut self, fallback: &str) -> String {
        let name = self.message.take().unwrap_or_else(|| fallback.to_owned());
        let name = name.trim();
        let name = if name.is_empty() { fallback } else { name };
        name.chars().take(MAX_NAME_CHARS).collect()
    }

    fn data(&self) -> String {
        let text = serde_json::Value::Object(self.rest.clone()).to_string();
        if text.len() <= MAX_DATA_BYTES {
            text
        } else {
            serde_json::json!({ "truncated": true, "bytes": text.len() }).to_string()
        }
    }

    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let text = || match &value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        match field.name() {
            "message" => self.message = Some(text()),
            "user_id" => {
                self.user_id = uuid::Uuid::parse_str(&text()).ok().map(|id| id.to_string());
            }
            "trace_id" => {
                self.trace_id = text().parse::<TraceId>().ok().map(|id| id.to_string());
            }
            name => {
                self.rest.insert(name.to_owned(), value);
            }
        }
    }
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_belongs_to_the_service_of_its_crate() {
        let layer = ShipLayer::new("microchat");
        assert_eq!(layer.service_of("auth::accounts"), "auth");
        assert_eq!(layer.service_of("broker"), "broker");
        assert_eq!(layer.service_of("platform::events::outbox"), "microchat");
        assert_eq!(layer.service_of("authz::other"), "microchat");
    }

    #[test]
    fn the_transport_of_the_shipper_is_never_shipped() {
        assert!(is_unshipped("h2::proto::connection"));
        assert!(is_unshipped("tonic"));
        assert!(is_unshipped("platform::logship"));
        assert!(!is_unshipped("hyperion"));
        assert!(!is_unshipped("auth::grpc"));
    }

    #[test]
    fn names_and_data_keep_within_the_loggers_limits() {
        let mut fields = Fields {
            message: Some("x".repeat(500)),
            ..Fields::default()
        };
        fields.rest.insert(
            "big".into(),
            serde_json::Value::String("y".repeat(MAX_DATA_BYTES)),
        );
        assert_eq!(fields.name("event").chars().count(), MAX_NAME_CHARS);
        let data: serde_json::Value = serde_json::from_str(&fields.data()).unwrap();
        assert_eq!(data["truncated"], true);
    }

    #[test]
    fn an_empty_message_is_named_after_the_event() {
        let mut fields = Fields {
            message: Some("  ".into()),
            ..Fields::default()
        };
        assert_eq!(
            fields.name("event auth/src/lib.rs:10"),
            "event auth/src/lib.rs:10"
        );
    }
}
