//! `microchat admin …`: auth's account commands (see [`auth::admin`]) on the all-in-one's
//! data directory, and the generation of service keys for a deployment.

use std::path::{Path, PathBuf};

/// The administration commands of the all-in-one binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Auth's account commands.
    #[command(flatten)]
    Accounts(auth::admin::AdminCommand),
    /// Generates a full set of service keys into DIR (keys already there are kept): each
    /// service's `<name>.key` and `<name>.pub`, for the dev stack's volume or the
    /// cluster's Secrets (deployments/README.md). The all-in-one makes its own.
    ServiceKeys {
        /// The directory to write to (created, mode 0700).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Runs `command`; returns what it did, in a sentence.
pub async fn run(
    config: &crate::Config,
    data_dir: &Path,
    command: &AdminCommand,
) -> anyhow::Result<String> {
    match command {
        AdminCommand::Accounts(command) => auth::admin::run(&config.auth, data_dir, command).await,
        AdminCommand::ServiceKeys { dir } => {
            platform::service_auth::ServiceKeys::generate_missing(dir)?;
            Ok(format!(
                "service keys of {} in {} (private keys 0600: give each service only its own)",
                platform::service_auth::Service::ALL
                    .map(platform::service_auth::Service::name)
                    .join(", "),
                dir.display()
            ))
        }
    }
}
