//! Settings of the mail service, each a flag and a `MAIL_*` environment variable.

use platform::settings::parse_duration;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// How mail runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "mail")]
pub struct Config {
    /// Address of mail's gRPC server.
    #[arg(
        long = "mail-listen",
        id = "mail-listen",
        value_name = "ADDR",
        env = "MAIL_LISTEN",
        default_value = "127.0.0.1:50054"
    )]
    pub listen: SocketAddr,
    /// Where mail goes: smtp://[user:pass@]host:port (plain SMTP, e.g. MailHog on
    /// 127.0.0.1:1025), or a directory for .eml files [default: <data dir>/mail].
    #[arg(
        long = "mail-smtp-url",
        id = "mail-smtp-url",
        value_name = "URL|DIR",
        env = "MAIL_SMTP_URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// The sender of every mail.
    #[arg(
        long = "mail-from",
        id = "mail-from",
        value_name = "MAILBOX",
        env = "MAIL_FROM",
        default_value = "microchat <no-reply@microchat.localhost>"
    )]
    pub from: String,
    /// Longest an SMTP conversation may take.
    #[arg(
        long = "mail-smtp-timeout",
        id = "mail-smtp-timeout",
        value_name = "DURATION",
        env = "MAIL_SMTP_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub smtp_timeout: Duration,
    /// Database of mails sent (by idempotency key, so a retry after a restart is not sent
    /// again), postgres:// or sqlite:// [default: sqlite://<data dir>/mail.db].
    #[arg(
        long = "mail-database-url",
        id = "mail-database-url",
        value_name = "URL",
        env = "MAIL_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// Where mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An SMTP server URL.
    Smtp(String),
    /// A directory of `.eml` files.
    Files(PathBuf),
}

impl Config {
    /// The database of mails sent: the configured URL, or SQLite in the data directory.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "mail.db"))
    }

    /// Where mail goes: the SMTP URL, or the directory (`<data dir>/mail` by default).
    pub fn destination(&self, data_dir: &Path) -> Destination {
        match self.smtp_url.as_deref() {
            Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                Destination::Smtp(url.to_owned())
            }
            Some(dir) => {
                Destination::Files(PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir)))
            }
            None => Destination::Files(data_dir.join("mail")),
        }
    }
}
