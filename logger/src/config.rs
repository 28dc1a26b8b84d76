//! Settings of the logger service, each a flag and a `LOGGER_*` environment variable.
//! Every id carries the `logger-` prefix: the all-in-one flattens every service's
//! settings into one command line, where ids must not collide.

use platform::settings::parse_duration;
use std::{net::SocketAddr, path::Path, time::Duration};

/// How the logger runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "logger")]
pub struct Config {
    /// Address of the logger's gRPC server.
    #[arg(
        long = "logger-listen",
        id = "logger-listen",
        value_name = "ADDR",
        env = "LOGGER_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub listen: SocketAddr,
    /// MongoDB URL (mongodb:// or mongodb+srv://); when set, entries live in MongoDB,
    /// otherwise in the SQLite database of LOGGER_DATABASE_URL.
    #[arg(
        long = "logger-mongo-url",
        id = "logger-mongo-url",
        value_name = "URL",
        env = "LOGGER_MONGO_URL",
        hide_env_values = true,
        value_parser = mongo_url
    )]
    pub mongo_url: Option<String>,
    /// MongoDB database holding the `logs` collection.
    #[arg(
        long = "logger-mongo-database",
        id = "logger-mongo-database",
        value_name = "NAME",
        env = "LOGGER_MONGO_DATABASE",
        default_value = "logs"
    )]
    pub mongo_database: String,
    /// SQLite URL, used when LOGGER_MONGO_URL is unset [default: sqlite://<data dir>/logs.db].
    #[arg(
        long = "logger-database-url",
        id = "logger-database-url",
        value_name = "URL",
        env = "LOGGER_DATABASE_URL",
        value_parser = sqlite_url
    )]
    pub database_url: Option<String>,
    /// How long entries are kept (a TTL index in MongoDB, a periodic purge in SQLite).
    #[arg(
        long = "logger-retention",
        id = "logger-retention",
        value_name = "DURATION",
        env = "LOGGER_RETENTION",
        default_value = "14d",
        value_parser = retention
    )]
    pub retention: Duration,
}

/// Where the entries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A MongoDB server.
    Mongo {
        /// Its URL.
        url: String,
        /// The database holding the `logs` collection.
        database: String,
    },
    /// A SQLite file, by its `sqlite://` URL.
    Sqlite(String),
}

impl Config {
    /// MongoDB when its URL is set, else SQLite (a file in `data_dir` by default).
    pub fn backend(&self, data_dir: &Path) -> Backend {
        match &self.mongo_url {
            Some(url) => Backend::Mongo {
                url: url.clone(),
                database: self.mongo_database.clone(),
            },
            None => Backend::Sqlite(
                self.database_url
                    .clone()
                    .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "logs.db")),
            ),
        }
    }
}

fn mongo_url(text: &str) -> Result<String, String> {
    if text.starts_with("mongodb://") || text.starts_with("mongodb+srv://") {
        Ok(text.to_owned())
    } else {
        Err("must start with mongodb:// or mongodb+srv://".to_owned())
    }
}

fn sqlite_url(text: &str) -> Result<String, String> {
    match platform::sql::backend(text) {
        Some(platform::sql::Backend::Sqlite) => Ok(text.to_owned()),
        _ => Err("must be a sqlite:// URL (for MongoDB, set LOGGER_MONGO_URL)".to_owned()),
    }
}

fn retention(text: &str) -> Result<Duration, String> {
    let retention = parse_duration(text)?;
    if retention < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        logger: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Cli::try_parse_from(std::iter::once("logger").chain(args.iter().copied()))
            .map(|cli| cli.logger)
    }

    #[test]
    fn by_default_entries_go_to_a_sqlite_file_for_14_days() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.listen.port(), 50053);
        assert_eq!(config.retention, Duration::from_secs(14 * 24 * 3600));
        assert_eq!(
            config.backend(Path::new("./data")),
            Backend::Sqlite("sqlite://./data/logs.db".to_owned())
        );
    }

    #[test]
    fn a_mongo_url_picks_mongodb() {
        let config = parse(&["--logger-mongo-url=mongodb://127.0.0.1:27017"]).expect("parses");
        assert_eq!(
            config.backend(Path::new("./data")),
            Backend::Mongo {
                url: "mongodb://127.0.0.1:27017".to_owned(),
                database: "logs".to_owned()
            }
        );
    }

    #[test]
    fn wrong_urls_and_durations_are_refused_at_start() {
        assert!(parse(&["--logger-mongo-url=postgres://h/db"]).is_err());
        assert!(parse(&["--logger-database-url=postgres://h/db"]).is_err());
        assert!(parse(&["--logger-retention=0s"]).is_err());
        assert!(parse(&["--logger-retention=soon"]).is_err());
    }
}
