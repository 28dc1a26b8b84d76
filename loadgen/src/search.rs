//! `loadgen search`: full-text search over a million stored messages, on SQLite or on
//! PostgreSQL. Seeds a database of its own directly through chat's store (rooms and
//! memberships through the store's calls; messages with multi-row inserts, the search
//! index kept up by its triggers or GIN index as they go in), then runs searches one at
//! a time through the store, as chat runs them, and prints p50/p90/p99/max per kind of
//! query and overall, with the seeding time.
//!
//! The text is made up but shaped like language: a vocabulary of made-up words drawn
//! with a Zipf distribution (the most common word about one word in ten), from a fixed
//! seed, so every run stores the same messages. The searching users are each in about
//! 20 of the conversations; the queries mix common words (a few hundred thousand
//! matches), rare ones (a handful) and two words (one common, one less so).
//!
//! With `--insert-cost`, it first measures what the index adds to sending: the same
//! messages stored through `insert_messages` (batches of 128 with their events, chat's
//! hot path) into a database with the index and into one without it.

use anyhow::{Context, Result, ensure};
use chat::{
    domain::{Conversation, Kind, Message, UserRef},
    search::{SEARCH_WINDOW, SearchQuery, SearchText},
    store::{ChatStore, NewMessage, SQLITE_PAGE_SIZE},
};
use chrono::{DateTime, TimeZone, Utc};
use hdrhistogram::Histogram;
use platform::{
    on_pool, on_tx,
    sql::{self, Pool},
};
use sqlx::{Connection, Executor, PgConnection};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A SQLite file (the all-in-one).
    Sqlite,
    /// A database of its own on a PostgreSQL server.
    Postgres,
}

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// PostgreSQL server (a database on it is used to create the run's own database).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Messages to store.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u32,
    /// Conversations (rooms) they are spread over.
    #[arg(long, default_value_t = 1_000)]
    conversations: u32,
    /// Users who search.
    #[arg(long, default_value_t = 200)]
    users: u32,
    /// Conversations each searching user is in.
    #[arg(long, default_value_t = 20)]
    memberships: u32,
    /// Searches to run.
    #[arg(long, default_value_t = 3_000)]
    searches: u32,
    /// Results per page.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Seed of the text, the memberships and the queries.
    #[arg(long, default_value_t = 25)]
    seed: u64,
    /// First measure inserts/s with and without the index, storing this many messages.
    #[arg(long)]
    insert_cost: Option<u32>,
    /// Keep the database afterwards (to look at query plans) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// Words in the vocabulary.
const VOCABULARY: usize = 30_000;
/// Messages stored per statement while seeding.
const ROWS_PER_INSERT: usize = 1_000;

