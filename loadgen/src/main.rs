//! `loadgen`: sends load to a microchat running on this machine and prints what it measured.
//!
//! A benchmark tool, not a test: it passes or fails nothing, it prints figures. Each
//! scenario is a subcommand; every one runs its clients for a warm-up (not recorded)
//! and then for the measured duration. Load only ever goes to loopback addresses.

mod auth;
mod events;
mod files;
mod http;
mod phase;
mod report;
mod schedule;
mod search;
mod target;
mod ws;

use clap::{Parser, Subcommand};

// The events scenario runs the listener and a logger in this process: the same allocator
// as their own binaries, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for microchat: runs a scenario against loopback and prints latency figures.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// What to measure.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// The broker's token check (GET /api/auth/me) against auth's VerifyToken over gRPC directly.
    Auth(auth::Args),
    /// Live fan-out through the broker's WebSocket: deliveries/s and send→deliver latency,
    /// or (with --idle) the server's memory per open socket.
    ///
    /// Each socket sends at a uniformly random moment of every period (one send per
    /// period, so the offered rate is exact; not Poisson arrivals, whose bursts from a single
    /// socket would measure the broker's per-socket limit) — the schedule the anchor was
    /// measured with; --paced for the old evenly paced schedule, --seed to repeat a run.
    /// --login-storm: users log in during the run, then the traffic starts.
    /// --target anchor: the same load against the Node anchor (scripts/bench-anchor.sh).
    Ws(ws::Args),
    /// The durable event path: outbox → relay → RabbitMQ → listener, at full speed;
    /// events/s end to end and commit→handled latency, every event exactly once.
    Events(events::Args),
    /// Full-text search over a million stored messages (SQLite or PostgreSQL): seeds them
    /// through chat's store, then p50/p90/p99/max of common, rare and two-word searches.
    Search(search::Args),
    /// Attachments through the broker: many large uploads at once (MB/s, and how much the
    /// server's memory grows: streamed, not buffered), then many thumbnail downloads at
    /// once (p50/p99).
    Files(files::Args),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Auth(args) => auth::run(args).await,
        Scenario::Ws(args) => ws::run(args).await,
        Scenario::Events(args) => events::run(args).await,
        Scenario::Search(args) => search::run(args).await,
        Scenario::Files(args) => files::run(args).await,
    }
}
