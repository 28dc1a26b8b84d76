//! `loadgen ws --login-storm`: every user arrives during the run, then the traffic starts.
//!
//! After a deploy every client reconnects at once: thousands of logins (password hashes,
//! sessions, the deferred work they cause: welcome mails, audits) land on the server just
//! before the traffic resumes. Here each user arrives at its own moment of
//! `--storm-window` (random, or evenly spread with `--paced`), registers, logs in, creates
//! or joins its room (a member arriving before its room's creator waits for the room, its
//! login already done), opens its socket and keeps reading it; `--storm-pause` after the
//! window the traffic starts, measured from its first second with no warm-up. A sign-in
//! the broker refuses as `overloaded` is tried again after its `Retry-After`, as the pages
//! do (counted). A user whose set-up fails is counted, not fatal: a storm the server
//! cannot absorb is a finding.

use super::{
    Args, DRAIN, Member, Outcome, STORM_DRAIN, Sender, SocketTally, Target, Window, drive,
    enter_room, log_in, open_socket,
};
use crate::{
    http::Connection,
    report::{PhaseFigures, Tally},
    schedule::Arrivals,
};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::{sync::watch, time::Instant};

/// What the storm itself measured.
pub struct StormFigures {
    /// Users that were to arrive.
    users: usize,
    /// Users that failed to set up (no socket).
    failed: usize,
    /// Sign-ins the broker refused as overloaded, each tried again after its
    /// `Retry-After`.
    refused: u64,
    /// Users refused at least once.
    users_refused: usize,
    /// The first failure.
    first_error: Option<String>,
    /// Users whose socket was open and registered (see `registered`) only after the
    /// traffic had started.
    late: usize,
    /// From the storm's start to the last user's socket.
    took: Duration,
    /// Each user's register + login, from its moment (p50, p99, max).
    log_in: PhaseFigures,
    /// Each user's whole set-up, from its moment to its open socket.
    set_up: PhaseFigures,
    window: Duration,
    pause: Duration,
}

impl StormFigures {
    /// The figures as a JSON object.
    pub fn json(&self) -> Value {
        json!({
            "users": self.users,
            "failed": self.failed,
            "sign_ins_refused": self.refused,
            "users_refused": self.users_refused,
            "first_error": self.first_error,
            "late": self.late,
            "window_secs": self.window.as_secs_f64(),
            "pause_secs": self.pause.as_secs_f64(),
            "all_ready_after_secs": self.took.as_secs_f64(),
            "log_in_us": percentiles(&self.log_in),
            "set_up_us": percentiles(&self.set_up),
        })
    }

    /// The figures as one line of text.
    pub fn line(&self) -> String {
        format!(
            "login storm: {} users over {}s, traffic {}s later; {} failed{}, {} not ready when \
             the traffic started; last socket open after {:.1}s\n  \
             sign-ins refused as overloaded and tried again after Retry-After: {} ({} users)\n  \
             register+login p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             whole set-up p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.users,
            self.window.as_secs_f64(),
            self.pause.as_secs_f64(),
            self.failed,
            self.first_error
                .as_ref()
                .map(|error| format!(" (first: {error})"))
                .unwrap_or_default(),
            self.late,
            self.took.as_secs_f64(),
            self.refused,
            self.users_refused,
            self.log_in.p50_us as f64 / 1e3,
            self.log_in.p99_us as f64 / 1e3,
            self.log_in.max_us as f64 / 1e3,
            self.set_up.p50_us as f64 / 1e3,
            self.set_up.p99_us as f64 / 1e3,
            self.set_up.max_us as f64 / 1e3,
        )
    }
}

/// p50, p99 and max of `figures`, in microseconds.
fn percentiles(figures: &PhaseFigures) -> Value {
    json!({ "p50": figures.p50_us, "p99": figures.p99_us, "max": figures.max_us })
}

/// What one user's arrival gave: its member and socket's tally, how long its login and
/// whole set-up took, when its socket was open (from the storm's start), and how often
/// its sign-ins were refused as overloaded.
type Arrival = (Member, SocketTally, Duration, Duration, Duration, u32);

