//! Crash recovery of the all-in-one (docs/RELIABILITY.md): the real `microchat` binary,
//! every service in one process on one data directory, is killed with SIGKILL — no
//! shutdown of any kind, as a crash or an OOM kill ends it — and started again on the same
//! data directory. Every event whose state change was committed before the kill must be
//! handled after the restart, once: its mail written once, its audit entry stored, the
//! listener's record of it kept, and nothing left in the outboxes or in the durable queue
//! (`<data dir>/events.db`).
//!
//! The evidence is read behind the API, from the files of the data directory. The state
//! changes auth and chat committed (users, sessions started and ended, messages) are the
//! events that must exist; the work done for them is the listener's `processed_events`,
//! the logger's audit entries (stored under the event's id and naming the user or
//! session) and the `.eml` files under `mail/`. A message sent calls for no work (issue
//! 29: no audit entry): its acknowledged send must be stored, and its event must leave
//! chat's outbox and the durable queue. A request whose answer died with the process may
//! or may not have committed: the databases settle it.
//!
//! `registrations_answered_before_a_sigkill_are_mailed_once_after_restart` runs in `make
//! test`. The fault phase — four kills under steady traffic (registrations, logins,
//! logouts, messages over WebSockets), each right after a burst of registrations so that
//! it finds events on their way — takes about a minute, so `cargo test` leaves it out;
//! `make faults` runs it and writes its table, per kill, to `target/faults-all-in-one.md`.

mod common;

use chrono::{DateTime, Utc};
use common::procs::{Process, answers_ok, binaries, free_port};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Row, SqlitePool};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";
/// Longest wait for the (re)started process to answer `/readyz`.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for the backlog of events and mails to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// An HTTP request unanswered this long by a live process is a hang: a failure.
const HANG: Duration = Duration::from_secs(15);
/// How often the data directory is read while waiting.
const POLL: Duration = Duration::from_millis(250);
/// A request the dead process refused is sent again after this.
const RETRY: Duration = Duration::from_millis(100);
/// Users registering at once before the kill of the `make test` case.
const REGISTRATIONS: usize = 300;
/// Kills in the fault phase.
const KILLS: usize = 4;
/// Traffic before each kill, and after the last restart.
const TRAFFIC_BEFORE_KILL: Duration = Duration::from_secs(4);
/// Sockets sending into one room, each a message every [`SEND_EVERY`].
const CHATTERS: usize = 4;
const SEND_EVERY: Duration = Duration::from_millis(250);
/// Users at a time registering, logging in and logging out, one after the other.
const CHURNERS: usize = 4;
/// The pause of each churner between two users.
const CHURN_PAUSE: Duration = Duration::from_millis(100);
/// Registrations sent at once at the end of each stretch of traffic, the kill following
/// their last answer: so that every kill finds events on their way to the listener.
const BURST: usize = 50;

// ---- the process ------------------------------------------------------------------------

/// The `microchat` binary on a data directory of its own. Its broker listens on a fixed
/// port, so clients find it again after a restart; every other port is the system's choice.
struct AllInOne {
    process: Process,
    /// The test's directory: the process's log and its data directory.
    dir: PathBuf,
    base: String,
    data: DataDir,
}

/// The settings of a test run: no rate limits, a cheap password hash, the deferred work at
/// the interactive priority (the machine is shared with other tests and builds).
fn settings(broker_port: u16) -> Vec<(&'static str, String)> {
    let any_port = "127.0.0.1:0".to_owned();
    vec![
        ("BROKER_LISTEN", format!("127.0.0.1:{broker_port}")),
        ("AUTH_LISTEN", any_port.clone()),
        ("CHAT_LISTEN", any_port.clone()),
        ("LOGGER_LISTEN", any_port.clone()),
        ("MAIL_LISTEN", any_port.clone()),
        ("LISTENER_LISTEN", any_port.clone()),
        ("LISTENER_ADMIN_LISTEN", any_port.clone()),
        ("FRONTEND_LISTEN", any_port.clone()),
        ("MICROCHAT_METRICS_LISTEN", any_port),
        ("BROKER_RATE_LIMIT_AUTH", "off".into()),
        ("BROKER_RATE_LIMIT_API", "off".into()),
        ("AUTH_ARGON2_MEMORY_KIB", "64".into()),
        ("AUTH_ARGON2_ITERATIONS", "1".into()),
        ("MICROCHAT_DEFERRED_NICE", "0".into()),
        // The log is read in failure messages, not on a terminal.
        ("NO_COLOR", "1".into()),
    ]
}

