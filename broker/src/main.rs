//! `broker` on its own (dev stack, cluster): `cargo run -p broker`, settings from `BROKER_*`.

use clap::Parser;
use platform::service_auth::Service;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat broker: the public HTTP entry.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    broker: broker::Config,
    #[command(flatten)]
    process: platform::process::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker::allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    let process = platform::process::start(Service::Broker, &cli.process).await?;
    broker::BrokerService::build(
        cli.broker,
        &process.keys,
        &platform::grpc::Dialer::network(),
    )
    .await?
    .run(process.shutdown.clone())
    .await?;
    process.finish().await
}
