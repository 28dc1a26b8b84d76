//! Settings of the broker, each a flag and a `BROKER_*` environment variable.

use crate::rate_limit::RateSpec;
use platform::settings::parse_duration;
use std::{net::SocketAddr, time::Duration};

/// How the broker runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "broker")]
pub struct Config {
    /// Address of the public HTTP server (REST, WebSocket, ops).
    #[arg(
        long = "broker-listen",
        id = "broker-listen",
        value_name = "ADDR",
        env = "BROKER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// gRPC URL of the auth service.
    #[arg(
        long = "broker-auth-url",
        id = "broker-auth-url",
        value_name = "URL",
        env = "BROKER_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: String,
    /// gRPC URL of the chat service.
    #[arg(
        long = "broker-chat-url",
        id = "broker-chat-url",
        value_name = "URL",
        env = "BROKER_CHAT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub chat_url: String,
    /// gRPC URL of the logger service (`GET /api/logs`, the `/handle` log action).
    #[arg(
        long = "broker-logger-url",
        id = "broker-logger-url",
        value_name = "URL",
        env = "BROKER_LOGGER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub logger_url: String,
    /// gRPC URL of the mail service (the admins' `/handle` mail action).
    #[arg(
        long = "broker-mail-url",
        id = "broker-mail-url",
        value_name = "URL",
        env = "BROKER_MAIL_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub mail_url: String,
    /// This instance's name among brokers (for presence bookkeeping) [default: random per start].
    #[arg(
        long = "broker-id",
        id = "broker-id",
        value_name = "NAME",
        env = "BROKER_ID"
    )]
    pub broker_id: Option<String>,
    /// Origins allowed to call the API from a browser (CORS) and to send cookie-authenticated writes, comma-separated.
    #[arg(
        long = "broker-allowed-origins",
        id = "broker-allowed-origins",
        value_name = "ORIGINS",
        env = "BROKER_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:8081,http://127.0.0.1:8081"
    )]
    pub allowed_origins: Vec<String>,
    /// Mark session cookies Secure (serve over HTTPS).
    #[arg(
        long = "broker-cookie-secure",
        id = "broker-cookie-secure",
        env = "BROKER_COOKIE_SECURE",
        default_value_t = false
    )]
    pub cookie_secure: bool,
    /// Trust the first address of X-Forwarded-For as the client (behind a proxy you run).
    #[arg(
        long = "broker-trust-forwarded-for",
        id = "broker-trust-forwarded-for",
        env = "BROKER_TRUST_FORWARDED_FOR",
        default_value_t = false
    )]
    pub trust_forwarded_for: bool,
    /// Longest a request may take before it is answered 503.
    #[arg(long = "broker-request-timeout", id = "broker-request-timeout", value_name = "DURATION", env = "BROKER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Attachment uploads streaming through this broker at once (each user at most four
    /// of them); more wait their turn with their bodies unread (TCP holds them back), so
    /// the broker's memory for uploads stays bounded whatever arrives (about 2 MiB an
    /// upload in flight; docs/PERFORMANCE.md, "Attachments").
    #[arg(
        long = "broker-uploads-at-once",
        id = "broker-uploads-at-once",
        value_name = "N",
        env = "BROKER_UPLOADS_AT_ONCE",
        default_value_t = 16
    )]
    pub uploads_at_once: usize,
    /// Longest an upload or download of an attachment may take (its bytes stream in or
    /// out for that long at most; the request's own deadline covers everything else).
    #[arg(long = "broker-transfer-timeout", id = "broker-transfer-timeout", value_name = "DURATION", env = "BROKER_TRANSFER_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub transfer_timeout: Duration,
    /// Longest a message sent through this broker is expected to wait for chat (queued
    /// and being stored) before new sends are refused as `overloaded` (WebSocket error
    /// frame, REST 503) instead of queued; 0s never refuses.
    #[arg(long = "broker-send-queue-target", id = "broker-send-queue-target", value_name = "DURATION", env = "BROKER_SEND_QUEUE_TARGET", default_value = "100ms", value_parser = parse_duration)]
    pub send_queue_target: Duration,
    /// Longest a sign-in (registration, login, token refresh) is expected to wait for
    /// auth before new ones are refused as `overloaded` (503 with `Retry-After`) instead
    /// of queued until they time out; 0s never refuses.
    #[arg(long = "broker-sign-in-queue-target", id = "broker-sign-in-queue-target", value_name = "DURATION", env = "BROKER_SIGN_IN_QUEUE_TARGET", default_value = "1s", value_parser = parse_duration)]
    pub sign_in_queue_target: Duration,
    /// Deadline of each gRPC call to a service.
    #[arg(long = "broker-grpc-timeout", id = "broker-grpc-timeout", value_name = "DURATION", env = "BROKER_GRPC_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub grpc_timeout: Duration,
    /// Largest request body, in bytes.
    #[arg(long = "broker-max-body-bytes", id = "broker-max-body-bytes", value_name = "BYTES", env = "BROKER_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Rate limit per client for logging in (every login path together: the REST login and
    /// `/handle`'s `auth` action), and for register and refresh each: N/period (e.g. 10/min) or off.
    #[arg(
        long = "broker-rate-limit-auth",
        id = "broker-rate-limit-auth",
        value_name = "RATE",
        env = "BROKER_RATE_LIMIT_AUTH",
        default_value = "10/min"
    )]
    pub rate_limit_auth: RateSpec,
    /// Rate limit per client and route for every other API route: N/period or off.
    #[arg(
        long = "broker-rate-limit-api",
        id = "broker-rate-limit-api",
        value_name = "RATE",
        env = "BROKER_RATE_LIMIT_API",
        default_value = "50/s"
    )]
    pub rate_limit_api: RateSpec,
    /// Largest WebSocket message a client may send, in bytes.
    #[arg(long = "broker-ws-max-message-bytes", id = "broker-ws-max-message-bytes", value_name = "BYTES", env = "BROKER_WS_MAX_MESSAGE_BYTES", default_value_t = 32 * 1024)]
    pub ws_max_message_bytes: usize,
    /// Frames per second one socket may send (also the burst).
    #[arg(
        long = "broker-ws-frames-per-second",
        id = "broker-ws-frames-per-second",
        value_name = "N",
        env = "BROKER_WS_FRAMES_PER_SECOND",
        default_value = "20"
    )]
    pub ws_frames_per_second: std::num::NonZeroU32,
    /// Open WebSockets one user may hold on this broker; the next is closed with 4029.
    #[arg(
        long = "broker-ws-max-sockets-per-user",
        id = "broker-ws-max-sockets-per-user",
        value_name = "N",
        env = "BROKER_WS_MAX_SOCKETS_PER_USER",
        default_value_t = 20
    )]
    pub ws_max_sockets_per_user: usize,
    /// Close a socket that sent nothing (not even a pong) for this long.
    #[arg(long = "broker-ws-idle-timeout", id = "broker-ws-idle-timeout", value_name = "DURATION", env = "BROKER_WS_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub ws_idle_timeout: Duration,
    /// Ping each socket this often.
    #[arg(long = "broker-ws-ping-interval", id = "broker-ws-ping-interval", value_name = "DURATION", env = "BROKER_WS_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,
    /// How often to finish account deletions that a failure interrupted.
    #[arg(long = "broker-deletion-sweep", id = "broker-deletion-sweep", value_name = "DURATION", env = "BROKER_DELETION_SWEEP", default_value = "30s", value_parser = parse_duration)]
    pub deletion_sweep: Duration,
}
