//! Who is asking, as the broker knows them: the frontend holds no sessions of its own, so
//! a page only for administrators (the dev mailbox) forwards the caller's credentials —
//! the session cookie or a bearer token, nothing else — to the broker's `GET /api/auth/me`
//! and reads `is_admin` from the answer.

use axum::http::{HeaderMap, StatusCode, header};
use std::time::Duration;

/// Longest wait for the broker's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the broker says of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Signed in, an administrator.
    Admin,
    /// Signed in, not an administrator.
    Member,
    /// Not signed in (no credentials, or ended ones).
    SignedOut,
    /// The broker did not answer.
    Unknown,
}

/// Asks the broker at `api` about the caller whose request carried `headers`.
#[derive(Debug, Clone)]
pub struct Broker {
    http: reqwest::Client,
    me_url: String,
}

#[derive(serde::Deserialize)]
struct Me {
    is_admin: bool,
}

impl Broker {
    /// A client of the broker at `url` (`http[s]://host[:port]`).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            me_url: format!("{}/api/auth/me", url.trim_end_matches('/')),
        })
    }

    /// Who the caller is.
    pub async fn caller(&self, headers: &HeaderMap) -> Caller {
        let mut request = self.http.get(&self.me_url);
        let mut credentials = false;
        for name in [header::COOKIE, header::AUTHORIZATION] {
            for value in headers.get_all(&name) {
                request = request.header(name.clone(), value.clone());
                credentials = true;
            }
        }
        if !credentials {
            return Caller::SignedOut;
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "cannot ask the broker who the caller is");
                return Caller::Unknown;
            }
        };
        match response.status() {
            StatusCode::OK => match response.json::<Me>().await {
                Ok(Me { is_admin: true }) => Caller::Admin,
                Ok(Me { is_admin: false }) => Caller::Member,
                Err(error) => {
                    tracing::warn!(%error, "the broker's /api/auth/me answer is not understood");
                    Caller::Unknown
                }
            },
            StatusCode::UNAUTHORIZED => Caller::SignedOut,
            status => {
                tracing::warn!(%status, "the broker's /api/auth/me failed");
                Caller::Unknown
            }
        }
    }
}
