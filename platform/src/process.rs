//! How a service binary starts and stops: the flags every one of them shares and the
//! start-up they all go through (shutdown signal, service keys, telemetry), so that each
//! `main.rs` only says what its service builds.
//!
//! Start-up order matters: telemetry runs before the service is built, so the service's
//! own start-up is logged and shipped; it is flushed after the service has stopped.

use crate::{
    service_auth::{KeysConfig, Service, ServiceKeys},
    shutdown::Shutdown,
    telemetry::{Telemetry, TelemetryConfig},
};
use std::path::PathBuf;

/// The `--help` epilogue of every service binary: how to tune logging.
pub const LOGGING_HELP: &str = "Logging: RUST_LOG (default info), LOG_FORMAT=json.";

/// Where a service keeps its embedded state: `--data-dir`, `MICROCHAT_DATA_DIR`.
///
/// Apart from [`Args`] because it leads a binary's options while those end them.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// Directory for embedded state (SQLite files, keys, mail files).
    #[arg(long = "data-dir", value_name = "DIR", env = "MICROCHAT_DATA_DIR")]
    #[arg(default_value = crate::settings::DEFAULT_DATA_DIR)]
    pub path: PathBuf,
}

/// The flags every service binary ends its options with: its telemetry and its service keys.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where log lines and metrics go.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Where the service keys are.
    #[command(flatten)]
    pub service_keys: KeysConfig,
}

/// A started service process: what its service is built with, until [`Process::finish`].
pub struct Process {
    /// Cancelled on Ctrl-C or SIGTERM: the service stops on it.
    pub shutdown: Shutdown,
    /// The service keys, with this service's private key.
    pub keys: ServiceKeys,
    telemetry: Telemetry,
}

/// Starts `service`'s process: listens for the shutdown signal, loads the service keys
/// (this service's private key must be there) and starts telemetry, in that order.
///
/// # Errors
/// When the keys cannot be loaded or telemetry cannot start.
pub async fn start(service: Service, args: &Args) -> anyhow::Result<Process> {
    let shutdown = crate::shutdown::on_signal();
    let keys = ServiceKeys::load(&args.service_keys.dir, &[service])?;
    let telemetry = args.telemetry.start(service, &keys, &shutdown).await?;
    Ok(Process {
        shutdown,
        keys,
        telemetry,
    })
}

impl Process {
    /// Flushes the log lines still to ship and waits for the metrics server to stop; call
    /// it once the service has stopped.
    ///
    /// # Errors
    /// When the metrics server failed.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.telemetry.finish().await
    }
}

/// Fills an unset database URL from the conventional `DATABASE_URL`: a service running
/// alone honours it.
pub fn honour_database_url(database_url: &mut Option<String>) {
    if database_url.is_none() {
        *database_url = std::env::var("DATABASE_URL").ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A binary's command line as the services lay it out.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        data_dir: DataDir,
        #[command(flatten)]
        process: Args,
    }

    #[test]
    fn shared_flags_keep_their_names() {
        let cli = Cli::parse_from([
            "service",
            "--data-dir",
            "/srv/state",
            "--service-keys",
            "/srv/keys",
            "--logger-url",
            "off",
        ]);
        assert_eq!(cli.data_dir.path, PathBuf::from("/srv/state"));
        assert_eq!(cli.process.service_keys.dir, PathBuf::from("/srv/keys"));
        assert_eq!(cli.process.telemetry.logger_url, "off");
    }
}
