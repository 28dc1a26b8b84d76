//! `logger` on its own (dev stack, cluster): `cargo run -p logger`, settings from `LOGGER_*`.

use clap::Parser;

// gRPC decoding and BSON building allocate a lot; mimalloc is faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat logger service.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
struct Cli {
    /// Directory for embedded state (the SQLite file when LOGGER_MONGO_URL is unset).
    #[arg(long, value_name = "DIR", env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    logger: logger::Config,
    // Its default LOGGER_URL is this service's default address: its lines come back here.
    #[command(flatten)]
    telemetry: platform::telemetry::TelemetryConfig,
    #[command(flatten)]
    service_keys: platform::service_auth::KeysConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = platform::shutdown::on_signal();
    let service_keys = platform::service_auth::ServiceKeys::load(
        &cli.service_keys.dir,
        &[platform::service_auth::Service::Logger],
    )?;
    let telemetry = cli
        .telemetry
        .start(
            platform::service_auth::Service::Logger,
            &service_keys,
            &shutdown,
        )
        .await?;
    logger::LoggerService::build(&cli.logger, &cli.data_dir, &service_keys)
        .await?
        .run(shutdown)
        .await?;
    telemetry.finish().await
}
