//! Settings of the listener, each a flag and a `LISTENER_*` environment variable.

use crate::AdminToken;
use platform::settings::parse_duration;
use std::{net::SocketAddr, path::Path, time::Duration};

/// How the listener runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "listener")]
pub struct Config {
    /// Address of the HTTP server for /healthz, /readyz and /metrics (keep it private).
    #[arg(
        long = "listener-listen",
        id = "listener-listen",
        value_name = "ADDR",
        env = "LISTENER_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,
    /// Address of the parked-event admin API; anything but loopback needs
    /// LISTENER_ADMIN_TOKEN.
    #[arg(
        long = "listener-admin-listen",
        id = "listener-admin-listen",
        value_name = "ADDR",
        env = "LISTENER_ADMIN_LISTEN",
        default_value = "127.0.0.1:8083"
    )]
    pub admin_listen: SocketAddr,
    /// Bearer token the admin API requires (16 or more visible ASCII characters); without
    /// it, the admin API is open to whoever reaches its address.
    #[arg(
        long = "listener-admin-token",
        id = "listener-admin-token",
        value_name = "TOKEN",
        env = "LISTENER_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<AdminToken>,
    /// Database of processed event ids, postgres:// or sqlite://
    /// [default: sqlite://<data dir>/listener.db].
    #[arg(
        long = "listener-database-url",
        id = "listener-database-url",
        value_name = "URL",
        env = "LISTENER_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The chat service (chat sessions).
    #[arg(
        long = "listener-chat-url",
        id = "listener-chat-url",
        value_name = "URL",
        env = "LISTENER_CHAT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub chat_url: String,
    /// The mail service.
    #[arg(
        long = "listener-mail-url",
        id = "listener-mail-url",
        value_name = "URL",
        env = "LISTENER_MAIL_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub mail_url: String,
    /// The logger service, which stores one audit entry per event.
    #[arg(
        long = "listener-logger-url",
        id = "listener-logger-url",
        value_name = "URL",
        env = "LISTENER_LOGGER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub logger_url: String,
    /// The durable queue the listener consumes (its retry and parking queues are named
    /// after it).
    #[arg(
        long = "listener-queue",
        id = "listener-queue",
        value_name = "NAME",
        env = "LISTENER_QUEUE",
        default_value = "listener.events"
    )]
    pub queue: String,
    /// Events handled at once; also the RabbitMQ prefetch limit, which counts messages
    /// (a batch message holds up to 128 events, handed out as earlier ones finish). What
    /// the listener can handle a second is at most this many over one event's latency
    /// (Little's law): 64 with 45 ms events on a busy core kept it to 1,400 events a
    /// second while chat produced 5,000 (docs/PERFORMANCE.md); 256 keeps up.
    #[arg(
        long = "listener-prefetch",
        id = "listener-prefetch",
        value_name = "N",
        env = "LISTENER_PREFETCH",
        default_value_t = 256,
        value_parser = clap::value_parser!(u16).range(1..=1000)
    )]
    pub prefetch: u16,
    /// Attempts per event before it is parked.
    #[arg(
        long = "listener-max-attempts",
        id = "listener-max-attempts",
        value_name = "N",
        env = "LISTENER_MAX_ATTEMPTS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=20)
    )]
    pub max_attempts: u32,
    /// Wait before the first retry; each further retry waits twice as long (at most 5
    /// minutes).
    #[arg(
        long = "listener-retry-base",
        id = "listener-retry-base",
        value_name = "DURATION",
        env = "LISTENER_RETRY_BASE",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub retry_base: Duration,
    /// How long processed event ids are remembered (redeliveries older than this would
    /// be handled again).
    #[arg(
        long = "listener-dedup-retention",
        id = "listener-dedup-retention",
        value_name = "DURATION",
        env = "LISTENER_DEDUP_RETENTION",
        default_value = "7d",
        value_parser = parse_duration
    )]
    pub dedup_retention: Duration,
    /// The web pages' public URL (http[s]://host[:port][/path]), for the links in mails:
    /// verify an address, reset a password, change it [default: http://127.0.0.1:8081;
    /// the all-in-one uses its own pages' address].
    #[arg(
        long = "listener-pages-url",
        id = "listener-pages-url",
        value_name = "URL",
        env = "LISTENER_PAGES_URL"
    )]
    pub pages_url: Option<String>,
    /// Auth's gRPC URL (the addresses of users a mention digest mails).
    #[arg(
        long = "listener-auth-url",
        id = "listener-auth-url",
        value_name = "URL",
        env = "LISTENER_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// The period of mention digests: an offline user's first @mention starts one, mailed
    /// this long after with the mentions still unread (one mail per user per period).
    #[arg(
        long = "listener-mention-digest-period",
        id = "listener-mention-digest-period",
        value_name = "DURATION",
        env = "LISTENER_MENTION_DIGEST_PERIOD",
        default_value = "15m",
        value_parser = parse_duration
    )]
    pub mention_digest_period: Duration,
}

/// Longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Where the pages are when `LISTENER_PAGES_URL` is not set: the frontend's default.
pub const DEFAULT_PAGES_URL: &str = "http://127.0.0.1:8081";

impl Config {
    /// The pages' URL mail links start with, without a trailing slash.
    pub fn pages_url(&self) -> String {
        self.pages_url
            .as_deref()
            .unwrap_or(DEFAULT_PAGES_URL)
            .trim()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "listener.db"))
    }

    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_base
            .checked_mul(factor)
            .unwrap_or(MAX_RETRY_DELAY)
            .min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn config(args: &[&str]) -> Config {
        Cli::parse_from(std::iter::once("listener").chain(args.iter().copied())).config
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let config = config(&["--listener-retry-base=500ms"]);
        let delays: Vec<u128> = (1..=4).map(|n| config.retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000]);
        assert_eq!(config.retry_delay(20), MAX_RETRY_DELAY);
        assert_eq!(config.retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn limits_are_checked_when_parsed() {
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("listener").chain(args.iter().copied()))
        };
        assert!(cli(&["--listener-prefetch=0"]).is_err());
        assert!(cli(&["--listener-max-attempts=0"]).is_err());
        assert!(cli(&["--listener-retry-base=soon"]).is_err());
        assert!(cli(&["--listener-prefetch=1000", "--listener-max-attempts=20"]).is_ok());
        assert!(cli(&["--listener-admin-token=short"]).is_err());
    }

    #[test]
    fn the_admin_token_is_neither_printed_nor_shown_in_help() {
        let secret = "0123456789abcdef-secret";
        let config = config(&[&format!("--listener-admin-token={secret}")]);
        assert_eq!(
            config.admin_token.as_ref().map(AdminToken::expose),
            Some(secret)
        );
        assert!(!format!("{config:?}").contains(secret));
        let command = Cli::command();
        let setting = command
            .get_arguments()
            .find(|arg| arg.get_id() == "listener-admin-token")
            .expect("the setting exists");
        assert!(setting.is_hide_env_values_set());
    }
}
