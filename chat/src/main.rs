//! `chat` on its own (dev stack, cluster): `cargo run -p chat`, settings from `CHAT_*`.

use clap::Parser;
use platform::service_auth::Service;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat chat service.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    data_dir: platform::process::DataDir,
    #[command(flatten)]
    chat: chat::Config,
    #[command(flatten)]
    events: platform::events::BusConfig,
    #[command(flatten)]
    process: platform::process::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    // Alone, chat also honours the conventional DATABASE_URL.
    platform::process::honour_database_url(&mut cli.chat.database_url);
    let process = platform::process::start(Service::Chat, &cli.process).await?;
    let mut chat = chat::ChatService::build(&cli.chat, &cli.data_dir.path, &process.keys).await?;
    if let Some(bus) = cli.events.rabbit() {
        chat = chat.publish_events_to(bus);
    }
    // Several chat instances share one database; their live events meet in RabbitMQ.
    if let Some(url) = cli.events.amqp_url.clone() {
        chat = chat.share_live_events(url, &cli.chat);
    }
    chat.run(process.shutdown.clone()).await?;
    process.finish().await
}