impl AllInOne {
    /// Starts it and waits until it is ready; `None` (skipped, saying so) when the binary
    /// is not built.
    async fn start() -> Option<Self> {
        let bin = binaries(&["microchat"])?;
        let dir = common::temp_dir();
        let port = free_port();
        let process = Process::spawn(&bin, "microchat", &dir, &settings(port));
        let mut app = Self {
            data: DataDir::open(&dir.join("microchat")),
            process,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        app.wait_ready().await;
        Some(app)
    }

    /// Waits until `/readyz` answers 200; returns how long that took.
    async fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        let url = format!("{}/readyz", self.base);
        while !answers_ok(&url, Duration::ZERO).await {
            assert!(
                self.process.running(),
                "the all-in-one exited on its own\n{}",
                self.logs()
            );
            assert!(
                started.elapsed() < READY_LIMIT,
                "the all-in-one did not answer /readyz within {READY_LIMIT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    /// SIGKILL. Returns the moment after the process was gone: every change it committed
    /// is older.
    async fn kill(&mut self) -> DateTime<Utc> {
        self.process.kill().await;
        Utc::now()
    }

    /// Starts it again with the same settings and data directory; returns how long until
    /// it answered `/readyz`.
    async fn restart(&mut self) -> Duration {
        self.process.start();
        self.wait_ready().await
    }

    /// The end of its log and where its data is, for a failure message.
    fn logs(&self) -> String {
        format!(
            "{}\n(log and data directory kept under {})",
            self.process.tail(),
            self.dir.display()
        )
    }

    /// Kills it and removes its directory (a failed test keeps it, for the log and data).
    async fn finish(mut self) {
        self.process.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- what the data directory shows --------------------------------------------------------

/// An event type, by the state change behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Registered,
    LoggedIn,
    LoggedOut,
    MessageSent,
}

impl Kind {
    const ALL: [Self; 4] = [
        Self::Registered,
        Self::LoggedIn,
        Self::LoggedOut,
        Self::MessageSent,
    ];

    fn routing_key(self) -> &'static str {
        match self {
            Self::Registered => "user.registered",
            Self::LoggedIn => "user.logged_in",
            Self::LoggedOut => "user.logged_out",
            Self::MessageSent => "message.sent",
        }
    }

    /// The type of an audit entry named `audit <routing key>` (of a type that has any:
    /// another one is counted as unexplained).
    fn of_audit(name: &str) -> Option<Self> {
        let key = name.strip_prefix("audit ")?;
        Self::ALL
            .into_iter()
            .find(|kind| kind.has_work() && kind.routing_key() == key)
    }

    /// Whether the listener does anything for the event (its work, its audit entry and
    /// its record in `processed_events`): user events; a message sent calls for nothing
    /// (issue 29), so only its answer (the send acknowledged, the message stored) and
    /// the outboxes and the durable queue emptying account for it.
    fn has_work(self) -> bool {
        self != Self::MessageSent
    }

    /// The mail the event owes its user.
    fn mail(self) -> Option<MailKind> {
        match self {
            Self::Registered => Some(MailKind::Welcome),
            Self::LoggedOut => Some(MailKind::Logout),
            Self::LoggedIn | Self::MessageSent => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum MailKind {
    Welcome,
    Logout,
}

/// A change is known by its type and what its audit entry names: the username of a
/// registration, the session of a login or logout, the id of a message.
type ChangeKey = (Kind, String);

/// A state change auth or chat committed, which publishes one event.
#[derive(Debug, Clone)]
struct Change {
    kind: Kind,
    key: String,
    at: DateTime<Utc>,
    /// The user's address, for the changes that owe a mail.
    email: Option<String>,
    /// Whose change it is, by address (a logout, mail owed or not).
    user: Option<String>,
}

impl Change {
    fn id(&self) -> ChangeKey {
        (self.kind, self.key.clone())
    }
}

/// The listener's work, as its records and the logger's audit entries show it.
#[derive(Debug, Default)]
struct Work {
    /// The event ids of audit entries, by the change they name.
    audits: HashMap<ChangeKey, Vec<Uuid>>,
    /// `processed_events`: event id → routing key.
    processed: HashMap<Uuid, String>,
    /// Audit entries of other event types, or naming nothing.
    other_audits: usize,
}

impl Work {
    /// How many events of `change` have had their work done: audited (the last step) and
    /// recorded.
    fn handled(&self, change: &ChangeKey) -> usize {
        self.audits.get(change).map_or(0, |events| {
            events
                .iter()
                .filter(|event| self.processed.contains_key(event))
                .count()
        })
    }

    fn audit_entries(&self, change: &ChangeKey) -> usize {
        self.audits.get(change).map_or(0, Vec::len)
    }

    /// Events recorded as processed that have no audit entry: their audit was lost.
    fn processed_unaudited(&self) -> usize {
        let audited: HashSet<&Uuid> = self.audits.values().flatten().collect();
        self.processed
            .keys()
            .filter(|event| !audited.contains(event))
            .count()
    }
}

/// Mails written: the Message-ID of each file, by recipient and kind.
#[derive(Debug, Default)]
struct MailsWritten {
    mails: HashMap<(String, MailKind), Vec<String>>,
    /// Mails of no kind this test causes (To and Subject).
    other: Vec<String>,
}

impl MailsWritten {
    fn of(&self, mail: &(String, MailKind)) -> &[String] {
        self.mails.get(mail).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The headers of one `.eml` file that tell what it is.
#[derive(Debug, Clone)]
struct MailHeaders {
    to: String,
    subject: String,
    message_id: String,
}

impl MailHeaders {
    /// The headers of a mail whose header block is complete; `None` while it is being
    /// written.
    fn parse(text: &str) -> Option<Self> {
        let end = text.find("\r\n\r\n").or_else(|| text.find("\n\n"))?;
        let header = |name: &str| {
            text[..end].lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let to = header("To")?;
        // `Name <address>` or a bare address.
        let to = to
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map_or(to.as_str(), |(address, _)| address)
            .to_lowercase();
        Some(Self {
            to,
            subject: header("Subject").unwrap_or_default(),
            message_id: header("Message-ID").unwrap_or_default(),
        })
    }

    fn kind(&self) -> Option<MailKind> {
        if self.subject.starts_with("Welcome to microchat") {
            Some(MailKind::Welcome)
        } else if self.subject.starts_with("You signed out") {
            Some(MailKind::Logout)
        } else {
            None
        }
    }
}

/// The mail directory; each file is read once its headers are complete.
struct MailDir {
    dir: PathBuf,
    read: HashMap<PathBuf, MailHeaders>,
}

impl MailDir {
    fn mails_written(&mut self) -> MailsWritten {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
                if path.extension().is_none_or(|ext| ext != "eml") || self.read.contains_key(&path)
                {
                    continue;
                }
                let headers = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| MailHeaders::parse(&text));
                if let Some(headers) = headers {
                    self.read.insert(path, headers);
                }
            }
        }
        let mut mails_written = MailsWritten::default();
        for headers in self.read.values() {
            match headers.kind() {
                Some(kind) => mails_written
                    .mails
                    .entry((headers.to.clone(), kind))
                    .or_default()
                    .push(headers.message_id.clone()),
                None => mails_written
                    .other
                    .push(format!("to {}: {}", headers.to, headers.subject)),
            }
        }
        mails_written
    }
}

/// What waits in the durable queue.
#[derive(Debug, Clone, Copy)]
struct Queue {
    queued: i64,
    parked: i64,
}

/// A data directory of the all-in-one, read beside the process (running or dead) through
/// read-only connections.
struct DataDir {
    path: PathBuf,
    auth: SqlitePool,
    chat: SqlitePool,
    listener: SqlitePool,
    logs: SqlitePool,
    events: SqlitePool,
    mail: Mutex<MailDir>,
}

impl DataDir {
    fn open(path: &Path) -> Self {
        let db = |file: &str| common::read_only_sqlite(&path.join(file));
        Self {
            path: path.to_owned(),
            auth: db("auth.db"),
            chat: db("chat.db"),
            listener: db("listener.db"),
            logs: db("logs.db"),
            events: db("events.db"),
            mail: Mutex::new(MailDir {
                dir: path.join("mail"),
                read: HashMap::new(),
            }),
        }
    }

    /// Every state change auth and chat committed.
    async fn changes(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        let users = sqlx::query("SELECT username, email, created_at FROM users")
            .fetch_all(&self.auth)
            .await
            .expect("auth.db's users are readable");
        for user in users {
            changes.push(Change {
                kind: Kind::Registered,
                key: user.get("username"),
                at: user.get("created_at"),
                email: Some(user.get::<String, _>("email").to_lowercase()),
                user: None,
            });
        }
        let sessions = sqlx::query(
            "SELECT sessions.id, sessions.created_at, sessions.revoked_at, users.email AS address, \
             CASE WHEN users.email_verified_at IS NULL THEN NULL ELSE users.email END AS email \
             FROM sessions JOIN users ON users.id = sessions.user_id",
        )
        .fetch_all(&self.auth)
        .await
        .expect("auth.db's sessions are readable");
        for session in sessions {
            let id = session.get::<Uuid, _>("id").to_string();
            changes.push(Change {
                kind: Kind::LoggedIn,
                key: id.clone(),
                at: session.get("created_at"),
                email: None,
                user: None,
            });
            if let Some(revoked_at) = session.get::<Option<DateTime<Utc>>, _>("revoked_at") {
                changes.push(Change {
                    kind: Kind::LoggedOut,
                    key: id,
                    at: revoked_at,
                    // Only a verified address gets a logout mail.
                    email: session
                        .get::<Option<String>, _>("email")
                        .map(|email| email.to_lowercase()),
                    user: Some(session.get::<String, _>("address").to_lowercase()),
                });
            }
        }
        let messages = sqlx::query("SELECT id, created_at FROM messages")
            .fetch_all(&self.chat)
            .await
            .expect("chat.db's messages are readable");
        for message in messages {
            changes.push(Change {
                kind: Kind::MessageSent,
                key: message.get::<Uuid, _>("id").to_string(),
                at: message.get("created_at"),
                email: None,
                user: None,
            });
        }
        changes
    }

    /// The listener's records and the audit entries in the logger's database.
    async fn work(&self) -> Work {
        let mut work = Work::default();
        let audits = sqlx::query(
            "SELECT id, name, json_extract(data, '$.details.username') AS username, \
                    json_extract(data, '$.details.session_id') AS session_id \
             FROM logs WHERE service = 'listener' AND name LIKE 'audit %'",
        )
        .fetch_all(&self.logs)
        .await
        .expect("logs.db's entries are readable");
        for audit in audits {
            let named = |column: &str| audit.get::<Option<String>, _>(column);
            let change = Kind::of_audit(&audit.get::<String, _>("name")).and_then(|kind| {
                let key = match kind {
                    Kind::Registered => named("username"),
                    Kind::LoggedIn | Kind::LoggedOut => named("session_id"),
                    // Not a kind of audit entry (`of_audit`).
                    Kind::MessageSent => None,
                };
                Some((kind, key?))
            });
            match change {
                Some(change) => work.audits.entry(change).or_default().push(audit.get("id")),
                None => work.other_audits += 1,
            }
        }
        let processed = sqlx::query("SELECT event_id, routing_key FROM processed_events")
            .fetch_all(&self.listener)
            .await
            .expect("listener.db's processed_events are readable");
        for row in processed {
            work.processed
                .insert(row.get("event_id"), row.get("routing_key"));
        }
        work
    }

    fn mails_written(&self) -> MailsWritten {
        self.mail
            .lock()
            .expect("no reader panics holding the mail directory")
            .mails_written()
    }

    /// Rows still waiting in the outboxes of auth and chat.
    async fn outbox(&self) -> i64 {
        let mut waiting = 0;
        for (file, pool) in [("auth.db", &self.auth), ("chat.db", &self.chat)] {
            waiting += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(pool)
                .await
                .unwrap_or_else(|error| panic!("{file}'s outbox is readable: {error}"));
        }
        waiting
    }

    /// What waits in the durable queue; `Err` says why it cannot be read.
    async fn queue(&self) -> Result<Queue, String> {
        let file = self.path.join("events.db");
        if !file.is_file() {
            return Err(format!("{} does not exist", file.display()));
        }
        sqlx::query_as::<_, (i64, i64)>("SELECT count(*), count(parked_at) FROM queued")
            .fetch_one(&self.events)
            .await
            .map(|(queued, parked)| Queue { queued, parked })
            .map_err(|error| format!("{}: {error}", file.display()))
    }

    /// The rows of the durable queue by queue, type and whether parked, for a failure message.
    async fn queue_rows(&self) -> String {
        let rows = sqlx::query(
            "SELECT queue, routing_key, parked_at IS NOT NULL AS parked, count(*) AS n \
             FROM queued GROUP BY 1, 2, 3",
        )
        .fetch_all(&self.events)
        .await
        .unwrap_or_default();
        rows.iter()
            .map(|row| {
                format!(
                    "{} {}{} × {}",
                    row.get::<String, _>("queue"),
                    row.get::<String, _>("routing_key"),
                    if row.get::<i64, _>("parked") != 0 {
                        " (parked)"
                    } else {
                        ""
                    },
                    row.get::<i64, _>("n")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The data directory at one moment.
struct Snapshot {
    changes: Vec<Change>,
    work: Work,
    mails_written: MailsWritten,
}

/// Events and mails still owed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Backlog {
    events: usize,
    mails: usize,
}

impl Backlog {
    fn is_empty(self) -> bool {
        self == Self::default()
    }
}

/// The accounting of the changes of one stretch of time (or one type).
#[derive(Debug, Default, Clone)]
struct Tally {
    produced: usize,
    handled: usize,
    lost: BTreeMap<&'static str, usize>,
    duplicated: usize,
    audits: usize,
    mails_owed: usize,
    mails_lost: usize,
    mails_duplicated: usize,
    /// Of the duplicates: files with a Message-ID already written (the same mail again).
    mails_same_id: usize,
}

impl Tally {
    fn lost(&self) -> usize {
        self.lost.values().sum()
    }

    fn lost_text(&self) -> String {
        let kinds: Vec<String> = self
            .lost
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        format!("{} ({})", self.lost(), kinds.join(", "))
    }
}

impl Snapshot {
    async fn read(data: &DataDir) -> Self {
        // The work before the changes: a change committed between the two reads then has
        // no work yet, which a later read catches up with; never the other way round.
        let work = data.work().await;
        let mails_written = data.mails_written();
        let changes = data.changes().await;
        Self {
            changes,
            work,
            mails_written,
        }
    }

    /// The mails the changes that `wanted` accepts owe, by recipient and kind.
    fn owed(&self, wanted: impl Fn(&Change) -> bool) -> BTreeMap<(String, MailKind), usize> {
        let mut owed = BTreeMap::new();
        for change in self.changes.iter().filter(|change| wanted(change)) {
            if let (Some(kind), Some(email)) = (change.kind.mail(), &change.email) {
                *owed.entry((email.clone(), kind)).or_default() += 1;
            }
        }
        owed
    }

    /// Events of the changes before `until` not handled yet, and their mails not written.
    fn backlog(&self, until: Option<DateTime<Utc>>) -> Backlog {
        let before = |change: &Change| until.is_none_or(|until| change.at < until);
        let events = self
            .changes
            .iter()
            .filter(|change| {
                change.kind.has_work() && before(change) && self.work.handled(&change.id()) == 0
            })
            .count();
        let mails = self
            .owed(before)
            .iter()
            .map(|(mail, owed)| owed.saturating_sub(self.mails_written.of(mail).len()))
            .sum();
        Backlog { events, mails }
    }

    /// The accounting of the changes that `wanted` accepts.
    fn tally(&self, wanted: impl Fn(&Change) -> bool) -> Tally {
        let mut tally = Tally::default();
        for change in self
            .changes
            .iter()
            .filter(|change| change.kind.has_work() && wanted(change))
        {
            let id = change.id();
            let handled = self.work.handled(&id);
            tally.produced += 1;
            if handled == 0 {
                *tally.lost.entry(change.kind.routing_key()).or_default() += 1;
            } else {
                tally.handled += 1;
            }
            // Two events for one change: the change published twice.
            tally.duplicated += handled.saturating_sub(1);
            tally.audits += self.work.audit_entries(&id);
        }
        for (mail, owed) in self.owed(wanted) {
            let written = self.mails_written.of(&mail);
            let distinct: HashSet<&String> = written.iter().collect();
            tally.mails_owed += owed;
            tally.mails_lost += owed.saturating_sub(written.len());
            tally.mails_duplicated += written.len().saturating_sub(owed);
            tally.mails_same_id += written.len() - distinct.len();
        }
        tally
    }

    /// What no change explains: mails nobody owed, audit entries of changes that were
    /// never committed, processed events without their audit entry.
    fn unexplained(&self) -> Vec<String> {
        let mut found = Vec::new();
        let owed = self.owed(|_| true);
        for (mail, ids) in &self.mails_written.mails {
            if !owed.contains_key(mail) {
                found.push(format!("{} mail(s) nobody owed: {mail:?}", ids.len()));
            }
        }
        for other in &self.mails_written.other {
            found.push(format!("a mail of no kind this test causes: {other}"));
        }
        let committed: HashSet<ChangeKey> = self.changes.iter().map(Change::id).collect();
        let phantom = self
            .work
            .audits
            .keys()
            .filter(|change| !committed.contains(*change))
            .count();
        if phantom > 0 {
            found.push(format!(
                "{phantom} audit entries name a change auth and chat never committed"
            ));
        }
        if self.work.other_audits > 0 {
            found.push(format!(
                "{} audit entries of events this test does not cause",
                self.work.other_audits
            ));
        }
        let unaudited = self.work.processed_unaudited();
        if unaudited > 0 {
            found.push(format!(
                "{unaudited} events in processed_events have no audit entry"
            ));
        }
        found
    }
}

/// Whether every event of `snapshot` is handled, every mail written, and nothing waits
/// in the outboxes or the durable queue (when it can be read at all: that it must be is
/// judged apart), so no more work, and no duplicate, can come.
async fn settled(data: &DataDir, snapshot: &Snapshot) -> bool {
    snapshot.backlog(None).is_empty()
        && data.outbox().await == 0
        && !matches!(data.queue().await, Ok(queue) if queue.queued > 0)
}

// ---- a crash right after 300 registrations --------------------------------------------------

/// Registers `username`; its status, or why there was none.
async fn register(client: &reqwest::Client, base: &str, username: String) -> Result<u16, String> {
    client
        .post(format!("{base}/api/auth/register"))
        .timeout(HANG)
        .json(&json!({ "username": username, "email": email_of(&username), "password": PASSWORD }))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| error.to_string())
}

/// The address every user of these tests registers with.
fn email_of(username: &str) -> String {
    format!("{username}@crash.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_answered_before_a_sigkill_are_mailed_once_after_restart() {
    let Some(mut app) = AllInOne::start().await else {
        return;
    };
    let client = reqwest::Client::new();
    let answers = futures::future::join_all(
        (0..REGISTRATIONS).map(|n| register(&client, &app.base, format!("new{n}"))),
    )
    .await;
    let refused: Vec<String> = answers
        .iter()
        .enumerate()
        .filter(|(_, answer)| *answer != &Ok(201))
        .map(|(n, answer)| format!("new{n}: {answer:?}"))
        .collect();
    assert!(
        refused.is_empty(),
        "every registration answers 201: {refused:?}\n{}",
        app.logs()
    );
    app.kill().await;
    let at_kill = Snapshot::read(&app.data).await;
    let pending = at_kill.backlog(None);
    let outbox = app.data.outbox().await;
    app.restart().await;

    let started = Instant::now();
    let after = loop {
        let snapshot = Snapshot::read(&app.data).await;
        if settled(&app.data, &snapshot).await || started.elapsed() > DRAIN_LIMIT {
            break snapshot;
        }
        tokio::time::sleep(POLL).await;
    };
    let tally = after.tally(|_| true);
    let users = after.changes.len();
    let processed = after
        .work
        .processed
        .values()
        .filter(|key| *key == "user.registered")
        .count();
    let once = after
        .owed(|_| true)
        .keys()
        .filter(|mail| after.mails_written.of(mail).len() == 1)
        .count();
    println!(
        "{REGISTRATIONS} registrations answered 201, then SIGKILL: {} events unhandled and {} \
         welcome mails unwritten at the kill ({outbox} outbox rows). After the restart \
         ({:.1} s of waiting): {users} users in auth.db, {once} with exactly one welcome mail, \
         {} lost, {} duplicated ({} with a Message-ID already written); {processed} \
         processed_events rows of user.registered, {} audit entries, {} events handled, {} lost.",
        pending.events,
        pending.mails,
        started.elapsed().as_secs_f64(),
        tally.mails_lost,
        tally.mails_duplicated,
        tally.mails_same_id,
        tally.audits,
        tally.handled,
        tally.lost(),
    );
    assert_eq!(
        users,
        REGISTRATIONS,
        "every registration answered 201 is in auth.db\n{}",
        app.logs()
    );
    assert!(
        tally.mails_lost == 0 && tally.mails_duplicated == 0 && once == REGISTRATIONS,
        "every user has exactly one welcome mail within {DRAIN_LIMIT:?} of the restart: \
         {} lost, {} duplicated\n{}",
        tally.mails_lost,
        tally.mails_duplicated,
        app.logs()
    );
    assert_eq!(
        processed,
        REGISTRATIONS,
        "the listener recorded each user.registered event once\n{}",
        app.logs()
    );
    assert!(
        tally.handled == REGISTRATIONS && tally.audits == REGISTRATIONS && tally.lost() == 0,
        "one audit entry per event: {} events handled, {} audit entries, {} lost\n{}",
        tally.handled,
        tally.audits,
        tally.lost_text(),
        app.logs()
    );
    let unexplained = after.unexplained();
    assert!(unexplained.is_empty(), "{unexplained:#?}\n{}", app.logs());
    app.finish().await;
}

// ---- the fault phase: kills under steady traffic --------------------------------------------

/// What the clients did and were told, by segment: the traffic before the first kill is
/// segment 0, after the first restart segment 1, and so on.
#[derive(Debug, Default)]
struct Ledger {
    /// Requests answered as expected.
    ok: BTreeMap<usize, usize>,
    /// Requests whose answer died with the process: the databases settle them.
    unanswered: BTreeMap<usize, usize>,
    /// Connections the dead process refused (the request is sent again).
    refused: BTreeMap<usize, usize>,
    /// Sends acknowledged on a socket.
    acked: BTreeMap<usize, usize>,
    /// Answers no client should get.
    unexpected: Vec<String>,
    /// Usernames whose registration answered 201.
    registered: Vec<String>,
    /// Usernames whose logout answered 204.
    logged_out: Vec<String>,
    /// Ids of the messages whose send was acknowledged.
    messages: Vec<String>,
}

/// The clients' shared state.
struct Traffic {
    base: String,
    http: reqwest::Client,
    room: OnceLock<String>,
    segment: AtomicUsize,
    stopped: AtomicBool,
    ledger: Mutex<Ledger>,
}

impl Traffic {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            room: OnceLock::new(),
            segment: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            ledger: Mutex::default(),
        }
    }

    fn segment(&self) -> usize {
        self.segment.load(Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .expect("no traffic task panics holding the ledger")
    }

    /// `POST path`, sent again while the dead process refuses connections. The answer's
    /// body when its status is `expected`; `None` otherwise, recorded: unanswered when
    /// the connection died with the process (the databases settle whether it happened),
    /// unexpected for any other status or a hang.
    async fn post(
        &self,
        op: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
        expected: StatusCode,
    ) -> Option<Value> {
        loop {
            let segment = self.segment();
            let mut request = self
                .http
                .post(format!("{}{path}", self.base))
                .timeout(HANG)
                .json(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    let mut ledger = self.ledger();
                    if status == expected {
                        *ledger.ok.entry(segment).or_default() += 1;
                        return Some(answer);
                    }
                    ledger
                        .unexpected
                        .push(format!("{op} (segment {segment}) → {status} {answer}"));
                    return None;
                }
                Err(error) if error.is_connect() => {
                    *self.ledger().refused.entry(segment).or_default() += 1;
                    if self.stopped() {
                        return None;
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Err(error) if error.is_timeout() => {
                    self.ledger().unexpected.push(format!(
                        "{op} (segment {segment}) → no answer within {HANG:?}"
                    ));
                    return None;
                }
                Err(_) => {
                    *self.ledger().unanswered.entry(segment).or_default() += 1;
                    return None;
                }
            }
        }
    }

    /// Signs up the chatters in one room, then starts them and the churners; returns the
    /// traffic and its tasks.
    async fn start(base: &str) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let traffic = Arc::new(Self::new(base));
        let mut tokens = Vec::new();
        for n in 0..CHATTERS {
            tokens.push(traffic.sign_up(&format!("chatter{n}")).await);
        }
        let room = traffic
            .post(
                "create room",
                "/api/rooms",
                Some(&tokens[0]),
                &json!({ "name": "crash" }),
                StatusCode::CREATED,
            )
            .await
            .and_then(|room| room["id"].as_str().map(str::to_owned))
            .expect("the room is created");
        for token in &tokens[1..] {
            traffic
                .post(
                    "join",
                    &format!("/api/rooms/{room}/join"),
                    Some(token),
                    &json!({}),
                    StatusCode::OK,
                )
                .await
                .expect("a chatter joins the room");
        }
        traffic.room.set(room).expect("the room is set once");
        let mut tasks = Vec::new();
        for (who, token) in tokens.into_iter().enumerate() {
            tasks.push(tokio::spawn(chatter(Arc::clone(&traffic), who, token)));
        }
        for worker in 0..CHURNERS {
            tasks.push(tokio::spawn(churn(Arc::clone(&traffic), worker)));
        }
        (traffic, tasks)
    }

    /// Stops the traffic and waits for its tasks; returns what it did.
    async fn stop(&self, tasks: Vec<tokio::task::JoinHandle<()>>) -> Ledger {
        self.stopped.store(true, Ordering::SeqCst);
        for task in tasks {
            tokio::time::timeout(HANG + Duration::from_secs(5), task)
                .await
                .expect("the traffic stops")
                .expect("no traffic task panics");
        }
        std::mem::take(&mut *self.ledger())
    }

    /// Registers and logs in `username`; returns the access token.
    async fn sign_up(&self, username: &str) -> String {
        assert!(
            self.register(username).await,
            "{username} registers: {:?}",
            self.ledger().unexpected
        );
        self.log_in(username)
            .await
            .unwrap_or_else(|| panic!("{username} logs in: {:?}", self.ledger().unexpected))
    }

    /// Registers `username`; true (and in the ledger) when it answered 201.
    async fn register(&self, username: &str) -> bool {
        let registration =
            json!({ "username": username, "email": email_of(username), "password": PASSWORD });
        let registered = self
            .post(
                "register",
                "/api/auth/register",
                None,
                &registration,
                StatusCode::CREATED,
            )
            .await
            .is_some();
        if registered {
            self.ledger().registered.push(username.to_owned());
        }
        registered
    }

    /// Logs `username` in; its access token when it answered 200.
    async fn log_in(&self, username: &str) -> Option<String> {
        let login = json!({ "login": username, "password": PASSWORD });
        self.post("login", "/api/auth/login", None, &login, StatusCode::OK)
            .await
            .and_then(|answer| answer["token"].as_str().map(str::to_owned))
    }
}

/// [`BURST`] registrations at once, before kill `kill`.
async fn burst(traffic: &Traffic, kill: usize) {
    futures::future::join_all((0..BURST).map(|n| async move {
        traffic.register(&format!("burst{kill}_{n}")).await;
    }))
    .await;
}

/// Users registering, logging in and logging out, one after the other. A step without
/// an answer ends the user's turn: whether it happened is for the databases to say.
async fn churn(traffic: Arc<Traffic>, worker: usize) {
    let mut n = 0_u64;
    while !traffic.stopped() {
        n += 1;
        tokio::time::sleep(CHURN_PAUSE).await;
        let username = format!("churn{worker}_{n}");
        if !traffic.register(&username).await {
            continue;
        }
        let Some(token) = traffic.log_in(&username).await else {
            continue;
        };
        let logged_out = traffic
            .post(
                "logout",
                "/api/auth/logout",
                Some(&token),
                &json!({}),
                StatusCode::NO_CONTENT,
            )
            .await;
        if logged_out.is_some() {
            traffic.ledger().logged_out.push(username);
        }
    }
}

/// One socket sending a message into the room every [`SEND_EVERY`], opened again after
/// each kill. A send whose socket died before its `ack` is for the databases to settle.
async fn chatter(traffic: Arc<Traffic>, who: usize, token: String) {
    let room = traffic
        .room
        .get()
        .expect("the room exists before the chatters start")
        .clone();
    let mut sent = 0_u64;
    while !traffic.stopped() {
        let Some(socket) = common::ws::open(&traffic.base, &token).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let mut tick = tokio::time::interval(SEND_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if traffic.stopped() {
                        let _ = sink.send(Message::Close(None)).await;
                        return;
                    }
                    sent += 1;
                    let frame = json!({
                        "type": "send",
                        "conversation_id": room,
                        "body": format!("crash {who} {sent}"),
                        "client_id": format!("c{who}-{sent}"),
                    });
                    if sink.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                    match frame["type"].as_str() {
                        Some("ack") => {
                            let segment = traffic.segment();
                            let mut ledger = traffic.ledger();
                            *ledger.acked.entry(segment).or_default() += 1;
                            if let Some(id) = frame["message"]["id"].as_str() {
                                ledger.messages.push(id.to_owned());
                            }
                        }
                        Some("error") => traffic
                            .ledger()
                            .unexpected
                            .push(format!("a send refused: {frame}")),
                        _ => {}
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One kill and the recovery after it.
#[derive(Debug)]
struct KillReport {
    killed_at: DateTime<Utc>,
    /// Events of the changes before the kill that were not handled at the kill, and
    /// their mails not written.
    in_flight: Backlog,
    outbox: i64,
    queue: Result<Queue, String>,
    restarted: Instant,
    ready_after: Duration,
    /// When everything owed for the changes before the kill was done.
    drained_after: Option<Duration>,
}

/// Notes, for each kill whose backlog has drained since the last look, how long it took.
fn note_drains(snapshot: &Snapshot, kills: &mut [KillReport]) {
    for kill in kills.iter_mut().filter(|kill| kill.drained_after.is_none()) {
        if snapshot.backlog(Some(kill.killed_at)).is_empty() {
            kill.drained_after = Some(kill.restarted.elapsed());
        }
    }
}

/// Lets the traffic run for `duration`, noting the drains meanwhile.
async fn traffic_for(data: &DataDir, kills: &mut [KillReport], duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        if kills.iter().any(|kill| kill.drained_after.is_none()) {
            note_drains(&Snapshot::read(data).await, kills);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until everything has [`settled`]; how long that took, `None` if not within
/// [`DRAIN_LIMIT`].
async fn drain(data: &DataDir, kills: &mut [KillReport]) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let snapshot = Snapshot::read(data).await;
        note_drains(&snapshot, kills);
        if settled(data, &snapshot).await {
            return Some(started.elapsed());
        }
        if started.elapsed() > DRAIN_LIMIT {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the data directory shows at the end, beside the last snapshot.
struct Ending {
    outbox: i64,
    queue: Result<Queue, String>,
    queue_rows: String,
    drained_after: Option<Duration>,
    exited: bool,
}

/// Kill `kill` (1-based): SIGKILL after a burst of registrations, a look at what the
/// process left unfinished, and the restart.
async fn kill_and_restart(app: &mut AllInOne, traffic: &Traffic, kill: usize) -> KillReport {
    burst(traffic, kill).await;
    eprintln!("crash: kill {kill} of {KILLS}");
    let killed_at = app.kill().await;
    let in_flight = Snapshot::read(&app.data).await.backlog(None);
    let (outbox, queue) = (app.data.outbox().await, app.data.queue().await);
    traffic.segment.store(kill, Ordering::SeqCst);
    let restarted = Instant::now();
    let ready_after = app.restart().await;
    KillReport {
        killed_at,
        in_flight,
        outbox,
        queue,
        restarted,
        ready_after,
        drained_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "four kills under traffic take about a minute: `make faults` runs it"]
async fn the_all_in_one_killed_under_traffic_loses_nothing() {
    let Some(mut app) = AllInOne::start().await else {
        return;
    };
    let (traffic, tasks) = Traffic::start(&app.base).await;
    let mut kills: Vec<KillReport> = Vec::new();
    for kill in 1..=KILLS {
        traffic_for(&app.data, &mut kills, TRAFFIC_BEFORE_KILL).await;
        kills.push(kill_and_restart(&mut app, &traffic, kill).await);
    }
    traffic_for(&app.data, &mut kills, TRAFFIC_BEFORE_KILL).await;
    let ledger = traffic.stop(tasks).await;
    let drained_after = drain(&app.data, &mut kills).await;
    let last = Snapshot::read(&app.data).await;
    let ending = Ending {
        outbox: app.data.outbox().await,
        queue: app.data.queue().await,
        queue_rows: app.data.queue_rows().await,
        drained_after,
        exited: !app.process.running(),
    };
    let table = table(&last, &kills, &ending, &ledger);
    println!("{table}");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/faults-all-in-one.md");
    if let Some(dir) = report.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&report, &table);
    let failures = failures(&last, &kills, &ending, &ledger);
    assert!(
        failures.is_empty(),
        "the all-in-one broke its promise across SIGKILLs:\n- {}\n\n{table}\n{}",
        failures.join("\n- "),
        app.logs()
    );
    app.finish().await;
}

/// The changes committed between kill `segment` and the one before (the first: since
/// the start; the last: since the last restart), and the row's name.
fn segment(kills: &[KillReport], segment: usize) -> (String, impl Fn(&Change) -> bool) {
    let from = segment.checked_sub(1).map(|before| kills[before].killed_at);
    let to = kills.get(segment).map(|kill| kill.killed_at);
    let name = if to.is_some() {
        format!("kill {}", segment + 1)
    } else {
        "after the last restart".to_owned()
    };
    let within = move |change: &Change| {
        from.is_none_or(|from| change.at >= from) && to.is_none_or(|to| change.at < to)
    };
    (name, within)
}

/// The accounting, per kill and in total, as markdown.
fn table(last: &Snapshot, kills: &[KillReport], ending: &Ending, ledger: &Ledger) -> String {
    let mut table = String::from(
        "| kill | requests ok / unanswered / refused while down | sends acked | events produced | in flight at the kill | handled | lost | duplicated | audit entries | mails expected | mails lost / duplicated (same Message-ID) | ready after restart | backlog drained after restart |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for n in 0..=KILLS {
        let (name, within) = segment(kills, n);
        let count = |counts: &BTreeMap<usize, usize>| counts.get(&n).copied().unwrap_or(0);
        let requests = format!(
            "{} / {} / {} | {}",
            count(&ledger.ok),
            count(&ledger.unanswered),
            count(&ledger.refused),
            count(&ledger.acked)
        );
        let (in_flight, ready, drained) = match kills.get(n) {
            Some(kill) => (
                format!(
                    "{} events, {} mails (outboxes {}, queue {})",
                    kill.in_flight.events,
                    kill.in_flight.mails,
                    kill.outbox,
                    kill.queue.as_ref().map_or_else(
                        |_| "no events.db".to_owned(),
                        |queue| queue.queued.to_string()
                    )
                ),
                seconds(Some(kill.ready_after)),
                seconds(kill.drained_after),
            ),
            None => (
                "—".to_owned(),
                "—".to_owned(),
                format!(
                    "{} after the traffic stopped",
                    seconds(ending.drained_after)
                ),
            ),
        };
        let tally = last.tally(within);
        row(
            &mut table, &name, &requests, &tally, &in_flight, &ready, &drained,
        );
    }
    let requests = format!(
        "{} / {} / {} | {}",
        ledger.ok.values().sum::<usize>(),
        ledger.unanswered.values().sum::<usize>(),
        ledger.refused.values().sum::<usize>(),
        ledger.acked.values().sum::<usize>()
    );
    row(
        &mut table,
        "total",
        &requests,
        &last.tally(|_| true),
        "—",
        "—",
        "—",
    );
    table.push_str(
        "\n| event | produced | handled | lost | duplicated | audit entries |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for kind in Kind::ALL.into_iter().filter(|kind| kind.has_work()) {
        let tally = last.tally(|change| change.kind == kind);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            kind.routing_key(),
            tally.produced,
            tally.handled,
            tally.lost(),
            tally.duplicated,
            tally.audits
        );
    }
    let _ = writeln!(
        table,
        "\nOne all-in-one process (SQLite files in its data directory): {CHATTERS} sockets sending into one room every {} ms, {CHURNERS} users at a time registering, logging in and logging out; SIGKILL {KILLS} times, each after {} s of that traffic and {BURST} registrations at once, the process started again at once on the same data directory while the traffic went on. A row counts the changes committed between two kills; \"in flight\" is what of everything committed before the kill was not yet handled (events) or written (mails) when it died; \"backlog drained\" is when all of it was done.",
        SEND_EVERY.as_millis(),
        TRAFFIC_BEFORE_KILL.as_secs()
    );
    table
}

/// Every broken promise: per kill, at the end, and in what the clients were told.
fn failures(
    last: &Snapshot,
    kills: &[KillReport],
    ending: &Ending,
    ledger: &Ledger,
) -> Vec<String> {
    let mut failures = Vec::new();
    for n in 0..=KILLS {
        let (name, within) = segment(kills, n);
        check(&name, &last.tally(within), &mut failures);
    }
    if ending.drained_after.is_none() {
        failures.push(format!(
            "the backlog did not drain within {DRAIN_LIMIT:?} after the traffic stopped"
        ));
    }
    if ending.outbox > 0 {
        failures.push(format!(
            "{} rows left in the outboxes of auth and chat",
            ending.outbox
        ));
    }
    match &ending.queue {
        Err(why) => failures.push(format!("the durable queue cannot be read: {why}")),
        Ok(queue) if queue.queued > 0 => failures.push(format!(
            "{} events left in the durable queue, {} of them parked: {}",
            queue.queued, queue.parked, ending.queue_rows
        )),
        Ok(_) => {}
    }
    if ending.exited {
        failures.push("the all-in-one exited on its own".to_owned());
    }
    failures.extend(last.unexplained());
    failures.extend(
        ledger
            .unexpected
            .iter()
            .map(|answer| format!("unexpected: {answer}")),
    );
    failures.extend(unkept_answers(last, ledger));
    failures
}

/// The promises of one row: nothing lost, nothing twice.
fn check(name: &str, tally: &Tally, failures: &mut Vec<String>) {
    if tally.lost() > 0 || tally.duplicated > 0 {
        failures.push(format!(
            "{name}: events lost {}, duplicated {}",
            tally.lost_text(),
            tally.duplicated
        ));
    }
    if tally.audits != tally.handled + tally.duplicated {
        failures.push(format!(
            "{name}: {} audit entries for {} events handled",
            tally.audits, tally.handled
        ));
    }
    if tally.mails_lost > 0 || tally.mails_duplicated > 0 {
        failures.push(format!(
            "{name}: mails lost {}, duplicated {} ({} with a Message-ID already written)",
            tally.mails_lost, tally.mails_duplicated, tally.mails_same_id
        ));
    }
}

fn row(
    table: &mut String,
    name: &str,
    requests: &str,
    tally: &Tally,
    in_flight: &str,
    ready: &str,
    drained: &str,
) {
    let _ = writeln!(
        table,
        "| {name} | {requests} | {} | {in_flight} | {} | {} | {} | {} | {} | {} / {} ({}) | {ready} | {drained} |",
        tally.produced,
        tally.handled,
        tally.lost(),
        tally.duplicated,
        tally.audits,
        tally.mails_owed,
        tally.mails_lost,
        tally.mails_duplicated,
        tally.mails_same_id,
    );
}

/// Answers the databases contradict: a registration answered 201, a logout answered 204
/// or a send acknowledged whose change is not there.
fn unkept_answers(last: &Snapshot, ledger: &Ledger) -> Vec<String> {
    let users: HashSet<&str> = last
        .changes
        .iter()
        .filter(|change| change.kind == Kind::Registered)
        .map(|change| change.key.as_str())
        .collect();
    let ended: HashSet<&str> = last
        .changes
        .iter()
        .filter_map(|change| {
            (change.kind == Kind::LoggedOut)
                .then_some(change.user.as_deref())
                .flatten()
        })
        .collect();
    let messages: HashSet<&str> = last
        .changes
        .iter()
        .filter(|change| change.kind == Kind::MessageSent)
        .map(|change| change.key.as_str())
        .collect();
    let mut unkept = Vec::new();
    let missing = |answered: &[String], kept: &dyn Fn(&str) -> bool| {
        answered
            .iter()
            .filter(|answered| !kept(answered.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let lost_users = missing(&ledger.registered, &|username| users.contains(username));
    if !lost_users.is_empty() {
        unkept.push(format!(
            "registrations answered 201 but not in auth.db: {lost_users:?}"
        ));
    }
    let open = missing(&ledger.logged_out, &|username| {
        ended.contains(email_of(username).as_str())
    });
    if !open.is_empty() {
        unkept.push(format!(
            "logouts answered 204 whose session is not ended in auth.db: {open:?}"
        ));
    }
    let lost_messages = missing(&ledger.messages, &|id| messages.contains(id));
    if !lost_messages.is_empty() {
        unkept.push(format!(
            "sends acknowledged but not in chat.db: {lost_messages:?}"
        ));
    }
    unkept
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "never".to_owned(),
        |duration| format!("{:.1} s", duration.as_secs_f64()),
    )
}
