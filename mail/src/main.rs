//! `mail` on its own (dev stack, cluster): `cargo run -p mail`, settings from `MAIL_*`.

use clap::Parser;

// gRPC and message building allocate a lot; mimalloc is faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat mail service.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
struct Cli {
    /// Directory for embedded state (mail files when MAIL_SMTP_URL is unset).
    #[arg(long, value_name = "DIR", env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    data_dir: std::path::PathBuf,
    #[command(flatten)]
    mail: mail::Config,
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
        &[platform::service_auth::Service::Mail],
    )?;
    let telemetry = cli
        .telemetry
        .start(
            platform::service_auth::Service::Mail,
            &service_keys,
            &shutdown,
        )
        .await?;
    // Alone, mail also honours the conventional DATABASE_URL.
    cli.mail.database_url = cli
        .mail
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok());
    mail::MailService::build(&cli.mail, &cli.data_dir, &service_keys)
        .await?
        .run(shutdown)
        .await?;
    telemetry.finish().await
}