/// Runs the storm and the traffic after it.
pub async fn run(args: &Args, arrivals: Arrivals, run: &str) -> Result<Outcome> {
    debug_assert_eq!(args.target, Target::Microchat, "checked by the caller");
    let users = args.socket_count() as usize;
    let room_size = args.room_size as usize;
    let moments = arrivals.moments(users, args.storm_window);
    let start = Instant::now();
    let traffic = args.storm_window + args.storm_pause;
    let window = Window::new(start + traffic, Duration::ZERO, args.duration, STORM_DRAIN);
    debug_assert!(STORM_DRAIN > DRAIN);
    let rate = args.rate_per_socket();
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    // Each room's id, published by its creator (the room's first user) to the others.
    let (mut creators, joiners): (Vec<_>, Vec<_>) = (0..users.div_ceil(room_size))
        .map(|_| {
            let (publish, room) = watch::channel(String::new());
            (Some(publish), room)
        })
        .unzip();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, moment) in moments.into_iter().enumerate() {
        let room = index / room_size;
        let role = match creators[room].take() {
            Some(publish) => Role::Creator(publish),
            None => Role::Joiner(joiners[room].clone()),
        };
        let user = User {
            index,
            broker: args.broker_for(index).clone(),
            source: args.source[index % args.source.len()],
            password: args.password.clone(),
            run: run.to_owned(),
            arrives: start + moment,
        };
        let times = (rate > 0.0).then(|| arrivals.send_times(index, users, period));
        tasks.spawn(async move {
            let arrival = arrive(user, role, times, window, start, traffic).await;
            arrival.with_context(|| format!("user {index}"))
        });
    }
    drop(joiners);
    let (mut members, mut tallies) = (Vec::with_capacity(users), Vec::with_capacity(users));
    let (mut log_in_latency, mut set_up_latency) = (Tally::new(), Tally::new());
    let (mut failed, mut first_error, mut late, mut took) = (0, None, 0, Duration::ZERO);
    let (mut refused, mut users_refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((member, tally, log_in, set_up, ready, refusals)) => {
                refused += u64::from(refusals);
                users_refused += usize::from(refusals > 0);
                members.push(member);
                tallies.push(tally);
                log_in_latency.succeeded(log_in);
                set_up_latency.succeeded(set_up);
                late += usize::from(ready > traffic);
                took = took.max(ready);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let held = u32::try_from(members.len())?;
    let storm = StormFigures {
        users,
        failed,
        refused,
        users_refused,
        first_error,
        late,
        took,
        log_in: PhaseFigures::new("logins", held, args.storm_window, log_in_latency),
        set_up: PhaseFigures::new("set-ups", held, args.storm_window, set_up_latency),
        window: args.storm_window,
        pause: args.storm_pause,
    };
    Ok(Outcome {
        members,
        tallies,
        storm: Some(storm),
    })
}

/// One user of the storm: who, where from, and when it arrives.
struct User {
    index: usize,
    broker: crate::target::LoopbackUrl,
    source: std::net::Ipv4Addr,
    password: String,
    run: String,
    arrives: Instant,
}

/// Whether a user creates its room (and publishes its id) or joins it.
enum Role {
    Creator(watch::Sender<String>),
    Joiner(watch::Receiver<String>),
}

/// One user's arrival: sets up at its moment, then reads its socket and sends from the
/// traffic's start (or from when it is ready, if later).
async fn arrive(
    user: User,
    role: Role,
    times: Option<crate::schedule::SendTimes>,
    window: Window,
    start: Instant,
    traffic: Duration,
) -> Result<Arrival> {
    tokio::time::sleep_until(user.arrives).await;
    let mut connection = Connection::open(&user.broker).await?;
    let broker = &user.broker;
    let (token, refusals) = log_in(
        &mut connection,
        broker,
        &user.run,
        user.index,
        &user.password,
    )
    .await?;
    let logged_in = user.arrives.elapsed();
    let room = match role {
        Role::Creator(publish) => {
            let room = enter_room(
                &mut connection,
                broker,
                &user.run,
                user.index,
                &token,
                "".into(),
            )
            .await?;
            // The joiners may all have failed already: nobody to tell is fine.
            let _ = publish.send(room.clone());
            room
        }
        Role::Joiner(mut room) => {
            let id = room
                .wait_for(|id| !id.is_empty())
                .await
                .context("the room's creator failed")?
                .clone();
            enter_room(&mut connection, broker, &user.run, user.index, &token, id).await?
        }
    };
    drop(connection);
    let member = Member { token, room };
    let opened = open_socket(Target::Microchat, broker, user.source, &member, user.index).await?;
    let set_up = user.arrives.elapsed();
    let ready = start.elapsed();
    let sender = Sender {
        target: Target::Microchat,
        room: member.room.clone(),
        times,
    };
    let tally = drive(opened, sender, window, ready.saturating_sub(traffic)).await;
    Ok((member, tally, logged_in, set_up, ready, refusals))
}
