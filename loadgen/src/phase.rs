//! Running many clients for a warm-up and a measured window, then merging what they saw.
//!
//! Every client is a tokio task owning its own `Probe` and `Tally`, so the hot loop
//! shares nothing. A phase connects all its clients first, then starts them together;
//! a call still running well past the end of the phase is given up and counted failed,
//! so a stalled server cannot hang the tool.

use crate::report::Tally;
use anyhow::{Context, Result, ensure};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most concurrent clients a phase may run.
pub const MAX_CLIENTS: u32 = 10_000;
/// Longest measured window: an hour, for a soak (`scripts/soak.sh`: 30 minutes by default).
pub const MAX_DURATION: Duration = Duration::from_secs(60 * 60);
/// Longest warm-up.
pub const MAX_WARMUP: Duration = Duration::from_secs(60);
/// How long past the end of a phase a call may still run before it counts as failed.
const GRACE: Duration = Duration::from_secs(10);
/// Clients connecting at the same time (a listener's accept backlog is finite).
const CONNECTS_AT_ONCE: usize = 128;

/// How much load to send, shared by every scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Concurrent clients, each a task with its own connection or stream (1 to 10000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CLIENTS)))]
    pub clients: u32,
    /// Measured length of each phase, e.g. 10s or 2m (at most 1h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    /// Unrecorded run before each phase, e.g. 2s (at most 1m; 0s for none).
    #[arg(long, default_value = "2s", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// Print one JSON object with the figures on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One client's repeated call: connection, request and everything it needs, owned.
pub trait Probe: Send + 'static {
    /// Makes one call; `Err` when it failed in any way (transport, status, body).
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// When a phase's clients record and stop.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    record_from: Instant,
    stop_at: Instant,
}

/// Connects `count` clients with `connect(index)`, a bounded number at a time.
pub async fn connect_all<P, F, Fut>(count: u32, connect: F) -> Result<Vec<P>>
where
    P: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<P>> + Send + 'static,
{
    let mut clients = Vec::with_capacity(count as usize);
    let mut pending = JoinSet::new();
    for index in 0..count {
        if pending.len() >= CONNECTS_AT_ONCE {
            clients.push(next_connected(&mut pending).await?);
        }
        pending.spawn(connect(index));
    }
    while !pending.is_empty() {
        clients.push(next_connected(&mut pending).await?);
    }
    Ok(clients)
}

async fn next_connected<P: Send + 'static>(pending: &mut JoinSet<Result<P>>) -> Result<P> {
    let joined = pending.join_next().await.context("no connection pending")?;
    joined
        .context("a connecting task panicked")?
        .context("a client could not connect")
}

/// Runs every probe for `warmup` (not recorded) then `duration`, and merges their tallies.
pub async fn run<P: Probe>(probes: Vec<P>, warmup: Duration, duration: Duration) -> Result<Tally> {
    let start = Instant::now();
    let schedule = Schedule {
        record_from: start + warmup,
        stop_at: start + warmup + duration,
    };
    let mut clients: JoinSet<Tally> = probes
        .into_iter()
        .map(|probe| drive(probe, schedule))
        .collect();
    let mut total = Tally::new();
    while let Some(joined) = clients.join_next().await {
        total.merge(joined.context("a client task panicked")?)?;
    }
    Ok(total)
}

/// One client's loop: call until the schedule ends, timing the calls that start in the window.
async fn drive<P: Probe>(mut probe: P, schedule: Schedule) -> Tally {
    let mut tally = Tally::new();
    let calls = async {
        loop {
            let started = Instant::now();
            if started >= schedule.stop_at {
                break;
            }
            let outcome = probe.call().await;
            if started < schedule.record_from {
                continue;
            }
            match outcome {
                Ok(()) => tally.succeeded(started.elapsed()),
                Err(error) => tally.failed(&error),
            }
        }
    };
    // One deadline per client rather than a timer per call keeps the hot loop lean.
    if tokio::time::timeout_at(schedule.stop_at + GRACE, calls)
        .await
        .is_err()
    {
        tally.failed(&anyhow::anyhow!(
            "a call was still running {GRACE:?} after the end of the phase"
        ));
    }
    tally
}

/// Parses a measured duration: more than zero, at most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let duration = humantime::parse_duration(text)?;
    ensure!(!duration.is_zero(), "the duration must be more than zero");
    ensure!(
        duration <= MAX_DURATION,
        "the duration may be at most {}",
        humantime::format_duration(MAX_DURATION)
    );
    Ok(duration)
}

/// Parses a warm-up: at most `MAX_WARMUP`.
pub fn parse_warmup(text: &str) -> Result<Duration> {
    let warmup = humantime::parse_duration(text)?;
    ensure!(
        warmup <= MAX_WARMUP,
        "the warm-up may be at most {}",
        humantime::format_duration(MAX_WARMUP)
    );
    Ok(warmup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_to_an_hour() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1h").unwrap(), MAX_DURATION);
        assert!(parse_duration("3601s").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn warmups_may_be_zero_but_not_long() {
        assert!(parse_warmup("0s").unwrap().is_zero());
        assert!(parse_warmup("2m").is_err());
    }

    struct Counter(u32);

    impl Probe for Counter {
        async fn call(&mut self) -> Result<()> {
            self.0 += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            ensure!(self.0.is_multiple_of(2), "odd call");
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_phase_times_successes_and_counts_failures_of_every_client() {
        let probes = connect_all(4, |_| async { Ok(Counter(0)) }).await.unwrap();
        let tally = run(
            probes,
            Duration::from_millis(20),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        let figures =
            crate::report::PhaseFigures::new("test", 4, Duration::from_millis(100), tally);
        assert!(figures.requests > 4, "{} requests", figures.requests);
        assert!(figures.errors > 0 && figures.errors < figures.requests);
        assert!(figures.p50_us >= 1_000);
    }
}
