//! `chat` on its own (dev stack, cluster): `cargo run -p chat`, settings from `CHAT_*`.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat chat service.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
struct Cli {
    /// Directory for embedded state (the SQLite file).
    #[arg(long, value_name = "DIR", env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    chat: chat::Config,
    #[command(flatten)]
    events: platform::events::BusConfig,
    #[command(flatten)]
    telemetry: platform::telemetry::TelemetryConfig,
    #[command(flatten)]
    service_keys: platform::service_auth::KeysConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let shutdown = platform::shutdown::on_signal();
    let service_keys = platform::service_auth::ServiceKeys::load(
        &cli.service_keys.dir,
        &[platform::service_auth::Service::Chat],
    )?;
    let telemetry = cli
        .telemetry
        .start(
            platform::service_auth::Service::Chat,
            &service_keys,
            &shutdown,
        )
        .await?;
    // Alone, chat also honours the conventional DATABASE_URL.
    cli.chat.database_url = cli
        .chat
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok());
    let mut chat = chat::ChatService::build(&cli.chat, &cli.data_dir, &service_keys).await?;
    if let Some(bus) = cli.events.rabbit() {
        chat = chat.publish_events_to(bus);
    }
    // Several chat instances share one database; their live events meet in RabbitMQ.
    if let Some(url) = cli.events.amqp_url.clone() {
        chat = chat.share_live_events(url, &cli.chat);
    }
    chat.run(shutdown).await?;
    telemetry.finish().await
}
