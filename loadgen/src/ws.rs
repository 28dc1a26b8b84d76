//! `loadgen ws`: live fan-out through the broker's WebSocket.
//!
//! Sets up one user per socket and rooms of `--room-size` members (through the REST API),
//! opens every socket (spreading them over `--source` addresses, since one source address
//! has only so many ports), then each socket sends `--rate` messages per second into its
//! room. A message's body carries its send time, so every socket that receives it measures
//! send→deliver latency. Every message is persisted by chat before it is acknowledged; at
//! the end a sample of rooms is read back to check that history has every acknowledged one.
//!
//! `--idle` holds the sockets without sending and reports the server's memory per socket
//! (`--server-pid`), then checks that a message still reaches every member.

use crate::{
    http::{Connection, read_body},
    report::{SlowestBySecond, Tally},
    target::LoopbackUrl,
};
use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use hyper::{
    Method, Request, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpSocket, sync::Semaphore, time::Instant};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig},
};

type Socket = WebSocketStream<tokio::net::TcpStream>;

/// Flags of `loadgen ws`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the broker (loopback only); several, comma-separated, spread the users
    /// and sockets over them round-robin, so every room has members on every broker.
    #[arg(long = "broker", value_delimiter = ',', default_value = "http://127.0.0.1:8080", value_parser = LoopbackUrl::parse)]
    brokers: Vec<LoopbackUrl>,
    /// Sockets to open, one user each (1 to 60000; one process may hold about 19000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    sockets: u32,
    /// Members per room (every member's socket receives every message of the room).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    room_size: u32,
    /// Messages per second each socket sends.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Measured time (at most 10m).
    #[arg(long, default_value = "20s", value_parser = crate::phase::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "3s", value_parser = crate::phase::parse_warmup)]
    warmup: Duration,
    /// Source addresses to spread sockets over, comma-separated (127.0.0.0/8 only).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    source: Vec<Ipv4Addr>,
    /// Hold the sockets without sending; report memory per socket.
    #[arg(long)]
    idle: bool,
    /// With --idle: how long to hold the sockets before reading the server's memory (its
    /// allocator returns freed memory to the system lazily).
    #[arg(long, default_value = "15s", value_parser = crate::phase::parse_duration)]
    settle: Duration,
    /// The server processes (the brokers), for their memory figures (RSS from /proc,
    /// summed); comma-separated.
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Set-up requests and socket opens in flight at once.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// Password of the generated users.
    #[arg(long, default_value = "loadgen-password-1")]
    password: String,
    /// With --idle, several load processes together: a directory they share, so that
    /// all of them finish setting up users before any opens a socket, and all hold
    /// their sockets open before any measures (see --parties).
    #[arg(long, requires = "parties")]
    barrier: Option<std::path::PathBuf>,
    /// How many load processes meet at --barrier.
    #[arg(long, requires = "barrier", value_parser = clap::value_parser!(u32).range(1..=64))]
    parties: Option<u32>,
    /// Print one JSON object with the figures instead of text.
    #[arg(long)]
    json: bool,
}

