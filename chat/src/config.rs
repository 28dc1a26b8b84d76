//! Settings of the chat service, each a flag and a `CHAT_*` environment variable.

use platform::settings::parse_duration;
use std::{net::SocketAddr, path::Path, time::Duration};

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
    /// Where attachments' bytes go: a directory (or `file://` URL), or `s3://bucket`
    /// with the AWS_* variables (AWS_ENDPOINT for MinIO) [default: <data dir>/attachments].
    #[arg(
        long = "chat-attachments-url",
        id = "chat-attachments-url",
        value_name = "URL",
        env = "CHAT_ATTACHMENTS_URL"
    )]
    pub attachments_url: Option<String>,
    /// The S3-compatible endpoint of an `s3://` attachments URL (MinIO:
    /// http://minio:9000; `http://` allows plain HTTP) [default: AWS's].
    #[arg(
        long = "chat-s3-endpoint",
        id = "chat-s3-endpoint",
        value_name = "URL",
        env = "CHAT_S3_ENDPOINT"
    )]
    pub s3_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(
        long = "chat-s3-region",
        id = "chat-s3-region",
        value_name = "REGION",
        env = "CHAT_S3_REGION",
        default_value = "us-east-1"
    )]
    pub s3_region: String,
    /// The S3 access key id.
    #[arg(
        long = "chat-s3-access-key-id",
        id = "chat-s3-access-key-id",
        value_name = "ID",
        env = "CHAT_S3_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key (from the environment or a secret store; never logged).
    #[arg(
        long = "chat-s3-secret-access-key",
        id = "chat-s3-secret-access-key",
        value_name = "KEY",
        env = "CHAT_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// Largest attachment, in bytes (25 MiB).
    #[arg(long = "chat-attachment-max-bytes", id = "chat-attachment-max-bytes", value_name = "BYTES", env = "CHAT_ATTACHMENT_MAX_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub attachment_max_bytes: u64,
    /// Bytes of attachments one user may keep (1 GiB).
    #[arg(long = "chat-attachment-quota-bytes", id = "chat-attachment-quota-bytes", value_name = "BYTES", env = "CHAT_ATTACHMENT_QUOTA_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub attachment_quota_bytes: u64,
    /// Most pixels (width × height) of an attached image, read from its header before any
    /// decoding.
    #[arg(
        long = "chat-attachment-max-pixels",
        id = "chat-attachment-max-pixels",
        value_name = "PIXELS",
        env = "CHAT_ATTACHMENT_MAX_PIXELS",
        default_value_t = 40_000_000
    )]
    pub attachment_max_pixels: u64,
    /// How long an upload waits for a message to carry it before it is deleted.
    #[arg(long = "chat-attachment-unclaimed-ttl", id = "chat-attachment-unclaimed-ttl", value_name = "DURATION", env = "CHAT_ATTACHMENT_UNCLAIMED_TTL", default_value = "1h", value_parser = parse_duration)]
    pub attachment_unclaimed_ttl: Duration,
    /// How often the orphan sweep lists the object store for objects without rows.
    #[arg(long = "chat-attachment-sweep-interval", id = "chat-attachment-sweep-interval", value_name = "DURATION", env = "CHAT_ATTACHMENT_SWEEP_INTERVAL", default_value = "24h", value_parser = parse_duration)]
    pub attachment_sweep_interval: Duration,
    /// Thumbnails made at once (each decodes one image) [default: the cores].
    #[arg(
        long = "chat-thumbnail-workers",
        id = "chat-thumbnail-workers",
        value_name = "N",
        env = "CHAT_THUMBNAIL_WORKERS"
    )]
    pub thumbnail_workers: Option<usize>,
}

impl Config {
    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::settings::sqlite_url(data_dir, "chat.db"))
    }

    /// Where attachments' bytes go, defaulting to a directory in `data_dir`.
    pub fn attachments_url(&self, data_dir: &Path) -> String {
        self.attachments_url
            .clone()
            .unwrap_or_else(|| data_dir.join("attachments").to_string_lossy().into_owned())
    }

    /// The attachments' object store: the URL's, with the S3 settings for `s3://`.
    pub fn attachment_objects(
        &self,
        data_dir: &Path,
    ) -> anyhow::Result<crate::attachments::Objects> {
        let url = self.attachments_url(data_dir);
        if !url.starts_with("s3://") {
            return crate::attachments::Objects::from_url(&url);
        }
        let mut options = vec![format!("region={}", self.s3_region)];
        if let Some(endpoint) = &self.s3_endpoint {
            options.push(format!("endpoint={endpoint}"));
            if endpoint.starts_with("http://") {
                options.push("allow_http=true".to_owned());
            }
        }
        let url = format!("{url}?{}", options.join("&"));
        match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(id), Some(secret)) => {
                crate::attachments::Objects::from_url_with_keys(&url, id, secret)
            }
            (None, None) => crate::attachments::Objects::from_url(&url),
            _ => anyhow::bail!(
                "CHAT_S3_ACCESS_KEY_ID and CHAT_S3_SECRET_ACCESS_KEY come together, or neither"
            ),
        }
    }

    /// The limits of attachments.
    pub fn attachment_limits(&self) -> crate::attachments::Limits {
        crate::attachments::Limits {
            max_bytes: self.attachment_max_bytes,
            quota: self.attachment_quota_bytes,
            max_pixels: self.attachment_max_pixels,
            unclaimed_ttl: self.attachment_unclaimed_ttl,
        }
    }
}
