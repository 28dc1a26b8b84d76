//! `mail` on its own (dev stack, cluster): `cargo run -p mail`, settings from `MAIL_*`.

use clap::Parser;
use platform::service_auth::Service;

// gRPC and message building allocate a lot; mimalloc is faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The microchat mail service.
#[derive(Debug, Parser)]
#[command(version, about, after_help = platform::process::LOGGING_HELP)]
struct Cli {
    #[command(flatten)]
    data_dir: platform::process::DataDir,
    #[command(flatten)]
    mail: mail::Config,
    #[command(flatten)]
    process: platform::process::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    // Alone, mail also honours the conventional DATABASE_URL.
    platform::process::honour_database_url(&mut cli.mail.database_url);
    let process = platform::process::start(Service::Mail, &cli.process).await?;
    mail::MailService::build(&cli.mail, &cli.data_dir.path, &process.keys)
        .await?
        .run(process.shutdown.clone())
        .await?;
    process.finish().await
}
