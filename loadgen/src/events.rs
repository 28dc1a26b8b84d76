//! `loadgen events`: the durable event path at full speed. Writers commit `message.sent`
//! events into an outbox (in transactions, with one multi-row insert each, as chat does),
//! the outbox relay publishes them to the bus — RabbitMQ with publisher confirms, or with
//! `--bus embedded` the all-in-one's durable SQLite bus, the outbox then in SQLite too —
//! and the real listener consumes them: writes each one's audit entry (its only work) to
//! a logger of its own under the event's id, and acknowledges it.
//!
//! Latency is committed → audited, per event: the event id is a UUIDv7, whose timestamp
//! is taken just before the writer's transaction, and the audit entry's `created_at` (to
//! the millisecond) is taken as the listener hands it to the logger, just before its ack.
//! Every event must arrive exactly once: the logger stores one entry per event id.
//!
//! It creates its own PostgreSQL databases and RabbitMQ names (or, embedded, a directory
//! of SQLite files), and removes them after.

use crate::report::SlowestBySecond;
use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use platform::{
    events::{EmbeddedBus, Event, EventBus, outbox, rabbit},
    service_auth::{Service, ServiceKeys},
    shutdown::Shutdown,
    sql::Pool,
};
use proto::events::v1::{MessageSent, envelope::Payload};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Which bus carries the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BusKind {
    /// RabbitMQ, the outbox and the listener's table in PostgreSQL (the dev stack, the
    /// cluster).
    Rabbitmq,
    /// The all-in-one's durable SQLite bus, the outbox and the listener's table in SQLite.
    Embedded,
}

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bus (and with it where the outbox and the listener's table live).
    #[arg(long, value_enum, default_value = "rabbitmq")]
    bus: BusKind,
    /// PostgreSQL server (a database on it is used to create the run's own databases).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// RabbitMQ (loopback only).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Events to produce.
    #[arg(long, default_value_t = 100_000)]
    events: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: u32,
    /// Events per writer transaction.
    #[arg(long, default_value_t = 50)]
    batch: u32,
    /// Events per second offered, spread over the writers (0: as fast as they commit).
    /// At full speed the writers outrun any consumer and latency measures the backlog;
    /// at a set rate it measures the path.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Listener prefetch (events in flight).
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// Print the figures as JSON too.
    #[arg(long)]
    json: bool,
}

/// The logger's settings, read like its own command line.
#[derive(Debug, Parser)]
struct LoggerCli {
    #[command(flatten)]
    config: logger::Config,
}

/// The listener's settings, read like its own command line.
#[derive(Debug, Parser)]
struct ListenerCli {
    #[command(flatten)]
    config: listener::Config,
}

struct Databases {
    admin_url: String,
    names: Vec<String>,
}

impl Databases {
    async fn create(admin_url: &str, names: &[String]) -> Result<Self> {
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        for name in names {
            admin
                .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
                .await?;
        }
        Ok(Self {
            admin_url: admin_url.to_owned(),
            names: names.to_vec(),
        })
    }

    fn url(&self, name: &str) -> String {
        let (base, _) = self
            .admin_url
            .rsplit_once('/')
            .expect("a PostgreSQL URL has a path");
        format!("{base}/{name}")
    }

    async fn drop_all(&self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        for name in &self.names {
            admin
                .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                .await?;
        }
        Ok(())
    }
}

fn ensure_loopback(url: &str) -> Result<()> {
    let host = url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    ensure!(
        host == "127.0.0.1" || host == "localhost" || host.starts_with("127."),
        "load only goes to loopback addresses, not {host}"
    );
    Ok(())
}

