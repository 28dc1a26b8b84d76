//! `listener` on its own (dev stack, cluster): `cargo run -p listener`, settings from
//! `LISTENER_*` and `AMQP_URL`. `listener parked list|replay` asks a running listener's
//! admin API about parked events, with `LISTENER_ADMIN_TOKEN` when it is set.

use anyhow::Context;
use clap::{Parser, Subcommand};
use platform::service_auth::Service;
use std::sync::Arc;

// Allocation-heavy paths (gRPC, protobuf) are faster with mimalloc (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat listener: turns domain events into mail and chat-session updates.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    data_dir: platform::process::DataDir,
    #[command(flatten)]
    listener: listener::Config,
    #[command(flatten)]
    events: platform::events::BusConfig,
    #[command(flatten)]
    process: platform::process::Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parked events of a running listener.
    Parked {
        #[command(subcommand)]
        action: ParkedAction,
        /// The running listener's admin API.
        #[arg(
            long,
            value_name = "URL",
            env = "LISTENER_ADMIN_URL",
            default_value = "http://127.0.0.1:8083"
        )]
        admin_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum ParkedAction {
    /// Print parked events as JSON lines (they stay parked).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move every parked event back to the queue.
    Replay,
}

async fn admin(
    admin_url: &str,
    token: Option<&listener::AdminToken>,
    action: ParkedAction,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = admin_url.trim_end_matches('/');
    let request = match action {
        ParkedAction::List { limit } => client
            .get(format!("{base}/admin/parked"))
            .query(&[("limit", limit)]),
        ParkedAction::Replay => client.post(format!("{base}/admin/parked/replay")),
    };
    let request = match token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("asking the listener at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading its answer")?;
    anyhow::ensure!(
        status.is_success(),
        "the listener answered {status}: {body}"
    );
    match body.get("parked").and_then(|parked| parked.as_array()) {
        Some(parked) => {
            for event in parked {
                println!("{event}");
            }
        }
        None => println!("{body}"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Command::Parked { action, admin_url }) = cli.command {
        return admin(&admin_url, cli.listener.admin_token.as_ref(), action).await;
    }
    // Alone, the listener also honours the conventional DATABASE_URL.
    platform::process::honour_database_url(&mut cli.listener.database_url);
    let process = platform::process::start(Service::Listener, &cli.process).await?;
    let url = cli
        .events
        .amqp_url
        .clone()
        .context("AMQP_URL is required: alone, the listener consumes from RabbitMQ")?;
    let source = Arc::new(listener::source::RabbitSource::new(
        url,
        cli.events.exchange.clone(),
        &cli.listener,
    ));
    listener::ListenerService::build(
        &cli.listener,
        &cli.data_dir.path,
        source,
        &process.keys,
        &platform::grpc::Dialer::network(),
    )
    .await?
    .run(process.shutdown.clone())
    .await?;
    process.finish().await
}
