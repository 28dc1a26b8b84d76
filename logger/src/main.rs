//! `logger` on its own (dev stack, cluster): `cargo run -p logger`, settings from `LOGGER_*`.

use clap::Parser;
use platform::service_auth::Service;

// gRPC decoding and BSON building allocate a lot; mimalloc is faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat logger service.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    data_dir: platform::process::DataDir,
    #[command(flatten)]
    logger: logger::Config,
    // Its default LOGGER_URL is this service's default address: its lines come back here.
    #[command(flatten)]
    process: platform::process::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let process = platform::process::start(Service::Logger, &cli.process).await?;
    logger::LoggerService::build(&cli.logger, &cli.data_dir.path, &process.keys)
        .await?
        .run(process.shutdown.clone())
        .await?;
    process.finish().await
}
