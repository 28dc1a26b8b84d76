//! `loadgen ws`: live fan-out through the broker's WebSocket.
//!
//! Sets up one user per socket and rooms of `--room-size` members (through the REST API),
//! opens every socket (spreading them over `--source` addresses, since one source address
//! has only so many ports), then each socket sends `--rate` messages per second into its
//! room (or `--deliveries-per-sec` over all of them), each at a random moment of every
//! period unless `--paced` (see [`crate::schedule`] for why uniform and not Poisson). A
//! message's body carries its send time, so every socket that receives it measures
//! send→deliver latency. Every message is persisted by chat before it is acknowledged; at
//! the end a sample of rooms is read back to check that history has every acknowledged one.
//!
//! `--login-storm` ([`storm`]) sets the users up during the run instead: they register, log
//! in and open their sockets within `--storm-window`, and the traffic starts
//! `--storm-pause` later, measured from its first second.
//!
//! `--target anchor` runs the same load against the anchor (`../shared/anchors/node-ws`): no
//! accounts (user and room go in the socket's query string), no acknowledgements, nothing
//! stored — what microchat's fan-out is compared with (`scripts/bench-anchor.sh`).
//!
//! `--overload D` offers D deliveries per second (e.g. 200,000, far past capacity) from
//! `--overload-at` into the measured window for `--overload-for`, and the normal rate
//! before and after: the report gives the p99 and the deliveries of every second, the
//! p99 before, during and after, the goodput during, and how long after the overload the
//! p99 stayed back under 250 ms. A send the broker refuses as `overloaded` is counted as
//! refused (not as an error), and its socket backs off as a real client would: no sends
//! for the `retry_after_ms` the refusal gave (doubled for each refusal in a row, at most
//! twice, up to 5 s, with jitter so refused clients do not come back together); the sends its
//! schedule held during the back-off are counted as held back, not sent later (a
//! resend's latency would measure the client's wait, not the server). Missing deliveries
//! are counted against the *accepted* (acknowledged) sends only.
//!
//! `--idle` holds the sockets without sending and reports the server's memory per socket
//! (`--server-pid`), then checks that a message still reaches every member.

mod storm;

use crate::{
    http::{Connection, read_body},
    report::{CountBySecond, LatencyBySecond, SlowestBySecond, Tally},
    schedule::{Arrivals, SendTimes},
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
    tungstenite::{Message, Utf8Bytes, client::IntoClientRequest, protocol::WebSocketConfig},
};

type Socket = WebSocketStream<tokio::net::TcpStream>;

/// Flags of `loadgen ws`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the broker (loopback only); several, comma-separated, spread the users
    /// and sockets over them round-robin, so every room has members on every broker.
    #[arg(
        long = "broker",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        value_parser = LoopbackUrl::parse
    )]
    brokers: Vec<LoopbackUrl>,
    /// What serves the sockets: microchat's broker, or the anchor (a plain Node `ws`
    /// broadcast server: no accounts, user and room in the socket's URL, no acks, nothing
    /// stored).
    #[arg(long, value_enum, default_value_t = Target::Microchat)]
    target: Target,
    /// Sockets to open, one user each (1 to 60000; one process may hold about 19000)
    /// [default: 1000, or 10000 with --login-storm].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    sockets: Option<u32>,
    /// Members per room (every member's socket receives every message of the room).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    room_size: u32,
    /// Messages per second each socket sends [default: 1].
    #[arg(long, conflicts_with = "deliveries_per_sec")]
    rate: Option<f64>,
    /// Offered deliveries per second over all sockets, instead of --rate: each socket
    /// sends D / (sockets × room size) messages a second [default with --login-storm: 30000].
    #[arg(long, value_name = "D")]
    deliveries_per_sec: Option<f64>,
    /// Send on the evenly paced schedule (socket i of n at exactly i/n of every period,
    /// so the server never sees two sends at once) instead of the default: each socket at
    /// a uniformly random moment of every period (one send per period, so the rate is
    /// exact; not Poisson, whose bursts from one socket would hit the per-socket limit).
    #[arg(long)]
    paced: bool,
    /// Seed of the random send moments, to repeat a run [default: a fresh one, printed].
    #[arg(long, conflicts_with = "paced")]
    seed: Option<u64>,
    /// Login storm: the users register, log in, enter their rooms and open their sockets
    /// during the run, spread over --storm-window; traffic starts --storm-pause after the
    /// window (no warm-up: measured from its first second); reports the p99 of every
    /// second and the deliveries still missing 10 s after the load ended.
    #[arg(long, conflicts_with_all = ["idle", "barrier"])]
    login_storm: bool,
    /// With --login-storm: the time over which the users arrive.
    #[arg(long, default_value = "20s", value_parser = crate::phase::parse_duration)]
    storm_window: Duration,
    /// With --login-storm: the quiet time between the window's end and the traffic.
    #[arg(long, default_value = "5s", value_parser = crate::phase::parse_warmup)]
    storm_pause: Duration,
    /// Overload: offer D deliveries per second over all sockets (e.g. 200000) from
    /// --overload-at into the measured window, for --overload-for; the normal rate
    /// (--rate or --deliveries-per-sec) before and after.
    #[arg(long, value_name = "D", conflicts_with_all = ["idle", "login_storm"])]
    overload: Option<f64>,
    /// With --overload: when it starts, from the start of the measured window.
    #[arg(long, default_value = "5s", value_parser = crate::phase::parse_warmup)]
    overload_at: Duration,
    /// With --overload: how long it lasts.
    #[arg(long, default_value = "10s", value_parser = crate::phase::parse_duration)]
    overload_for: Duration,
    /// Measured time (at most 1h).
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

