//! Settings of the frontend, each a flag and a `FRONTEND_*` environment variable.

use std::{net::SocketAddr, path::PathBuf};

/// How the frontend runs.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "frontend")]
pub struct Config {
    /// Address of the frontend's HTTP server (the pages a browser opens).
    #[arg(
        long = "frontend-listen",
        id = "frontend-listen",
        value_name = "ADDR",
        env = "FRONTEND_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// The broker's public URL as the browser reaches it (http[s]://host[:port]); the
    /// pages call its API and WebSocket. Open the pages on the same host name (both
    /// 127.0.0.1, or both localhost) so the session cookie travels.
    #[arg(
        long = "frontend-broker-url",
        id = "frontend-broker-url",
        value_name = "URL",
        env = "FRONTEND_BROKER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub broker_url: String,
    /// The broker's URL as this server reaches it: the dev mailbox asks it who the caller
    /// is (`GET /api/auth/me`) [default: the broker URL].
    #[arg(
        long = "frontend-broker-api-url",
        id = "frontend-broker-api-url",
        value_name = "URL",
        env = "FRONTEND_BROKER_API_URL"
    )]
    pub broker_api_url: Option<String>,
    /// The dev mailbox, for administrators only: a directory of `.eml` files (the
    /// all-in-one in development mode, `MICROCHAT_DEV=1`, writes them to
    /// `<data dir>/mail`), listed at /dev/mailbox [default: none, the page answers 404].
    #[arg(
        long = "frontend-mail-dir",
        id = "frontend-mail-dir",
        value_name = "DIR",
        env = "FRONTEND_MAIL_DIR"
    )]
    pub mail_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            broker_url: "http://127.0.0.1:8080".to_owned(),
            broker_api_url: None,
            mail_dir: None,
        }
    }
}

/// The broker's origin, checked: safe to put into HTML attributes and the CSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOrigin {
    /// `http[s]://host[:port]`, without a trailing slash.
    pub http: String,
    /// The same origin with `ws[s]://`, for the WebSocket.
    pub ws: String,
}

impl BrokerOrigin {
    /// Checks a broker URL: `http://` or `https://`, then a host (name, IPv4 or bracketed
    /// IPv6) and an optional port; nothing else but an optional trailing `/`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        let url = url.strip_suffix('/').unwrap_or(url);
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            anyhow::bail!("FRONTEND_BROKER_URL must start with http:// or https://, got {url:?}");
        };
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
        if rest.is_empty() || !rest.chars().all(allowed) {
            anyhow::bail!(
                "FRONTEND_BROKER_URL must be an origin, http[s]://host[:port] (no path), got {url:?}"
            );
        }
        let ws = if secure { "wss" } else { "ws" };
        Ok(Self {
            http: url.to_owned(),
            ws: format!("{ws}://{rest}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_origins() {
        let origin = BrokerOrigin::parse("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(origin.http, "http://127.0.0.1:8080");
        assert_eq!(origin.ws, "ws://127.0.0.1:8080");
        let origin = BrokerOrigin::parse("https://chat.example.com").expect("valid");
        assert_eq!(origin.ws, "wss://chat.example.com");
        assert!(BrokerOrigin::parse("https://[::1]:8443").is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a\"><script>",
            "http://a b",
            "127.0.0.1:8080",
            "http://a;script-src *",
        ] {
            assert!(BrokerOrigin::parse(bad).is_err(), "{bad}");
        }
    }
}