/// Waits until every one of `--parties` load processes has reached the `stage` at
/// `--barrier` (each leaves a file there); returns at once without a barrier.
async fn barrier(args: &Args, stage: &str) -> Result<()> {
    let (Some(dir), Some(parties)) = (&args.barrier, args.parties) else {
        return Ok(());
    };
    let stage_dir = dir.join(stage);
    std::fs::create_dir_all(&stage_dir)
        .with_context(|| format!("creating the barrier {}", stage_dir.display()))?;
    std::fs::write(stage_dir.join(std::process::id().to_string()), b"")?;
    let started = Instant::now();
    loop {
        let arrived = std::fs::read_dir(&stage_dir)?.count();
        if arrived >= parties as usize {
            eprintln!(
                "barrier {stage}: all {parties} load processes there (waited {:.1}s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "barrier {stage}: {arrived} of {parties} load processes arrived within an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Args {
    /// The broker of user and socket `index`.
    fn broker_for(&self, index: usize) -> &LoopbackUrl {
        &self.brokers[index % self.brokers.len()]
    }
}

/// Summed RSS of `pids`.
fn rss_sum_kib(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

/// A user of the run.
#[derive(Debug, Clone)]
struct Member {
    token: String,
    room: String,
}

async fn request(
    connection: &mut Connection,
    broker: &LoopbackUrl,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let bytes = body
        .map(|body| serde_json::to_vec(&body))
        .transpose()?
        .unwrap_or_default();
    let mut request = Request::new(http_body_util::Full::new(hyper::body::Bytes::from(bytes)));
    *request.method_mut() = method;
    *request.uri_mut() = broker.uri_for(path)?;
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(token) = token {
        request.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    let response = connection.send(request).await?;
    let status = response.status();
    let body = read_body(response.into_body()).await?;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Ok((status, value))
}

/// Registers and logs in one user per socket, and puts them in rooms.
async fn set_up(args: &Args, run: &str) -> Result<Vec<Member>> {
    let users = args.sockets as usize;
    let room_size = args.room_size as usize;
    let rooms = users.div_ceil(room_size);
    let limit = Arc::new(Semaphore::new(args.setup_concurrency));
    let started = Instant::now();
    // Room creators first, then everyone else joins.
    let mut room_ids = vec![String::new(); rooms];
    let mut members: Vec<Option<Member>> = vec![None; users];
    for creators in [true, false] {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..users {
            if (index % room_size == 0) != creators {
                continue;
            }
            let (broker, password, run) = (
                args.broker_for(index).clone(),
                args.password.clone(),
                run.to_owned(),
            );
            let room = room_ids[index / room_size].clone();
            let permit = Arc::clone(&limit).acquire_owned().await?;
            tasks.spawn(async move {
                let _permit = permit;
                let member = enrol(&broker, &run, index, &password, room).await;
                (index, member)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, member) = joined?;
            let member = member.with_context(|| format!("setting up user {index}"))?;
            if creators {
                room_ids[index / room_size] = member.room.clone();
            }
            members[index] = Some(member);
        }
    }
    eprintln!(
        "set up {users} users in {rooms} rooms in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(members
        .into_iter()
        .map(|member| member.expect("every user was set up"))
        .collect())
}

/// Registers user `index`, logs in, and creates (`room` empty) or joins its room.
async fn enrol(
    broker: &LoopbackUrl,
    run: &str,
    index: usize,
    password: &str,
    room: String,
) -> Result<Member> {
    let mut connection = Connection::open(broker).await?;
    let username = format!("lg{run}_{index}");
    let account = json!({ "username": username, "email": format!("{username}@load.test"), "password": password });
    let (status, body) = request(
        &mut connection,
        broker,
        Method::POST,
        "/api/auth/register",
        None,
        Some(account),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "register: {status} {body}");
    let login = json!({ "login": username, "password": password });
    let (status, body) = request(
        &mut connection,
        broker,
        Method::POST,
        "/api/auth/login",
        None,
        Some(login),
    )
    .await?;
    ensure!(status == StatusCode::OK, "login: {status} {body}");
    let token = body["token"]
        .as_str()
        .context("login answered no token")?
        .to_owned();
    let room = if room.is_empty() {
        let name = json!({ "name": format!("lg{run}r{}", index), "topic": "loadgen" });
        let (status, body) = request(
            &mut connection,
            broker,
            Method::POST,
            "/api/rooms",
            Some(&token),
            Some(name),
        )
        .await?;
        ensure!(
            status == StatusCode::CREATED,
            "create room: {status} {body}"
        );
        body["id"].as_str().context("no room id")?.to_owned()
    } else {
        let path = format!("/api/rooms/{room}/join");
        let (status, body) = request(
            &mut connection,
            broker,
            Method::POST,
            &path,
            Some(&token),
            None,
        )
        .await?;
        ensure!(status == StatusCode::OK, "join room: {status} {body}");
        room
    };
    Ok(Member { token, room })
}

/// Opens one socket from `source`.
async fn open_socket(broker: &LoopbackUrl, source: Ipv4Addr, token: &str) -> Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(broker.addr()))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{}/ws", broker.addr()).into_client_request()?;
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    // Small buffers on the client too, so the tool itself fits many sockets.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    Ok(socket)
}

/// Opens every socket, a bounded number at a time.
async fn open_all(args: &Args, members: &[Member]) -> Result<Vec<Socket>> {
    let limit = Arc::new(Semaphore::new(args.setup_concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, member) in members.iter().enumerate() {
        let source = args.source[index % args.source.len()];
        let (broker, token) = (args.broker_for(index).clone(), member.token.clone());
        let permit = Arc::clone(&limit).acquire_owned().await?;
        tasks.spawn(async move {
            let _permit = permit;
            (index, open_socket(&broker, source, &token).await)
        });
    }
    let mut sockets: Vec<Option<Socket>> = (0..members.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, socket) = joined?;
        sockets[index] = Some(socket.with_context(|| format!("opening socket {index}"))?);
    }
    eprintln!(
        "opened {} sockets in {:.1}s",
        members.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(sockets
        .into_iter()
        .map(|socket| socket.expect("every socket opened"))
        .collect())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS has no number")?
        .parse()?)
}

/// The send time (ns since the run's start) that loadgen put in a frame's message body.
fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find(r#""body":"lg:"#)? + r#""body":"lg:"#.len();
    let digits = &frame[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// What one socket saw.
struct SocketTally {
    latency: Tally,
    /// The slowest delivery of each measured second (by send time).
    slowest_by_second: SlowestBySecond,
    sent: u64,
    acked: u64,
    acked_total: u64,
    errors: u64,
    first_error: Option<String>,
    room: String,
}

/// When to measure, as nanoseconds since the run's start.
#[derive(Clone, Copy)]
struct Window {
    epoch: Instant,
    from_ns: u64,
    until_ns: u64,
    drain_ns: u64,
}

impl Window {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

async fn drive(
    mut socket: Socket,
    room: String,
    rate: f64,
    window: Window,
    offset: Duration,
    sent_total: Arc<AtomicU64>,
) -> SocketTally {
    let mut tally = SocketTally {
        latency: Tally::new(),
        slowest_by_second: SlowestBySecond::default(),
        sent: 0,
        acked: 0,
        acked_total: 0,
        errors: 0,
        first_error: None,
        room: room.clone(),
    };
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let mut next_send = window.epoch + offset;
    let stop_sending = window.epoch + Duration::from_nanos(window.until_ns);
    let stop_reading = window.epoch + Duration::from_nanos(window.drain_ns);
    loop {
        let sending = rate > 0.0 && next_send < stop_sending;
        let wake = if sending { next_send } else { stop_reading };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if !sending {
                    break;
                }
                let now = window.now_ns();
                let frame = format!(r#"{{"type":"send","conversation_id":"{room}","body":"lg:{now}"}}"#);
                if socket.send(Message::text(frame)).await.is_err() {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| "send failed: socket closed".to_owned());
                    break;
                }
                if now >= window.from_ns {
                    tally.sent += 1;
                }
                sent_total.fetch_add(1, Ordering::Relaxed);
                next_send += period;
            }
            frame = socket.next() => {
                let Some(Ok(frame)) = frame else {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| format!("socket closed: {frame:?}"));
                    break;
                };
                let Message::Text(text) = frame else { continue };
                let now = window.now_ns();
                let in_window = |sent: u64| sent >= window.from_ns && sent < window.until_ns;
                if text.starts_with(r#"{"type":"message""#) {
                    if let Some(sent) = sent_at(&text).filter(|sent| in_window(*sent)) {
                        let took = now.saturating_sub(sent);
                        tally.latency.succeeded(Duration::from_nanos(took));
                        let second = ((sent - window.from_ns) / 1_000_000_000) as usize;
                        tally.slowest_by_second.record(second, took / 1000);
                    }
                } else if text.starts_with(r#"{"type":"ack""#) {
                    tally.acked_total += 1;
                    tally.acked += u64::from(sent_at(&text).is_some_and(in_window));
                } else if text.starts_with(r#"{"type":"error""#) {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| text.to_string());
                }
            }
        }
    }
    let _ = socket.close(None).await;
    tally
}

/// Reads back a room's whole history (newest first, page by page) and counts it.
async fn history_count(broker: &LoopbackUrl, token: &str, room: &str) -> Result<u64> {
    let mut connection = Connection::open(broker).await?;
    let mut count = 0;
    let mut before = String::new();
    loop {
        let cursor = if before.is_empty() {
            String::new()
        } else {
            format!("&before={before}")
        };
        let path = format!("/api/conversations/{room}/messages?limit=100{cursor}");
        // Right after a saturating run the server may still be draining its backlog:
        // give it up to a minute before calling history incomplete.
        let patience = Instant::now() + Duration::from_secs(60);
        let page = loop {
            let (status, page) = request(
                &mut connection,
                broker,
                Method::GET,
                &path,
                Some(token),
                None,
            )
            .await?;
            if status == StatusCode::OK {
                break page;
            }
            ensure!(
                status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < patience,
                "history: {status} {page}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let messages = page["messages"].as_array().context("no messages")?;
        count += messages.len() as u64;
        match messages.last().and_then(|last| last["id"].as_str()) {
            Some(id) if page["has_more"] == true => before = id.to_owned(),
            _ => return Ok(count),
        }
    }
}

/// Runs the scenario.
pub async fn run(args: Args) -> Result<()> {
    ensure!(
        args.duration <= Duration::from_secs(600),
        "--duration is at most 10m"
    );
    ensure!(
        args.rate >= 0.0 && args.rate <= 100.0,
        "--rate is 0 to 100 messages per second"
    );
    for source in &args.source {
        ensure!(
            source.is_loopback(),
            "--source {source}: only 127.0.0.0/8 addresses"
        );
    }
    if args.idle && args.server_pids.is_empty() {
        bail!("--idle measures the server's memory: give --server-pid");
    }
    let run = format!(
        "{:06x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as u32
                & 0xff_ffff)
    );
    let members = set_up(&args, &run).await?;
    barrier(&args, "set-up").await?;
    let rss_before = if args.server_pids.is_empty() {
        None
    } else {
        Some(rss_sum_kib(&args.server_pids)?)
    };
    let sockets = open_all(&args, &members).await?;
    if args.idle {
        return idle(&args, members, sockets, rss_before.unwrap_or(0)).await;
    }
    let warmup_ns = args.warmup.as_nanos() as u64;
    let window = Window {
        epoch: Instant::now(),
        from_ns: warmup_ns,
        until_ns: warmup_ns + args.duration.as_nanos() as u64,
        drain_ns: warmup_ns + args.duration.as_nanos() as u64 + 3_000_000_000,
    };
    let sent_total = Arc::new(AtomicU64::new(0));
    let period = 1.0 / args.rate.max(1e-6);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (socket, member)) in sockets.into_iter().zip(&members).enumerate() {
        // Spread the sockets' sends evenly over one period.
        let offset = Duration::from_secs_f64(period * (index as f64 / members.len() as f64));
        tasks.spawn(drive(
            socket,
            member.room.clone(),
            args.rate,
            window,
            offset,
            Arc::clone(&sent_total),
        ));
    }
    let mut latency = Tally::new();
    let (mut sent, mut acked, mut errors) = (0, 0, 0);
    let mut first_error = None;
    let mut acked_per_room: HashMap<String, u64> = HashMap::new();
    let mut slowest_by_second = SlowestBySecond::default();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined?;
        latency.merge(tally.latency)?;
        slowest_by_second.merge(&tally.slowest_by_second);
        sent += tally.sent;
        acked += tally.acked;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
        *acked_per_room.entry(tally.room).or_default() += tally.acked_total;
    }
    let figures =
        crate::report::PhaseFigures::new("deliveries", args.sockets, args.duration, latency);
    let deliveries = figures.requests - figures.errors;
    let expected = acked * u64::from(args.room_size);
    // Persistence: history of a sample of rooms holds every acknowledged message.
    let mut checked = 0;
    let mut persisted_ok = true;
    let mut seen_rooms = std::collections::HashSet::new();
    for member in &members {
        if checked >= 5 || !seen_rooms.insert(member.room.clone()) {
            continue;
        }
        let stored = history_count(&args.brokers[0], &member.token, &member.room).await?;
        let acked_here = acked_per_room.get(&member.room).copied().unwrap_or(0);
        // Every acknowledged message must be in history; more is fine (a message can be
        // stored and its ack still in flight when the run ends).
        if stored < acked_here {
            persisted_ok = false;
            eprintln!(
                "room {}: {acked_here} acknowledged but only {stored} in history",
                member.room
            );
        }
        checked += 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = json!({
        "scenario": "ws",
        "brokers": args.brokers.len(),
        "loadgen_cpus": cpus,
        "sockets": args.sockets,
        "room_size": args.room_size,
        "rate_per_socket": args.rate,
        "duration_secs": args.duration.as_secs_f64(),
        "sent": sent,
        "acked": acked,
        "errors": errors,
        "first_error": first_error,
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "deliveries_per_sec": figures.per_sec,
        "latency_us": { "p50": figures.p50_us, "p90": figures.p90_us, "p99": figures.p99_us, "max": figures.max_us },
        "history_checked_rooms": checked,
        "history_complete": persisted_ok,
        "slowest_delivery_by_second_us": slowest_by_second.micros(),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "ws fan-out: {} sockets over {} broker(s), rooms of {}, {} msg/s each, {}s measured ({cpus} loadgen CPUs)\n  \
             sent {sent}, acked {acked}, errors {errors}{}\n  \
             deliveries {deliveries} of {expected} expected ({:.1}%), {:.0} deliveries/s\n  \
             send→deliver latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n  \
             slowest delivery of each second, ms: {}\n  \
             history of {checked} rooms complete: {persisted_ok}",
            args.sockets,
            args.brokers.len(),
            args.room_size,
            args.rate,
            args.duration.as_secs(),
            first_error
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            100.0 * deliveries as f64 / expected.max(1) as f64,
            figures.per_sec,
            figures.p50_us as f64 / 1e3,
            figures.p90_us as f64 / 1e3,
            figures.p99_us as f64 / 1e3,
            figures.max_us as f64 / 1e3,
            slowest_by_second.millis_line(),
        );
    }
    Ok(())
}

/// Holds the sockets — reading each one as a client does, so the server's pings are
/// answered and a socket the server closes is noticed — reports memory per socket, then
/// checks that a message sent into the first room reaches every member.
async fn idle(
    args: &Args,
    members: Vec<Member>,
    sockets: Vec<Socket>,
    rss_before: u64,
) -> Result<()> {
    let room_size = (args.room_size as usize).min(members.len());
    let held = sockets.len();
    let closed = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (found, mut reached_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = tokio::task::JoinSet::new();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let (closed, mut stopped, found) = (Arc::clone(&closed), stopped.clone(), found.clone());
        readers.spawn(async move {
            loop {
                tokio::select! {
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            if index < room_size
                                && text.starts_with(r#"{"type":"message""#)
                                && text.contains("lg:idle-check")
                            {
                                let _ = found.send((index, Instant::now()));
                            }
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = stopped.changed() => {
                        let _ = socket.close(None).await;
                        return;
                    }
                }
            }
        });
    }
    drop(found);
    barrier(args, "open").await?;
    tokio::time::sleep(args.settle).await;
    let rss_after = rss_sum_kib(&args.server_pids)?;
    let per_socket = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / held as f64;
    let closed_by_server = closed.load(Ordering::Relaxed);
    // Delivery check: the first member of the first room sends (over REST); every
    // member's socket receives it.
    let room = &members[0].room;
    let broker = args.broker_for(0);
    let mut connection = Connection::open(broker).await?;
    let (status, answer) = request(
        &mut connection,
        broker,
        Method::POST,
        &format!("/api/conversations/{room}/messages"),
        Some(&members[0].token),
        Some(json!({ "body": "lg:idle-check" })),
    )
    .await?;
    // Member → how long the message took to reach it (up to 30 s; over 5 s fails).
    let sent_at = Instant::now();
    let mut reached: HashMap<usize, Duration> = HashMap::new();
    if status == StatusCode::CREATED {
        let deadline = sent_at + Duration::from_secs(30);
        while reached.len() < room_size {
            match tokio::time::timeout_at(deadline, reached_rx.recv()).await {
                Ok(Some((index, at))) => {
                    reached.entry(index).or_insert(at - sent_at);
                }
                _ => break,
            }
        }
    } else {
        eprintln!("the delivery check's send was answered {status}: {answer}");
    }
    let slowest = reached.values().max().copied().unwrap_or_default();
    let late: Vec<String> = (0..room_size)
        .filter(|index| {
            reached
                .get(index)
                .is_none_or(|took| *took > Duration::from_secs(5))
        })
        .map(|index| {
            let took = reached.get(&index).map_or("never".to_owned(), |took| {
                format!("{:.1}s", took.as_secs_f64())
            });
            format!(
                "member {index} on broker {}: {took}",
                index % args.brokers.len()
            )
        })
        .collect();
    if !late.is_empty() {
        eprintln!("the delivery check: late or missing: {}", late.join("; "));
    }
    let reached = reached
        .values()
        .filter(|took| **took <= Duration::from_secs(5))
        .count();
    let _ = stop.send(true);
    while readers.join_next().await.is_some() {}
    let summary = json!({
        "scenario": "ws-idle",
        "brokers": args.brokers.len(),
        "sockets": held,
        "closed_by_server": closed_by_server,
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_bytes_per_socket": per_socket,
        "delivery_check": format!("{reached}/{room_size}"),
        "delivery_slowest_ms": slowest.as_millis(),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "ws idle: {held} sockets held over {} broker(s), {closed_by_server} closed by the server; server RSS {} → {} KiB: {:.0} bytes ({:.2} KiB) per socket; a message reached {reached}/{room_size} members within 5 s (slowest {:.0} ms)",
            args.brokers.len(),
            rss_before,
            rss_after,
            per_socket,
            per_socket / 1024.0,
            slowest.as_secs_f64() * 1000.0,
        );
    }
    ensure!(
        closed_by_server == 0,
        "the server closed {closed_by_server} of the {held} held sockets"
    );
    ensure!(
        reached == room_size,
        "the delivery check failed: a message reached {reached} of {room_size} members within 5 s ({})",
        late.join("; ")
    );
    Ok(())
}