/// What `loadgen ws` sends its load to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// microchat's broker: users registered and logged in, every message stored and acked.
    Microchat,
    /// The anchor, `../shared/anchors/node-ws`: `ws://HOST/ws?user=U&room=R`, no acks.
    Anchor,
}

/// How long after the last send the sockets keep reading (deliveries arriving later are
/// counted missing): 3 s, and 10 s after a login storm.
const DRAIN: Duration = Duration::from_secs(3);
/// See [`DRAIN`].
const STORM_DRAIN: Duration = Duration::from_secs(10);

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

    /// Sockets (and users) of the run.
    fn socket_count(&self) -> u32 {
        let default = if self.login_storm { 10_000 } else { 1_000 };
        self.sockets.unwrap_or(default)
    }

    /// Messages per second each socket sends.
    fn rate_per_socket(&self) -> f64 {
        let deliveries = self
            .deliveries_per_sec
            .or(self.login_storm.then_some(30_000.0));
        match (self.rate, deliveries) {
            (Some(rate), _) => rate,
            (None, Some(deliveries)) => {
                deliveries / (f64::from(self.socket_count()) * f64::from(self.room_size))
            }
            (None, None) => 1.0,
        }
    }

    /// Messages per second each socket sends during the overload, if there is one.
    fn overload_rate_per_socket(&self) -> Option<f64> {
        self.overload.map(|deliveries| {
            deliveries / (f64::from(self.socket_count()) * f64::from(self.room_size))
        })
    }

    /// The measured seconds of the overload, if there is one.
    fn overload_seconds(&self) -> Option<std::ops::Range<usize>> {
        self.overload?;
        let from = whole_seconds(self.overload_at);
        Some(from..from + whole_seconds(self.overload_for).max(1))
    }
}

/// `duration` in whole seconds, as an index of the seconds of a run.
fn whole_seconds(duration: Duration) -> usize {
    usize::try_from(duration.as_secs()).unwrap_or(usize::MAX)
}

/// Summed RSS of `pids`.
fn rss_sum_kib(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

/// A user of the run.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Its access token.
    pub(crate) token: String,
    /// The id of its room.
    pub(crate) room: String,
}

/// Sign-ins refused as overloaded are tried again (as the pages do) until this long
/// after the first try.
const SIGN_IN_PATIENCE: Duration = Duration::from_secs(60);

/// POSTs a sign-in (`/api/auth/register` or `/api/auth/login`), and when the broker
/// refuses it as `overloaded`, waits its `Retry-After` (stretched by up to half again at
/// random, so the refused do not come back as one wave) and tries again, for up to
/// [`SIGN_IN_PATIENCE`]: what a client is told to do. Also returns how often it was
/// refused.
async fn sign_in(
    connection: &mut Connection,
    broker: &LoopbackUrl,
    path: &str,
    body: &Value,
) -> Result<(StatusCode, Value, u32)> {
    let give_up = Instant::now() + SIGN_IN_PATIENCE;
    let mut refused = 0;
    loop {
        let (status, answer, retry_after) = request(
            connection,
            broker,
            Method::POST,
            path,
            None,
            Some(body.clone()),
        )
        .await?;
        let overloaded =
            status == StatusCode::SERVICE_UNAVAILABLE && answer["error"]["code"] == "overloaded";
        let wait = retry_after
            .unwrap_or(Duration::from_secs(1))
            .mul_f64(1.0 + fastrand::f64() / 2.0);
        if !overloaded || Instant::now() + wait > give_up {
            return Ok((status, answer, refused));
        }
        refused += 1;
        tokio::time::sleep(wait).await;
    }
}

/// Calls the broker on `connection`: the answer's status, JSON body (`null` when there is
/// none or it is no JSON) and `Retry-After`, if any.
async fn request(
    connection: &mut Connection,
    broker: &LoopbackUrl,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value, Option<Duration>)> {
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
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .map(Duration::from_secs);
    let body = read_body(response.into_body()).await?;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Ok((status, value, retry_after))
}