pub async fn run(args: Args) -> Result<()> {
    let words = vocabulary(args.seed);
    let zipf = Zipf::new(VOCABULARY, 1.0);
    if let Some(count) = args.insert_cost {
        insert_cost(&args, &words, &zipf, count).await?;
    }
    let database = Database::create(&args, "search").await?;
    let store = chat::store::connect(&database.url).await?;
    // The messages go in with plain SQL, on a pool of its own on the store's database.
    let pool = sql::connect_paged(&database.url, SQLITE_PAGE_SIZE).await?;
    let mut random = Random(args.seed);

    let started = Instant::now();
    let (rooms, users) = seed_conversations(&store, &args, &mut random).await?;
    let seeded = seed_messages(&pool, &rooms, &words, &zipf, &args, &mut random).await?;
    let seeding = started.elapsed();
    println!(
        "seeded {seeded} messages in {} conversations ({} searching users, {} each) \
         in {:.1} s ({:.0} messages/s)",
        rooms.len(),
        users.len(),
        args.memberships,
        seeding.as_secs_f64(),
        f64::from(seeded) / seeding.as_secs_f64()
    );
    analyze(&pool).await?;
    drop(pool);

    let queries = queries(&words, &users, &args, &mut random)?;
    // A few untimed searches first: the first statements prepare and fill caches.
    for query in queries.iter().take(50) {
        store.search_messages(&query.query).await?;
    }
    let mut figures = Figures::new()?;
    for query in &queries {
        let started = Instant::now();
        let hits = store.search_messages(&query.query).await?;
        figures.record(query.kind, started.elapsed(), hits.len())?;
    }
    figures.print(args.backend, args.limit);
    if args.keep {
        println!("kept the database: {}", database.url);
    } else {
        drop(store);
        database.drop().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The database of a run

struct Database {
    url: String,
    /// The server and the name (PostgreSQL), or the directory (SQLite), to remove after.
    remove: Removal,
}

enum Removal {
    Postgres { admin_url: String, name: String },
    Sqlite { dir: std::path::PathBuf },
}

impl Database {
    async fn create(args: &Args, label: &str) -> Result<Self> {
        let name = format!("loadgen_{label}_{}", Uuid::now_v7().simple());
        match args.backend {
            Backend::Postgres => {
                ensure!(
                    args.database_url.contains("@127.0.0.1")
                        || args.database_url.contains("@localhost"),
                    "load only goes to loopback"
                );
                let mut admin = PgConnection::connect(&args.database_url)
                    .await
                    .with_context(|| format!("connecting to {}", args.database_url))?;
                admin
                    .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
                    .await?;
                let (base, _) = args
                    .database_url
                    .rsplit_once('/')
                    .context("a database URL names a database")?;
                Ok(Self {
                    url: format!("{base}/{name}"),
                    remove: Removal::Postgres {
                        admin_url: args.database_url.clone(),
                        name,
                    },
                })
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(name);
                std::fs::create_dir_all(&dir)?;
                Ok(Self {
                    url: format!("sqlite://{}/chat.db", dir.display()),
                    remove: Removal::Sqlite { dir },
                })
            }
        }
    }

    async fn drop(self) -> Result<()> {
        match self.remove {
            Removal::Postgres { admin_url, name } => {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await?;
            }
            Removal::Sqlite { dir } => std::fs::remove_dir_all(dir)?,
        }
        Ok(())
    }
}

/// Fresh planner statistics (PostgreSQL's autovacuum would get there later; SQLite's
/// planner uses them too).
async fn analyze(pool: &Pool) -> Result<()> {
    let statements: &[&str] = match pool.backend() {
        sql::Backend::Postgres => &["VACUUM ANALYZE messages", "ANALYZE memberships"],
        sql::Backend::Sqlite => &["ANALYZE"],
    };
    run_each(pool, statements).await
}

/// Runs each of `statements` (no parameters) in turn.
async fn run_each(pool: &Pool, statements: &[&str]) -> Result<()> {
    for statement in statements {
        on_pool!(pool, |pool| sqlx::query(statement)
            .execute(pool)
            .await
            .map(drop))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seeding

/// The rooms, and the searching users with their memberships.
async fn seed_conversations(
    store: &ChatStore,
    args: &Args,
    random: &mut Random,
) -> Result<(Vec<Uuid>, Vec<UserRef>)> {
    let owner = UserRef {
        id: Uuid::now_v7(),
        username: "seeder".into(),
    };
    let mut rooms = Vec::with_capacity(args.conversations as usize);
    for n in 0..args.conversations {
        let room = Conversation {
            id: Uuid::now_v7(),
            kind: Kind::Room,
            name: format!("room-{n}"),
            topic: String::new(),
            created_at: Utc::now(),
        };
        store.create_room(&room, &owner).await?;
        rooms.push(room.id);
    }
    let mut users = Vec::with_capacity(args.users as usize);
    for n in 0..args.users {
        let user = UserRef {
            id: Uuid::now_v7(),
            username: format!("searcher{n}"),
        };
        let mut joined = 0;
        while joined < args.memberships.min(args.conversations) {
            let room = rooms[random.below(rooms.len())];
            if store.join(room, &user, Utc::now()).await? {
                joined += 1;
            }
        }
        users.push(user);
    }
    Ok((rooms, users))
}

/// Stores the messages, oldest first, a thousand per statement; returns how many.
async fn seed_messages(
    pool: &Pool,
    rooms: &[Uuid],
    words: &[String],
    zipf: &Zipf,
    args: &Args,
    random: &mut Random,
) -> Result<u32> {
    let timeline = Timeline::new(args.messages);
    let sender = Uuid::now_v7();
    let mut batch = Vec::with_capacity(ROWS_PER_INSERT);
    let mut stored = 0;
    let progress = Instant::now();
    for n in 0..args.messages {
        let at = timeline.at(n);
        batch.push(Message {
            id: timeline.id(n),
            conversation_id: rooms[random.below(rooms.len())],
            sender: UserRef {
                id: sender,
                username: "seeder".into(),
            },
            body: sentence(words, zipf, random),
            created_at: at,
            edited_at: None,
            deleted_at: None,
            reactions: Vec::new(),
            attachments: Vec::new(),
        });
        if batch.len() == ROWS_PER_INSERT || n + 1 == args.messages {
            stored += insert_rows(pool, &batch).await?;
            batch.clear();
            if stored % 100_000 == 0 {
                eprintln!(
                    "  {stored} messages stored ({:.0} s)",
                    progress.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(stored)
}

/// One multi-row insert of `messages` (no events: these were never sent).
async fn insert_rows(pool: &Pool, messages: &[Message]) -> Result<u32> {
    const INSERT: &str = "INSERT INTO messages \
        (id, conversation_id, sender_id, sender_name, body, created_at) ";
    let mut tx = pool.begin().await?;
    // SQLite's full-text index does not follow inserts by itself (chat's store indexes
    // each batch it stores): these rows, all newer than any before, are indexed after.
    let indexed_up_to: Option<i64> = match tx.backend() {
        sql::Backend::Postgres => None,
        sql::Backend::Sqlite => Some(on_tx!(&mut tx, |tx| {
            sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM messages")
                .fetch_one(&mut **tx)
                .await
        })?),
    };
    let done = on_tx!(&mut tx, |tx| {
        let mut insert = sqlx::QueryBuilder::new(INSERT);
        chat::store::push_message_rows(&mut insert, messages);
        insert
            .build()
            .execute(&mut **tx)
            .await
            .map(|done| done.rows_affected())
    })?;
    if let Some(before) = indexed_up_to {
        on_tx!(&mut tx, |tx| {
            sqlx::query(
                "INSERT INTO messages_fts (rowid, body, conversation_key) \
                 SELECT rowid, body, conversation_key FROM messages WHERE rowid > $1",
            )
            .bind(before)
            .execute(&mut **tx)
            .await
            .map(drop)
        })?;
    }
    tx.commit().await?;
    Ok(u32::try_from(done)?)
}

/// Message times: the last 90 days, evenly, each with a UUIDv7 id of its own time (so
/// ids grow as they are stored, as chat's do).
struct Timeline {
    start_ms: i64,
    step_ms: f64,
}

impl Timeline {
    fn new(messages: u32) -> Self {
        let end = Utc::now().timestamp_millis();
        let span = 90 * 24 * 3600 * 1000_i64;
        Self {
            start_ms: end - span,
            step_ms: span as f64 / f64::from(messages.max(1)),
        }
    }

    fn millis(&self, n: u32) -> i64 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a time within the seeded span, far inside i64 milliseconds"
        )]
        let offset = (f64::from(n) * self.step_ms) as i64;
        self.start_ms + offset
    }

    fn at(&self, n: u32) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.millis(n))
            .single()
            .unwrap_or_else(Utc::now)
    }

    /// The id of message `n`: its millisecond, then `n` (unique and growing).
    fn id(&self, n: u32) -> Uuid {
        let millis = u64::try_from(self.millis(n)).unwrap_or(0);
        let mut bytes = [0_u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70; // version 7
        bytes[8] = 0x80; // RFC 4122 variant
        bytes[12..].copy_from_slice(&n.to_be_bytes());
        Uuid::from_bytes(bytes)
    }
}

/// A message of 3 to 24 words (most around 10).
fn sentence(words: &[String], zipf: &Zipf, random: &mut Random) -> String {
    let length = 3 + random.below(8) + random.below(8) + random.below(7);
    let mut text = String::with_capacity(length * 7);
    for i in 0..length {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&words[zipf.sample(random)]);
    }
    text
}

/// Made-up words of two to four syllables, all different, in the order of their rank.
fn vocabulary(seed: u64) -> Vec<String> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    const NUCLEI: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ei"];
    let mut random = Random(seed ^ 0x5eed);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::with_capacity(VOCABULARY);
    while words.len() < VOCABULARY {
        let syllables = 2 + random.below(3);
        let word: String = (0..syllables)
            .map(|_| {
                format!(
                    "{}{}",
                    ONSETS[random.below(ONSETS.len())],
                    NUCLEI[random.below(NUCLEI.len())]
                )
            })
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

// ---------------------------------------------------------------------------------------
// Queries

/// What a query looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryKind {
    /// One of the 100 most common words.
    Common,
    /// A word of rank 5,000 to 30,000: a handful of messages.
    Rare,
    /// A common word and one of rank 100 to 2,000.
    TwoWords,
}

const KINDS: [QueryKind; 3] = [QueryKind::Common, QueryKind::Rare, QueryKind::TwoWords];

impl QueryKind {
    fn name(self) -> &'static str {
        match self {
            Self::Common => "common word",
            Self::Rare => "rare word",
            Self::TwoWords => "two words",
        }
    }
}

struct TimedQuery {
    kind: QueryKind,
    query: SearchQuery,
}

/// The searches: 40 % common words, 30 % rare ones, 30 % two words, by random users.
fn queries(
    words: &[String],
    users: &[UserRef],
    args: &Args,
    random: &mut Random,
) -> Result<Vec<TimedQuery>> {
    let snapshot = chat::search::snapshot_at(Utc::now());
    (0..args.searches)
        .map(|_| {
            let kind = match random.below(10) {
                0..=3 => QueryKind::Common,
                4..=6 => QueryKind::Rare,
                _ => QueryKind::TwoWords,
            };
            let text = match kind {
                QueryKind::Common => words[random.below(100)].clone(),
                QueryKind::Rare => words[5_000 + random.below(VOCABULARY - 5_000)].clone(),
                QueryKind::TwoWords => format!(
                    "{} {}",
                    words[random.below(100)],
                    words[100 + random.below(1_900)]
                ),
            };
            Ok(TimedQuery {
                kind,
                query: SearchQuery {
                    user: users[random.below(users.len())].id,
                    text: SearchText::parse(&text)
                        .map_err(|invalid| anyhow::anyhow!("{invalid:?}"))?,
                    conversation: None,
                    snapshot,
                    offset: 0,
                    limit: args.limit + 1,
                    window: SEARCH_WINDOW,
                },
            })
        })
        .collect()
}

/// Latencies per kind of query, and how many hits they had.
struct Figures {
    by_kind: Vec<(QueryKind, Histogram<u64>, u64, u64)>,
    all: Histogram<u64>,
}

impl Figures {
    fn new() -> Result<Self> {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3);
        Ok(Self {
            by_kind: KINDS
                .iter()
                .map(|kind| Ok((*kind, histogram()?, 0, 0)))
                .collect::<Result<_>>()?,
            all: histogram()?,
        })
    }

    fn record(&mut self, kind: QueryKind, took: Duration, hits: usize) -> Result<()> {
        let micros = u64::try_from(took.as_micros())?.max(1);
        self.all.saturating_record(micros);
        let entry = self
            .by_kind
            .iter_mut()
            .find(|(k, ..)| *k == kind)
            .context("every kind has figures")?;
        entry.1.saturating_record(micros);
        entry.2 += 1;
        entry.3 += hits as u64;
        Ok(())
    }

    fn print(&self, backend: Backend, limit: u32) {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!("search latency on {backend:?}, one page of {limit} (ms):");
        println!(
            "  {:<12} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "query", "count", "p50", "p90", "p99", "max", "hits/page"
        );
        for (kind, histogram, count, hits) in &self.by_kind {
            println!(
                "  {:<12} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.1}",
                kind.name(),
                count,
                ms(histogram, 0.5),
                ms(histogram, 0.9),
                ms(histogram, 0.99),
                histogram.max() as f64 / 1000.0,
                *hits as f64 / (*count).max(1) as f64
            );
        }
        println!(
            "  {:<12} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            "all",
            self.all.len(),
            ms(&self.all, 0.5),
            ms(&self.all, 0.9),
            ms(&self.all, 0.99),
            self.all.max() as f64 / 1000.0
        );
    }
}

// ---------------------------------------------------------------------------------------
// What the index costs a send

/// Stores `count` messages through `insert_messages` in batches of 128, into a database
/// without the search index and into one with it, and prints both rates.
async fn insert_cost(args: &Args, words: &[String], zipf: &Zipf, count: u32) -> Result<()> {
    for indexed in [false, true] {
        let database = Database::create(args, "insert").await?;
        let store = chat::store::connect(&database.url).await?;
        if !indexed {
            let pool = sql::connect_paged(&database.url, SQLITE_PAGE_SIZE).await?;
            drop_index(&pool).await?;
        }
        let mut random = Random(args.seed);
        let (rooms, _) = seed_conversations(
            &store,
            &Args {
                conversations: 100,
                users: 0,
                ..args.clone_shape()
            },
            &mut random,
        )
        .await?;
        let sender = UserRef {
            id: Uuid::now_v7(),
            username: "sender".into(),
        };
        for room in &rooms {
            store.join(*room, &sender, Utc::now()).await?;
        }
        let rate = timed_sends(&store, &rooms, &sender, words, zipf, count, &mut random).await?;
        println!(
            "insert_messages on {:?}, {} the search index: {count} messages in batches of 128, \
             {rate:.0} messages/s",
            args.backend,
            if indexed { "with" } else { "without" },
        );
        drop(store);
        database.drop().await?;
    }
    Ok(())
}

/// Removes the search index (the state before this feature; on SQLite, see below).
async fn drop_index(pool: &Pool) -> Result<()> {
    let statements: &[&str] = match pool.backend() {
        sql::Backend::Postgres => &["DROP INDEX messages_search"],
        // The store indexes each batch with one INSERT ... SELECT into `messages_fts`: a
        // plain table of the same rows takes it, so what is measured is FTS5's own work
        // (tokenizing, writing and merging its segments).
        sql::Backend::Sqlite => &[
            "DROP TRIGGER messages_fts_update",
            "DROP TRIGGER messages_fts_delete",
            "DROP TABLE messages_fts",
            "CREATE TABLE messages_fts \
             (rowid INTEGER PRIMARY KEY, body TEXT, conversation_key TEXT)",
        ],
    };
    run_each(pool, statements).await
}

/// Sends `count` messages as chat does (batches of 128 with their events); messages/s.
async fn timed_sends(
    store: &ChatStore,
    rooms: &[Uuid],
    sender: &UserRef,
    words: &[String],
    zipf: &Zipf,
    count: u32,
    random: &mut Random,
) -> Result<f64> {
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(128);
    for n in 0..count {
        let message = Message {
            id: Uuid::now_v7(),
            conversation_id: rooms[random.below(rooms.len())],
            sender: sender.clone(),
            body: sentence(words, zipf, random),
            created_at: Utc::now(),
            edited_at: None,
            deleted_at: None,
            reactions: Vec::new(),
            attachments: Vec::new(),
        };
        batch.push(NewMessage {
            message,
            mentions: Vec::new(),
            attachments: Vec::new(),
        });
        if batch.len() == 128 || n + 1 == count {
            batches.push(std::mem::take(&mut batch));
        }
    }
    let started = Instant::now();
    for batch in &batches {
        let stored = store.insert_messages(batch).await?;
        ensure!(
            stored.iter().all(|stored| *stored),
            "every message is stored"
        );
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

impl Args {
    /// This run's settings, without the insert-cost run.
    fn clone_shape(&self) -> Self {
        Self {
            backend: self.backend,
            database_url: self.database_url.clone(),
            messages: self.messages,
            conversations: self.conversations,
            users: self.users,
            memberships: self.memberships,
            searches: self.searches,
            limit: self.limit,
            seed: self.seed,
            insert_cost: None,
            keep: false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Randomness, from a fixed seed

/// SplitMix64: small, fast, the same everywhere.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n.max(1)).expect("a usize fits in 64 bits");
        usize::try_from(self.next() % n).expect("below n, a usize")
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// Zipf's law over ranks `0..n`: rank `k` drawn with weight `1 / (k + 1)^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative = Vec::with_capacity(n);
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cumulative.push(total);
        }
        for value in &mut cumulative {
            *value /= total;
        }
        Self { cumulative }
    }

    fn sample(&self, random: &mut Random) -> usize {
        let u = random.unit();
        self.cumulative
            .partition_point(|c| *c < u)
            .min(self.cumulative.len() - 1)
    }
}
