//! `broker` on its own (dev stack, cluster): `cargo run -p broker`, settings from `BROKER_*`.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat broker: the public HTTP entry.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
struct Cli {
    #[command(flatten)]
    broker: broker::Config,
    #[command(flatten)]
    telemetry: platform::telemetry::TelemetryConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker::allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    let shutdown = platform::shutdown::on_signal();
    let telemetry = cli.telemetry.start("broker", &shutdown).await?;
    broker::Broker::build(cli.broker)
        .await?
        .run(shutdown)
        .await?;
    telemetry.finish().await
}