/// Registers and logs in one user per socket, and puts them in rooms.
async fn set_up(args: &Args, run: &str) -> Result<Vec<Member>> {
    let users = args.socket_count() as usize;
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
                room_ids[index / room_size].clone_from(&member.room);
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
pub(crate) async fn enrol(
    broker: &LoopbackUrl,
    run: &str,
    index: usize,
    password: &str,
    room: String,
) -> Result<Member> {
    let mut connection = Connection::open(broker).await?;
    let (token, _) = log_in(&mut connection, broker, run, index, password).await?;
    let room = enter_room(&mut connection, broker, run, index, &token, room).await?;
    Ok(Member { token, room })
}

/// Registers user `index` and logs in (trying again what was refused as overloaded): its
/// token, and how often a sign-in was refused.
async fn log_in(
    connection: &mut Connection,
    broker: &LoopbackUrl,
    run: &str,
    index: usize,
    password: &str,
) -> Result<(String, u32)> {
    let username = format!("lg{run}_{index}");
    let account = json!({
        "username": username,
        "email": format!("{username}@load.test"),
        "password": password,
    });
    let (status, body, refused) =
        sign_in(connection, broker, "/api/auth/register", &account).await?;
    ensure!(status == StatusCode::CREATED, "register: {status} {body}");
    let login = json!({ "login": username, "password": password });
    let (status, body, refused_again) =
        sign_in(connection, broker, "/api/auth/login", &login).await?;
    ensure!(status == StatusCode::OK, "login: {status} {body}");
    let token = body["token"]
        .as_str()
        .context("login answered no token")?
        .to_owned();
    Ok((token, refused + refused_again))
}

/// Creates user `index`'s room (`room` empty) or joins `room`: the room's id.
async fn enter_room(
    connection: &mut Connection,
    broker: &LoopbackUrl,
    run: &str,
    index: usize,
    token: &str,
    room: String,
) -> Result<String> {
    if room.is_empty() {
        let name = json!({ "name": format!("lg{run}r{}", index), "topic": "loadgen" });
        let (status, body, _) = request(
            connection,
            broker,
            Method::POST,
            "/api/rooms",
            Some(token),
            Some(name),
        )
        .await?;
        ensure!(
            status == StatusCode::CREATED,
            "create room: {status} {body}"
        );
        Ok(body["id"].as_str().context("no room id")?.to_owned())
    } else {
        let path = format!("/api/rooms/{room}/join");
        let (status, body, _) =
            request(connection, broker, Method::POST, &path, Some(token), None).await?;
        ensure!(status == StatusCode::OK, "join room: {status} {body}");
        Ok(room)
    }
}

/// The anchor's users: no accounts, rooms named by number.
fn anchor_members(users: usize, room_size: usize) -> Vec<Member> {
    (0..users)
        .map(|index| Member {
            token: String::new(),
            room: format!("r{}", index / room_size),
        })
        .collect()
}

/// Opens the socket of `member` (user `index`) from `source`.
async fn open_socket(
    target: Target,
    broker: &LoopbackUrl,
    source: Ipv4Addr,
    member: &Member,
    index: usize,
) -> Result<Opened> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(broker.addr()))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let url = match target {
        Target::Microchat => format!("ws://{}/ws", broker.addr()),
        Target::Anchor => format!(
            "ws://{}/ws?user=u{index}&room={}",
            broker.addr(),
            member.room
        ),
    };
    let mut request = url.into_client_request()?;
    if target == Target::Microchat {
        let bearer = format!("Bearer {}", member.token);
        request
            .headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_str(&bearer)?);
    }
    // Small buffers on the client too, so the tool itself fits many sockets.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .context("WebSocket handshake")?;
    let early = match target {
        Target::Microchat => registered(&mut socket).await?,
        Target::Anchor => Vec::new(),
    };
    Ok(Opened { socket, early })
}

/// A socket as it opened, with what the server sent before it was registered.
pub(crate) struct Opened {
    socket: Socket,
    /// The text frames that came before the answer to the first ping (usually none).
    early: Vec<Utf8Bytes>,
}

/// The id of the ping a microchat socket sends as it opens (as the pages do,
/// `frontend/assets/js/live.js`).
const REGISTERED_PING: u32 = 1;

/// Waits until the broker has registered `socket` for live events, which it does after
/// the upgrade: the answer to the socket's first ping comes after the registration
/// (docs/RELIABILITY.md). Until then a message sent into the user's rooms reaches the
/// socket neither live nor, for a client that fetched history at `open`, from history:
/// a socket counts as open, and owed every delivery, once registered. Returns the text
/// frames that came before the answer.
async fn registered(socket: &mut Socket) -> Result<Vec<Utf8Bytes>> {
    let ping = format!(r#"{{"type":"ping","id":{REGISTERED_PING}}}"#);
    socket.send(Message::text(ping)).await?;
    let is_answer = |text: &str| {
        text.starts_with(r#"{"type":"pong""#)
            && serde_json::from_str::<Value>(text)
                .is_ok_and(|pong| pong["id"] == json!(REGISTERED_PING))
    };
    let mut early = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = socket.next().await {
            match frame? {
                Message::Text(text) if is_answer(text.as_str()) => return Ok(()),
                Message::Text(text) => early.push(text),
                Message::Close(close) => bail!("closed before it was registered: {close:?}"),
                _ => {}
            }
        }
        bail!("closed before it was registered")
    });
    answered
        .await
        .context("the broker registered no socket within 30 s")??;
    Ok(early)
}