/// Commits `count` events in transactions of `batch`.
async fn write(
    pool: Pool,
    count: u32,
    batch: u32,
    rate: f64,
    waker: outbox::OutboxWaker,
) -> Result<()> {
    let conversation = Uuid::now_v7().to_string();
    let sender = Uuid::now_v7().to_string();
    let mut left = count;
    // One transaction of `batch` events per tick at the writer's share of the rate.
    let mut pace = (rate > 0.0).then(|| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(f64::from(batch) / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticks
    });
    while left > 0 {
        if let Some(ticks) = pace.as_mut() {
            ticks.tick().await;
        }
        let size = left.min(batch);
        let events: Vec<Event> = (0..size)
            .map(|_| {
                Event::new(
                    "loadgen",
                    Payload::MessageSent(MessageSent {
                        message_id: Uuid::now_v7().to_string(),
                        conversation_id: conversation.clone(),
                        sender_id: sender.clone(),
                        body_chars: 42,
                    }),
                )
            })
            .collect();
        let rows: Vec<&Event> = events.iter().collect();
        platform::on_pool!(&pool, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(outbox::ROWS_PER_INSERT) {
                if let Some(mut insert) = outbox::insert_all(chunk) {
                    insert.build().execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        waker.wake();
        left -= size;
    }
    Ok(())
}

async fn remove_rabbit_names(url: &str, exchange: &str, queue: &str) -> Result<()> {
    let connection = rabbit::connect(url, "loadgen cleanup").await?;
    let channel = connection.create_channel().await?;
    for name in [
        queue.to_owned(),
        format!("{queue}.parked"),
        rabbit::unrouted(exchange),
    ] {
        channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for name in [exchange.to_owned(), rabbit::unrouted(exchange)] {
        channel
            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// Runs the scenario.
pub async fn run(args: Args) -> Result<()> {
    ensure!(
        args.events > 0 && args.writers > 0 && args.batch > 0,
        "counts must be positive"
    );
    let id = Uuid::new_v4().simple().to_string();
    match args.bus {
        BusKind::Rabbitmq => {
            ensure_loopback(&args.database_url)?;
            ensure_loopback(&args.amqp_url)?;
            let producer_db = format!("loadgen_events_{id}_producer");
            let listener_db = format!("loadgen_events_{id}_listener");
            let databases = Databases::create(
                &args.database_url,
                &[producer_db.clone(), listener_db.clone()],
            )
            .await?;
            let exchange = format!("loadgen.events.{id}");
            let queue = format!("loadgen.listener.{id}");
            let transport = Transport::Rabbit {
                url: args.amqp_url.clone(),
                exchange: exchange.clone(),
            };
            let outcome = measure(
                &args,
                &id,
                &databases.url(&producer_db),
                &databases.url(&listener_db),
                &queue,
                transport,
            )
            .await;
            if let Err(error) = remove_rabbit_names(&args.amqp_url, &exchange, &queue).await {
                eprintln!("warning: could not remove the run's RabbitMQ names: {error:#}");
            }
            databases.drop_all().await?;
            outcome
        }
        BusKind::Embedded => {
            let dir = std::env::temp_dir().join(format!("loadgen-events-{id}"));
            let sqlite = |file: &str| platform::settings::sqlite_url(&dir, file);
            let transport = Transport::Embedded {
                url: sqlite("events.db"),
            };
            let outcome = measure(
                &args,
                &id,
                &sqlite("chat.db"),
                &sqlite("listener.db"),
                "listener",
                transport,
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            outcome
        }
    }
}

/// How events go from the relay to the listener.
enum Transport {
    /// Through this RabbitMQ exchange.
    Rabbit { url: String, exchange: String },
    /// Through the embedded bus in this SQLite database.
    Embedded { url: String },
}

async fn measure(
    args: &Args,
    id: &str,
    producer_url: &str,
    listener_url: &str,
    queue: &str,
    transport: Transport,
) -> Result<()> {
    // The producer's schema is chat's: its migrations create the outbox.
    let store = chat::store::connect(producer_url).await?;
    // The writers stand in for chat's own: they write outbox rows alone, on a pool of their
    // own on chat's database.
    let pool = platform::sql::connect_paged(producer_url, chat::store::SQLITE_PAGE_SIZE).await?;
    let shutdown = Shutdown::new();
    // The listener writes an audit entry per event: to a logger of its own (SQLite).
    let logger_dir = std::env::temp_dir().join(format!("loadgen-logger-{id}"));
    let logger_config =
        LoggerCli::try_parse_from(["logger", "--logger-listen=127.0.0.1:0"])?.config;
    // The logger and the listener here trust each other through keys of their own.
    let keys_dir = logger_dir.join("service-keys");
    ServiceKeys::generate_missing(&keys_dir)?;
    let service_keys = ServiceKeys::load(&keys_dir, &[Service::Logger, Service::Listener])?;
    let logger = logger::LoggerService::build(&logger_config, &logger_dir, &service_keys).await?;
    let logger_url = format!("http://{}", logger.local_addr());
    let logging = tokio::spawn(logger.run(shutdown.clone()));
    let listener_config = ListenerCli::try_parse_from([
        "listener".to_owned(),
        "--listener-listen=127.0.0.1:0".to_owned(),
        "--listener-admin-listen=127.0.0.1:0".to_owned(),
        format!("--listener-database-url={listener_url}"),
        format!("--listener-queue={queue}"),
        format!("--listener-prefetch={}", args.prefetch),
        "--listener-max-attempts=1".to_owned(),
        format!("--listener-logger-url={logger_url}"),
    ])?
    .config;
    let (source, bus): (Arc<dyn listener::source::Source>, Arc<dyn EventBus>) = match transport {
        Transport::Rabbit { url, exchange } => (
            Arc::new(listener::source::RabbitSource::new(
                url.clone(),
                exchange.clone(),
                &listener_config,
            )),
            Arc::new(rabbit::RabbitBus::new(url, exchange)),
        ),
        Transport::Embedded { url } => {
            let bus = EmbeddedBus::open(&url).await?;
            let source = listener::source::EmbeddedSource::bind(&bus, queue, args.prefetch).await?;
            (Arc::new(source), Arc::new(bus))
        }
    };
    let data_dir = std::env::temp_dir();
    let listener = listener::ListenerService::build(
        &listener_config,
        &data_dir,
        source,
        &service_keys,
        &platform::grpc::Dialer::network(),
    )
    .await?;
    let listener_addr = listener.local_addr();
    let listening = tokio::spawn(listener.run(shutdown.clone()));
    wait_ready(listener_addr).await?;

    let waker = outbox::OutboxWaker::default();
    let relay = tokio::spawn(
        outbox::Relay::new(
            outbox::Outbox::new(pool.clone()),
            bus,
            waker.clone(),
            "loadgen",
        )
        .run(shutdown.clone()),
    );

    let offered = match args.rate {
        0 => "at full speed".to_owned(),
        rate => format!("at {rate} events/s"),
    };
    println!(
        "producing {} events {offered} ({:?} bus): {} writers, {} per transaction, listener prefetch {}",
        args.events, args.bus, args.writers, args.batch, args.prefetch
    );
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let per_writer = args.events / args.writers;
    let mut writers = Vec::new();
    for n in 0..args.writers {
        let count = if n == 0 {
            per_writer + args.events % args.writers
        } else {
            per_writer
        };
        writers.push(tokio::spawn(write(
            pool.clone(),
            count,
            args.batch,
            f64::from(args.rate) / f64::from(args.writers),
            waker.clone(),
        )));
    }
    for writer in writers {
        writer.await??;
    }
    let committed = started.elapsed();

    let audits = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(logger_dir.join("logs.db"))
                .read_only(true),
        )
        .await?;
    let mut last = (0_i64, Instant::now());
    loop {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM logs WHERE service = 'listener'")
                .fetch_one(&audits)
                .await?;
        if count >= i64::from(args.events) {
            break;
        }
        if count != last.0 {
            last = (count, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            bail!("stuck at {count} of {} events handled", args.events);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    relay.await?;
    listening.await??;
    logging.await??;
    let audited: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, created_at FROM logs WHERE service = 'listener'")
            .fetch_all(&audits)
            .await?;
    audits.close().await;
    let _ = std::fs::remove_dir_all(&logger_dir);
    let rows = audited
        .into_iter()
        .map(|(id, millis)| {
            chrono::DateTime::from_timestamp_millis(millis)
                .map(|at| (id, at))
                .context("a valid audit time")
        })
        .collect::<Result<Vec<_>>>()?;
    let left = store.outbox().pending().await?;
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut finished = started_at;
    // The slowest event of each second of the run, by when it was made.
    let mut slowest_by_second = SlowestBySecond::default();
    for (event_id, processed_at) in &rows {
        let (seconds, nanos) = event_id
            .get_timestamp()
            .context("event ids are UUIDv7")?
            .to_unix();
        let created = chrono::DateTime::from_timestamp(i64::try_from(seconds)?, nanos)
            .context("a valid timestamp")?;
        let micros = (*processed_at - created)
            .num_microseconds()
            .unwrap_or(0)
            .max(1);
        latency_us.saturating_record(u64::try_from(micros)?);
        let second = usize::try_from((created - started_at).num_seconds().max(0))?;
        slowest_by_second.record(second, u64::try_from(micros)?);
        finished = finished.max(*processed_at);
    }
    let elapsed = (finished - started_at).to_std().unwrap_or_default();
    let rate = rows.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let duplicates = duplicate_count(listener_addr).await.unwrap_or(0);
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "handled {} of {} events (outbox left: {left}, duplicates skipped: {duplicates}) in {:.2} s: {rate:.0} events/s end to end",
        rows.len(),
        args.events,
        elapsed.as_secs_f64()
    );
    println!(
        "commit -> audited: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (all committed after {:.2} s)",
        ms(0.5),
        ms(0.99),
        latency_us.max() as f64 / 1000.0,
        committed.as_secs_f64()
    );
    println!(
        "slowest event of each second of the run, ms: {}",
        slowest_by_second.millis_line()
    );
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "events",
                "bus": format!("{:?}", args.bus).to_lowercase(),
                "events": args.events,
                "rate": args.rate,
                "handled": rows.len(),
                "outbox_left": left,
                "duplicates_skipped": duplicates,
                "events_per_second": rate,
                "p50_ms": ms(0.5),
                "p99_ms": ms(0.99),
                "max_ms": latency_us.max() as f64 / 1000.0,
            })
        );
    }
    ensure!(
        rows.len() == args.events as usize && left == 0,
        "events were lost: {} handled of {}",
        rows.len(),
        args.events
    );
    Ok(())
}

async fn listener_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, answer))
}

async fn wait_ready(addr: std::net::SocketAddr) -> Result<()> {
    for _ in 0..200 {
        if matches!(listener_get(addr, "/readyz").await, Ok((200, _))) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the listener did not become ready")
}

/// Deliveries the listener skipped as already processed (from its /metrics).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a counter is a whole number, never negative"
)]
async fn duplicate_count(addr: std::net::SocketAddr) -> Result<u64> {
    let (_, body) = listener_get(addr, "/metrics").await?;
    Ok(body
        .lines()
        .filter(|line| {
            line.starts_with("listener_events_total{") && line.contains("outcome=\"duplicate\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum())
}
