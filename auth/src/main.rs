//! `auth` on its own (dev stack, cluster): `cargo run -p auth`, settings from `AUTH_*`.

use clap::Parser;
use platform::service_auth::Service;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat auth service.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    data_dir: platform::process::DataDir,
    /// Print a fresh signing key (for AUTH_SIGNING_KEY) and exit.
    #[arg(long)]
    new_signing_key: bool,
    #[command(flatten)]
    auth: auth::Config,
    #[command(flatten)]
    events: platform::events::BusConfig,
    #[command(flatten)]
    process: platform::process::Args,
    /// Without a command, auth serves; with one, it does that and exits.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Administration of accounts, on auth's database.
    #[command(subcommand)]
    Admin(auth::admin::AdminCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.new_signing_key {
        print!("{}", auth::keys::SigningKey::generate_pem());
        return Ok(());
    }
    // Alone, auth also honours the conventional DATABASE_URL.
    platform::process::honour_database_url(&mut cli.auth.database_url);
    if let Some(Command::Admin(command)) = &cli.command {
        println!(
            "{}",
            auth::admin::run(&cli.auth, &cli.data_dir.path, command).await?
        );
        return Ok(());
    }
    let process = platform::process::start(Service::Auth, &cli.process).await?;
    let mut auth = auth::AuthService::build(&cli.auth, &cli.data_dir.path, &process.keys).await?;
    if let Some(bus) = cli.events.rabbit() {
        auth = auth.publish_events_to(bus);
    }
    auth.run(process.shutdown.clone()).await?;
    process.finish().await
}
