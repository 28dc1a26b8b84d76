//! Settings of the chat service, each a flag and a `CHAT_*` environment variable.

use std::{net::SocketAddr, path::Path};

/// How chat runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "chat")]
pub struct Config {
    /// Address of chat's gRPC server.
    #[arg(
        long = "chat-listen",
        id = "chat-listen",
        value_name = "ADDR",
        env = "CHAT_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: SocketAddr,
    /// Database URL, postgres:// or sqlite:// [default: sqlite://<data dir>/chat.db].
    #[arg(
        long = "chat-database-url",
        id = "chat-database-url",
        value_name = "URL",
        env = "CHAT_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The RabbitMQ fanout exchange through which chat instances share live events
    /// (used when AMQP_URL is set).
    #[arg(
        long = "chat-live-exchange",
        id = "chat-live-exchange",
        value_name = "NAME",
        env = "CHAT_LIVE_EXCHANGE",
        default_value = crate::live::DEFAULT_EXCHANGE
    )]
    pub live_exchange: String,
}

impl Config {
    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "chat.db"))
    }
}
