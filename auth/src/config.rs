//! Settings of the auth service, each a flag and an `AUTH_*` environment variable.

use platform::settings::parse_duration;
use std::{net::SocketAddr, path::Path, time::Duration};

/// How auth runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "auth")]
pub struct Config {
    /// Address of auth's gRPC server.
    #[arg(
        long = "auth-listen",
        id = "auth-listen",
        value_name = "ADDR",
        env = "AUTH_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// Database URL, postgres:// or sqlite:// [default: sqlite://<data dir>/auth.db].
    #[arg(
        long = "auth-database-url",
        id = "auth-database-url",
        value_name = "URL",
        env = "AUTH_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Token signing key (Ed25519 PKCS#8 PEM) [default: <data dir>/auth-signing-key.pem, created on first start].
    #[arg(
        long = "auth-signing-key",
        id = "auth-signing-key",
        value_name = "PEM",
        env = "AUTH_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<String>,
    /// Lifetime of an access token.
    #[arg(long = "auth-access-token-ttl", id = "auth-access-token-ttl", value_name = "DURATION", env = "AUTH_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// Lifetime of a session that is not refreshed.
    #[arg(long = "auth-session-ttl", id = "auth-session-ttl", value_name = "DURATION", env = "AUTH_SESSION_TTL", default_value = "30days", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// How long after a refresh the refresh token it replaced is merely refused (two tabs
    /// refreshing at once); presented later, it ends the session (someone else holds its tokens).
    #[arg(long = "auth-refresh-reuse-grace", id = "auth-refresh-reuse-grace", value_name = "DURATION", env = "AUTH_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub refresh_reuse_grace: Duration,
    /// Failed logins one client address may make at one account before each next attempt
    /// from it waits (1 min, doubling, up to 15 min).
    #[arg(
        long = "auth-max-failures-per-source",
        id = "auth-max-failures-per-source",
        value_name = "N",
        env = "AUTH_MAX_FAILURES_PER_SOURCE",
        default_value_t = 5
    )]
    pub max_failures_per_source: u32,
    /// Failed logins at one account from every address before attempts from addresses it
    /// has not logged in from wait (5 s, doubling, up to 1 min); known addresses go ahead.
    #[arg(
        long = "auth-max-failures-per-account",
        id = "auth-max-failures-per-account",
        value_name = "N",
        env = "AUTH_MAX_FAILURES_PER_ACCOUNT",
        default_value_t = 20
    )]
    pub max_failures_per_account: u32,
    /// Failed logins allowed per client address at every account within the failure window.
    #[arg(
        long = "auth-max-failures-per-ip",
        id = "auth-max-failures-per-ip",
        value_name = "N",
        env = "AUTH_MAX_FAILURES_PER_IP",
        default_value_t = 50
    )]
    pub max_failures_per_ip: u32,
    /// The failed-login window: an address's failures count for this long; an account's
    /// counts are forgotten this long after their wait ended.
    #[arg(long = "auth-failure-window", id = "auth-failure-window", value_name = "DURATION", env = "AUTH_FAILURE_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub failure_window: Duration,
    /// argon2id memory cost of new password hashes, in KiB (OWASP: 19456).
    #[arg(long = "auth-argon2-memory-kib", id = "auth-argon2-memory-kib", value_name = "KIB", env = "AUTH_ARGON2_MEMORY_KIB", default_value_t = crate::password::DEFAULT_MEMORY_KIB)]
    pub argon2_memory_kib: u32,
    /// argon2id passes of new password hashes (OWASP: 2).
    #[arg(long = "auth-argon2-iterations", id = "auth-argon2-iterations", value_name = "N", env = "AUTH_ARGON2_ITERATIONS", default_value_t = crate::password::DEFAULT_ITERATIONS)]
    pub argon2_iterations: u32,
    /// How long a mailed password-reset link works.
    #[arg(long = "auth-reset-link-ttl", id = "auth-reset-link-ttl", value_name = "DURATION", env = "AUTH_RESET_LINK_TTL", default_value = "30m", value_parser = parse_duration)]
    pub reset_link_ttl: Duration,
    /// How long a mailed email-verification link works.
    #[arg(long = "auth-verify-link-ttl", id = "auth-verify-link-ttl", value_name = "DURATION", env = "AUTH_VERIFY_LINK_TTL", default_value = "2days", value_parser = parse_duration)]
    pub verify_link_ttl: Duration,
}

impl Config {
    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "auth.db"))
    }
}
