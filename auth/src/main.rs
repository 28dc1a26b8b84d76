//! `auth` on its own (dev stack, cluster): `cargo run -p auth`, settings from `AUTH_*`.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat auth service.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
struct Cli {
    /// Directory for embedded state (SQLite file, generated signing key).
    #[arg(long, env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    /// Print a fresh signing key (for AUTH_SIGNING_KEY) and exit.
    #[arg(long)]
    new_signing_key: bool,
    #[command(flatten)]
    auth: auth::Config,
    #[command(flatten)]
    events: platform::events::BusConfig,
    #[command(flatten)]
    telemetry: platform::telemetry::TelemetryConfig,
    #[command(flatten)]
    service_keys: platform::service_auth::KeysConfig,
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
    cli.auth.database_url = cli
        .auth
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok());
    if let Some(Command::Admin(command)) = &cli.command {
        println!(
            "{}",
            auth::admin::run(&cli.auth, &cli.data_dir, command).await?
        );
        return Ok(());
    }
    let shutdown = platform::shutdown::on_signal();
    let service_keys = platform::service_auth::ServiceKeys::load(
        &cli.service_keys.dir,
        &[platform::service_auth::Service::Auth],
    )?;
    let telemetry = cli
        .telemetry
        .start(
            platform::service_auth::Service::Auth,
            &service_keys,
            &shutdown,
        )
        .await?;
    let mut auth = auth::AuthService::build(&cli.auth, &cli.data_dir, &service_keys).await?;
    if let Some(bus) = cli.events.rabbit() {
        auth = auth.publish_events_to(bus);
    }
    auth.run(shutdown).await?;
    telemetry.finish().await
}