/// Opens every socket, a bounded number at a time.
async fn open_all(args: &Args, members: &[Member]) -> Result<Vec<Socket>> {
    let limit = Arc::new(Semaphore::new(args.setup_concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, member) in members.iter().enumerate() {
        let source = args.source[index % args.source.len()];
        let (broker, member, target) =
            (args.broker_for(index).clone(), member.clone(), args.target);
        let permit = Arc::clone(&limit).acquire_owned().await?;
        tasks.spawn(async move {
            let _permit = permit;
            // No traffic before every socket is open: what came before a socket's
            // registration is presence, not a delivery.
            let opened = open_socket(target, &broker, source, &member, index).await;
            (index, opened.map(|opened| opened.socket))
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
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
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

/// The number right after `key` in a frame, e.g. `"retry_after_ms":` or `"client_id":"`.
fn number_after(frame: &str, key: &str) -> Option<u64> {
    let start = frame.find(key)? + key.len();
    let digits = &frame[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Longest back-off after refusals in a row (the server's longest hint).
const MAX_BACK_OFF: Duration = Duration::from_secs(5);

/// A socket's back-off after `overloaded` refusals, as a client should do it: wait the
/// server's hint, doubled for each refusal in a row, with jitter (0.5 to 1.5 times);
/// an accepted send ends it.
#[derive(Debug)]
struct BackOff {
    until: Option<Instant>,
    in_a_row: u32,
    rng: fastrand::Rng,
}

impl Default for BackOff {
    fn default() -> Self {
        Self {
            until: None,
            in_a_row: 0,
            rng: fastrand::Rng::new(),
        }
    }
}

impl BackOff {
    /// Whether sends wait at `now`.
    fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// A send was refused at `now`, to be retried after `retry_after_ms` (100 ms when
    /// the refusal gave none).
    fn refused(&mut self, now: Instant, retry_after_ms: Option<u64>) {
        let hint = Duration::from_millis(retry_after_ms.unwrap_or(100));
        // Doubled at most twice: the server's hint already grows with its load, and a
        // client that backs off much longer stays away after the overload has passed.
        let wait = (hint * 2_u32.pow(self.in_a_row.min(2)))
            .mul_f64(0.5 + self.rng.f64())
            .min(MAX_BACK_OFF);
        self.in_a_row += 1;
        let until = now + wait;
        // Refusals of sends already in flight do not shorten a longer wait.
        self.until = Some(self.until.map_or(until, |current| current.max(until)));
    }

    /// A send was accepted: the server keeps up again.
    fn accepted(&mut self) {
        self.in_a_row = 0;
    }
}

/// What one socket saw.
struct SocketTally {
    latency: Tally,
    /// The slowest delivery of each measured second (by send time).
    slowest_by_second: SlowestBySecond,
    /// Every delivery of each measured second (by send time), for each second's p99.
    latency_by_second: LatencyBySecond,
    sent: u64,
    acked: u64,
    acked_total: u64,
    /// Sends refused as `overloaded`.
    refused: u64,
    /// Refused sends of each measured second (by send time).
    refused_by_second: CountBySecond,
    /// Sends the schedule asked for while the socket backed off after a refusal.
    held_back: u64,
    errors: u64,
    first_error: Option<String>,
    room: String,
    /// When the socket was registered, from the window's epoch (zero: before the first
    /// send): it is owed the messages sent from then on.
    ready_ns: u64,
    /// The send times of the measured sends the server acknowledged.
    acked_sent: Vec<u64>,
    /// Deliveries of measured messages sent once the socket was registered.
    owed_delivered: u64,
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
    /// Sends from `epoch` on; measures those sent from `warmup` for `duration`; reads
    /// until `drain` after that.
    fn new(epoch: Instant, warmup: Duration, duration: Duration, drain: Duration) -> Self {
        let from_ns = nanos(warmup);
        let until_ns = from_ns + nanos(duration);
        Self {
            epoch,
            from_ns,
            until_ns,
            drain_ns: until_ns + nanos(drain),
        }
    }

    fn now_ns(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

/// `duration` in nanoseconds (a run lasts far less than the 584 years that fit).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One socket of the run: what it sends, where, and when.
struct Sender {
    target: Target,
    room: String,
    /// `None`: the socket only reads (`--rate 0`).
    times: Option<SendTimes>,
}

impl Sender {
    /// The frame that sends a message whose body carries `now` (ns since the run's start).
    fn frame(&self, now: u64) -> String {
        let room = &self.room;
        match self.target {
            // The send time again as the client id: a refusal names its send by it.
            Target::Microchat => format!(
                r#"{{"type":"send","conversation_id":"{room}","body":"lg:{now}","client_id":"{now}"}}"#
            ),
            Target::Anchor => format!(r#"{{"type":"send","body":"lg:{now}","ts":{now}}}"#),
        }
    }
}

/// Counts one text frame of a socket's: a delivery, an ack, a refusal or an error.
fn read_frame(tally: &mut SocketTally, back_off: &mut BackOff, window: &Window, text: &str) {
    let now = window.now_ns();
    let in_window = |sent: u64| sent >= window.from_ns && sent < window.until_ns;
    if text.starts_with(r#"{"type":"message""#) {
        if let Some(sent) = sent_at(text).filter(|sent| in_window(*sent)) {
            tally.owed_delivered += u64::from(sent >= tally.ready_ns);
            let took = now.saturating_sub(sent);
            tally.latency.succeeded(Duration::from_nanos(took));
            let second = ((sent - window.from_ns) / 1_000_000_000) as usize;
            tally.slowest_by_second.record(second, took / 1000);
            tally.latency_by_second.record(second, took / 1000);
        }
    } else if text.starts_with(r#"{"type":"ack""#) {
        back_off.accepted();
        tally.acked_total += 1;
        if let Some(sent) = sent_at(text).filter(|sent| in_window(*sent)) {
            tally.acked += 1;
            tally.acked_sent.push(sent);
        }
    } else if text.starts_with(r#"{"type":"error","code":"overloaded""#) {
        back_off.refused(Instant::now(), number_after(text, r#""retry_after_ms":"#));
        let sent = number_after(text, r#""client_id":""#).filter(|sent| in_window(*sent));
        if let Some(sent) = sent {
            tally.refused += 1;
            tally
                .refused_by_second
                .record(((sent - window.from_ns) / 1_000_000_000) as usize);
        }
    } else if text.starts_with(r#"{"type":"error""#) {
        tally.errors += 1;
        tally.first_error.get_or_insert_with(|| text.to_owned());
    }
}

/// Sends on `sender`'s schedule (from `ready` on, an offset from the window's epoch; sends
/// due before are skipped) and reads every frame, until the window's drain ends; the
/// frames that came before the socket was registered are read first.
async fn drive(opened: Opened, sender: Sender, window: Window, ready: Duration) -> SocketTally {
    let Opened { mut socket, early } = opened;
    let mut tally = SocketTally {
        latency: Tally::new(),
        slowest_by_second: SlowestBySecond::default(),
        latency_by_second: LatencyBySecond::default(),
        sent: 0,
        acked: 0,
        acked_total: 0,
        refused: 0,
        refused_by_second: CountBySecond::default(),
        held_back: 0,
        errors: 0,
        first_error: None,
        room: sender.room.clone(),
        ready_ns: nanos(ready),
        acked_sent: Vec::new(),
        owed_delivered: 0,
    };
    let mut back_off = BackOff::default();
    for text in &early {
        read_frame(&mut tally, &mut back_off, &window, text.as_str());
    }
    let mut times = sender.times.clone();
    let mut next_send = times
        .as_mut()
        .map(|times| window.epoch + times.next_send_from(ready));
    let stop_sending = window.epoch + Duration::from_nanos(window.until_ns);
    let stop_reading = window.epoch + Duration::from_nanos(window.drain_ns);
    loop {
        let due = next_send.filter(|due| *due < stop_sending);
        tokio::select! {
            () = tokio::time::sleep_until(due.unwrap_or(stop_reading)) => {
                if due.is_none() {
                    break;
                }
                let now = window.now_ns();
                let in_window = now >= window.from_ns && now < window.until_ns;
                if back_off.holds(Instant::now()) {
                    tally.held_back += u64::from(in_window);
                    next_send = times.as_mut().map(|times| window.epoch + times.next_send());
                    continue;
                }
                if socket.send(Message::text(sender.frame(now))).await.is_err() {
                    tally.errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| "send failed: socket closed".to_owned());
                    break;
                }
                tally.sent += u64::from(in_window);
                next_send = times.as_mut().map(|times| window.epoch + times.next_send());
            }
            frame = socket.next() => {
                let Some(Ok(frame)) = frame else {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| format!("socket closed: {frame:?}"));
                    break;
                };
                let Message::Text(text) = frame else { continue };
                read_frame(&mut tally, &mut back_off, &window, text.as_str());
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
            let (status, page, _) = request(
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
            Some(id) if page["has_more"] == true => id.clone_into(&mut before),
            _ => return Ok(count),
        }
    }
}

/// Runs the scenario.
pub async fn run(args: Args) -> Result<()> {
    let rate = args.rate_per_socket();
    ensure!(
        (0.0..=100.0).contains(&rate),
        "each socket sends 0 to 100 messages per second (--rate, or --deliveries-per-sec / \
         (sockets × room size)), not {rate}"
    );
    if let Some(overload) = args.overload_rate_per_socket() {
        ensure!(
            overload > 0.0 && overload <= 100.0,
            "--overload: each socket sends up to 100 messages per second (D / (sockets × \
             room size)), not {overload}"
        );
        ensure!(
            args.overload_at + args.overload_for <= args.duration,
            "--overload-at + --overload-for must end within --duration"
        );
    }
    for source in &args.source {
        ensure!(
            source.is_loopback(),
            "--source {source}: only 127.0.0.0/8 addresses"
        );
    }
    if args.idle && args.server_pids.is_empty() {
        bail!("--idle measures the server's memory: give --server-pid");
    }
    ensure!(
        args.target == Target::Microchat || !(args.idle || args.login_storm),
        "--target anchor takes neither --idle nor --login-storm (the anchor has no accounts)"
    );
    let arrivals = Arrivals::from_flags(args.paced, args.seed);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let run = format!(
        "{:06x}",
        (u64::from(std::process::id()) ^ started) & 0xff_ffff
    );
    let outcome = if args.login_storm {
        storm::run(&args, arrivals, &run).await?
    } else {
        let count = args.socket_count() as usize;
        let members = match args.target {
            Target::Microchat => set_up(&args, &run).await?,
            Target::Anchor => anchor_members(count, args.room_size as usize),
        };
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
        let window = Window::new(Instant::now(), args.warmup, args.duration, DRAIN);
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (socket, member)) in sockets.into_iter().zip(&members).enumerate() {
            let times = (rate > 0.0).then(|| arrivals.send_times(index, count, period));
            let sender = Sender {
                target: args.target,
                room: member.room.clone(),
                times: times.map(|times| with_overload(&args, times, period)),
            };
            let opened = Opened {
                socket,
                early: Vec::new(),
            };
            tasks.spawn(drive(opened, sender, window, Duration::ZERO));
        }
        let mut tallies = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            tallies.push(joined?);
        }
        Outcome {
            members,
            tallies,
            storm: None,
        }
    };
    report(&args, arrivals, rate, outcome).await
}

/// `times` with the overload phase of `--overload`, if any: its rate from
/// `--overload-at` into the measured window for `--overload-for`, then `period` again.
fn with_overload(args: &Args, times: SendTimes, period: Duration) -> SendTimes {
    let Some(rate) = args.overload_rate_per_socket() else {
        return times;
    };
    let from = args.warmup + args.overload_at;
    times
        .then(from, Duration::from_secs_f64(1.0 / rate.max(1e-6)))
        .then(from + args.overload_for, period)
}

/// What the sockets of a run saw, and who held them.
struct Outcome {
    /// The users whose sockets ran (a login storm's failed users are not among them).
    members: Vec<Member>,
    /// What each socket saw.
    tallies: Vec<SocketTally>,
    /// The login storm's own figures, if the run had one.
    storm: Option<storm::StormFigures>,
}

/// One room's share of a run.
#[derive(Debug, Default)]
struct RoomCounts {
    sockets: u64,
    sent: u64,
    held_back: u64,
    acked: u64,
    acked_total: u64,
    /// The send times of the room's acknowledged measured sends.
    acked_sent: Vec<u64>,
    /// When each of the room's sockets was registered.
    ready_ns: Vec<u64>,
}

impl RoomCounts {
    /// The deliveries the room's accepted sends owe its sockets: each socket is owed
    /// every message sent once it was registered (a storm's late user missed, live,
    /// what came before; it is in history, which the check below counts).
    fn owed(&mut self) -> u64 {
        self.acked_sent.sort_unstable();
        let acked = self.acked_sent.len() as u64;
        self.ready_ns
            .iter()
            .map(|ready| acked - self.acked_sent.partition_point(|sent| sent < ready) as u64)
            .sum()
    }
}

/// Merges what every socket saw, checks a sample of rooms' history (microchat) and prints
/// the figures.
async fn report(args: &Args, arrivals: Arrivals, rate: f64, outcome: Outcome) -> Result<()> {
    let Outcome {
        members,
        tallies,
        storm,
    } = outcome;
    let mut latency = Tally::new();
    let (mut sent, mut acked, mut errors, mut refused, mut held_back) = (0, 0, 0, 0, 0);
    let mut owed_delivered = 0;
    let mut refused_by_second = CountBySecond::default();
    // Every message chat acknowledged (so stored), warm-up and drain included: what
    // `scripts/soak.sh` divides the bytes on disk by.
    let mut stored = 0;
    let mut first_error = None;
    let mut rooms: HashMap<String, RoomCounts> = HashMap::new();
    let mut slowest_by_second = SlowestBySecond::default();
    let mut latency_by_second = LatencyBySecond::default();
    for tally in tallies {
        latency.merge(tally.latency)?;
        slowest_by_second.merge(&tally.slowest_by_second);
        latency_by_second.merge(tally.latency_by_second);
        sent += tally.sent;
        acked += tally.acked;
        stored += tally.acked_total;
        errors += tally.errors;
        refused += tally.refused;
        held_back += tally.held_back;
        owed_delivered += tally.owed_delivered;
        refused_by_second.merge(&tally.refused_by_second);
        first_error = first_error.or(tally.first_error);
        let room = rooms.entry(tally.room).or_default();
        room.sockets += 1;
        room.sent += tally.sent;
        room.held_back += tally.held_back;
        room.acked += tally.acked;
        room.acked_total += tally.acked_total;
        room.acked_sent.extend(tally.acked_sent);
        room.ready_ns.push(tally.ready_ns);
    }
    let held = u32::try_from(members.len())?;
    let figures = crate::report::PhaseFigures::new("deliveries", held, args.duration, latency);
    let deliveries = figures.requests - figures.errors;
    // Every message reaches every socket of its room (the sender's too). microchat's
    // expected deliveries are those of the acknowledged messages, to the sockets
    // registered when they were sent; the anchor acks nothing.
    let expected: u64 = rooms
        .values_mut()
        .map(|room| match args.target {
            Target::Microchat => room.owed(),
            Target::Anchor => room.sent * room.sockets,
        })
        .sum();
    // What the schedule asked for, held back or not.
    let offered: u64 = rooms
        .values()
        .map(|room| (room.sent + room.held_back) * room.sockets)
        .sum();
    let drain = if args.login_storm { STORM_DRAIN } else { DRAIN };
    // Deliveries owed: those of the accepted sends (a refused one is owed nothing), to
    // the sockets registered by then.
    let missing = expected.saturating_sub(owed_delivered);
    let overload = args
        .overload_seconds()
        .map(|seconds| overload_figures(args, &latency_by_second, seconds));
    let (checked, history_complete) = match args.target {
        Target::Microchat => {
            let (checked, complete) = check_history(args, &members, &rooms).await?;
            (checked, Some(complete))
        }
        Target::Anchor => (0, None),
    };
    let p99_by_second = latency_by_second.p99_micros();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let target = match args.target {
        Target::Microchat => "microchat",
        Target::Anchor => "anchor",
    };
    let offered_per_sec = rate * f64::from(held) * f64::from(args.room_size);
    let (schedule, seed) = match arrivals {
        Arrivals::Random { seed } => ("random", Some(seed)),
        Arrivals::Paced => ("paced", None),
    };
    let summary = json!({
        "scenario": if args.login_storm { "ws-login-storm" } else { "ws" },
        "target": target,
        "schedule": schedule,
        "seed": seed,
        "brokers": args.brokers.len(),
        "loadgen_cpus": cpus,
        "sockets": held,
        "room_size": args.room_size,
        "rate_per_socket": rate,
        "offered_deliveries_per_sec": offered_per_sec,
        "duration_secs": args.duration.as_secs_f64(),
        "offered_deliveries": offered,
        "sent": sent,
        "acked": acked,
        "acked_all": stored,
        "refused_overloaded": refused,
        "held_back": held_back,
        "errors": errors,
        "first_error": first_error,
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "owed_delivered": owed_delivered,
        "missing_deliveries": missing,
        "drain_secs": drain.as_secs_f64(),
        "deliveries_per_sec": figures.per_sec,
        "latency_us": {
            "p50": figures.p50_us,
            "p90": figures.p90_us,
            "p99": figures.p99_us,
            "max": figures.max_us,
        },
        "history_checked_rooms": checked,
        "history_complete": history_complete,
        "slowest_delivery_by_second_us": slowest_by_second.micros(),
        "p99_by_second_us": p99_by_second,
        "deliveries_by_second": latency_by_second.counts(),
        "refused_by_second": refused_by_second.counts(),
        "overload": overload.as_ref().map(OverloadFigures::json),
        "login_storm": storm.as_ref().map(storm::StormFigures::json),
    });
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    if let Some(storm) = &storm {
        println!("{}", storm.line());
    }
    println!(
        "ws fan-out ({target}, {}): {held} sockets over {} broker(s), rooms of {}, {rate:.3} msg/s \
         each ({offered_per_sec:.0} deliveries/s offered), {}s measured ({cpus} loadgen CPUs)\n  \
         offered {offered} deliveries; sent {sent}, accepted (acked) {acked} ({stored} over the whole run), refused as \
         overloaded {refused}, held back by clients backing off {held_back}, errors {errors}{}\n  \
         deliveries {deliveries}, of them {owed_delivered} of the {expected} owed to accepted sends ({:.1}%; a socket is \
         owed what was sent once it was registered), {:.0} deliveries/s (goodput); {missing} owed had not arrived {}s \
         after the load ended\n  \
         send→deliver latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n  \
         p99 of each second, ms: {}\n  \
         deliveries of each second: {}\n  \
         refused sends of each second: {}\n  \
         slowest delivery of each second, ms: {}\n  \
         {}{}",
        arrivals.describe(),
        args.brokers.len(),
        args.room_size,
        args.duration.as_secs(),
        first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        100.0 * owed_delivered as f64 / expected.max(1) as f64,
        figures.per_sec,
        drain.as_secs(),
        figures.p50_us as f64 / 1e3,
        figures.p90_us as f64 / 1e3,
        figures.p99_us as f64 / 1e3,
        figures.max_us as f64 / 1e3,
        crate::report::millis_line(&p99_by_second),
        crate::report::counts_line(&latency_by_second.counts()),
        crate::report::counts_line(refused_by_second.counts()),
        slowest_by_second.millis_line(),
        history_complete.map_or(
            "history: not checked (the anchor stores nothing)".to_owned(),
            |c| { format!("history of {checked} rooms complete: {c}") }
        ),
        overload
            .as_ref()
            .map(|overload| format!("\n  {}", overload.line()))
            .unwrap_or_default(),
    );
    Ok(())
}

/// The p99 a run should keep to, and come back under after an overload.
const NORMAL_P99_US: u64 = 250_000;

/// What an overload run shows: the p99 before, during and after, the goodput during, and
/// how soon after it the p99 of every second stayed under [`NORMAL_P99_US`].
struct OverloadFigures {
    offered_per_sec: f64,
    seconds: std::ops::Range<usize>,
    p99_before_us: u64,
    p99_during_us: u64,
    p99_after_us: u64,
    goodput_during: f64,
    /// Seconds after the overload's end until every later second's p99 was normal;
    /// `None` if it never was.
    back_to_normal_secs: Option<usize>,
}

fn overload_figures(
    args: &Args,
    latency: &LatencyBySecond,
    seconds: std::ops::Range<usize>,
) -> OverloadFigures {
    let measured = whole_seconds(args.duration);
    let delivered = latency.counts();
    let during: u64 = delivered
        .get(seconds.clone())
        .map_or(0, |during| during.iter().sum());
    let p99s = latency_p99s(latency);
    let back_to_normal_secs = (seconds.end..=measured)
        .find(|from| {
            (*from..measured).all(|second| p99s.get(second).is_none_or(|p99| *p99 <= NORMAL_P99_US))
        })
        .map(|from| from - seconds.end);
    OverloadFigures {
        offered_per_sec: args.overload.unwrap_or_default(),
        p99_before_us: latency.p99_over(0..seconds.start),
        p99_during_us: latency.p99_over(seconds.clone()),
        p99_after_us: latency.p99_over(seconds.end..measured),
        goodput_during: during as f64 / seconds.len().max(1) as f64,
        back_to_normal_secs,
        seconds,
    }
}

/// Each second's p99 in microseconds, without sorting the caller's copy.
fn latency_p99s(latency: &LatencyBySecond) -> Vec<u64> {
    (0..latency.counts().len())
        .map(|second| latency.p99_over(second..second + 1))
        .collect()
}

impl OverloadFigures {
    fn json(&self) -> Value {
        json!({
            "offered_deliveries_per_sec": self.offered_per_sec,
            "from_sec": self.seconds.start,
            "until_sec": self.seconds.end,
            "p99_before_us": self.p99_before_us,
            "p99_during_us": self.p99_during_us,
            "p99_after_us": self.p99_after_us,
            "goodput_during_deliveries_per_sec": self.goodput_during,
            "back_to_normal_secs": self.back_to_normal_secs,
        })
    }

    fn line(&self) -> String {
        format!(
            "overload of {:.0} deliveries/s offered in seconds {}..{}: p99 before {:.1} ms, \
             during {:.1} ms, after {:.1} ms; goodput during {:.0} deliveries/s; p99 back \
             under {} ms {}",
            self.offered_per_sec,
            self.seconds.start,
            self.seconds.end,
            self.p99_before_us as f64 / 1e3,
            self.p99_during_us as f64 / 1e3,
            self.p99_after_us as f64 / 1e3,
            self.goodput_during,
            NORMAL_P99_US / 1000,
            self.back_to_normal_secs
                .map_or("never".to_owned(), |secs| format!(
                    "{secs} s after it ended"
                )),
        )
    }
}

/// Reads back the history of up to 5 rooms: how many were checked, and whether each
/// holds every message acknowledged in it.
async fn check_history(
    args: &Args,
    members: &[Member],
    rooms: &HashMap<String, RoomCounts>,
) -> Result<(usize, bool)> {
    let mut checked = 0;
    let mut complete = true;
    let mut seen_rooms = std::collections::HashSet::new();
    for member in members {
        if checked >= 5 || !seen_rooms.insert(member.room.clone()) {
            continue;
        }
        let stored = history_count(&args.brokers[0], &member.token, &member.room).await?;
        let acked_here = rooms.get(&member.room).map_or(0, |room| room.acked_total);
        // Every acknowledged message must be in history; more is fine (a message can be
        // stored and its ack still in flight when the run ends).
        if stored < acked_here {
            complete = false;
            eprintln!(
                "room {}: {acked_here} acknowledged but only {stored} in history",
                member.room
            );
        }
        checked += 1;
    }
    Ok((checked, complete))
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
    let (status, answer, _) = request(
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
            "ws idle: {held} sockets held over {} broker(s), {closed_by_server} closed by the \
             server; server RSS {} → {} KiB: {:.0} bytes ({:.2} KiB) per socket; a message \
             reached {reached}/{room_size} members within 5 s (slowest {:.0} ms)",
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
        "the delivery check failed: a message reached {reached} of {room_size} members \
         within 5 s ({})",
        late.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_owed_what_was_sent_once_it_was_registered() {
        let mut room = RoomCounts {
            acked_sent: vec![30, 10, 20],
            ready_ns: vec![0, 15, 20, 35],
            ..RoomCounts::default()
        };
        // From the start: all 3; from 15: 20 and 30; from 20: the same (sent as it
        // registered counts); from 35: none.
        assert_eq!(room.owed(), 3 + 2 + 2);
    }

    #[test]
    fn a_refusal_is_read_off_its_frame() {
        let frame = r#"{"type":"error","code":"overloaded","message":"not sent","client_id":"123456","retry_after_ms":250}"#;
        assert_eq!(number_after(frame, r#""retry_after_ms":"#), Some(250));
        assert_eq!(number_after(frame, r#""client_id":""#), Some(123_456));
        assert_eq!(number_after(frame, r#""nothing":"#), None);
    }

    #[test]
    fn a_refused_client_waits_the_hint_longer_for_each_refusal_in_a_row_and_an_ack_resets_it() {
        let now = Instant::now();
        let mut back_off = BackOff::default();
        assert!(!back_off.holds(now));
        back_off.refused(now, Some(200));
        // 200 ms with jitter: 100 to 300 ms.
        assert!(back_off.holds(now + Duration::from_millis(99)));
        assert!(!back_off.holds(now + Duration::from_millis(301)));
        for _ in 0..20 {
            back_off.refused(now, Some(200));
        }
        assert!(back_off.holds(now + Duration::from_millis(399)), "doubled");
        assert!(!back_off.holds(now + MAX_BACK_OFF), "capped");
        back_off.accepted();
        let later = now + MAX_BACK_OFF;
        back_off.refused(later, Some(200));
        assert!(!back_off.holds(later + Duration::from_millis(301)), "reset");
    }
}
