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
    #[command(flatten)]
    service_keys: platform::service_auth::KeysConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker::allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    let shutdown = platform::shutdown::on_signal();
    let service_keys = platform::service_auth::ServiceKeys::load(
        &cli.service_keys.dir,
        &[platform::service_auth::Service::Broker],
    )?;
    let telemetry = cli
        .telemetry
        .start(
            platform::service_auth::Service::Broker,
            &service_keys,
            &shutdown,
        )
        .await?;
    broker::BrokerService::build(cli.broker, &service_keys)
        .await?
        .run(shutdown)
        .await?;
    telemetry.finish().await
}
