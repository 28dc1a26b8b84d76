//! `frontend` on its own: `cargo run -p frontend`, settings from `FRONTEND_*`.

use clap::Parser;

/// The microchat web frontend: the pages a browser opens.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    frontend: frontend::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::telemetry::init_tracing("frontend");
    let shutdown = platform::shutdown::on_signal();
    let frontend = frontend::FrontendService::build(&cli.frontend).await?;
    println!(
        "  microchat frontend on http://{}  (broker: {})",
        frontend.local_addr(),
        cli.frontend.broker_url
    );
    frontend.run(shutdown).await
}
