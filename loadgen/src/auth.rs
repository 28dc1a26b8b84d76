//! `loadgen auth`: what a request authenticated by the broker costs, next to the bare
//! token check it stands on.
//!
//! Phase "broker" sends `GET /api/auth/me` with a bearer token, each client on its own
//! keep-alive HTTP/1.1 connection. Phase "grpc" asks auth `VerifyToken` directly, eight
//! clients sharing each HTTP/2 channel. The broker checks tokens itself (docs/ARCHITECTURE.md),
//! so the ratio of their latencies shows what the broker adds around that check.

use crate::http::{self, Connection};
use crate::phase::{self, LoadArgs, Probe};
use crate::report::{self, PhaseFigures};
use crate::target::LoopbackUrl;
use anyhow::{Context, Result, bail, ensure};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use platform::{
    grpc::{CallInterceptor, TracedChannel, Transport},
    service_auth::{Credentials, Service, ServiceKeys},
};
use proto::auth::v1::VerifyTokenRequest;
use proto::auth::v1::auth_client::AuthClient;
use serde_json::json;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Clients sharing one gRPC channel (one HTTP/2 connection).
const CLIENTS_PER_CHANNEL: u32 = 8;
/// Longest wait for registering or logging in (password hashing is slow by design).
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a gRPC channel to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after failing to reconnect, so a server that is down is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Flags of `loadgen auth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the broker (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = LoopbackUrl::parse)]
    broker: LoopbackUrl,
    /// URL of auth's gRPC server (loopback only).
    #[arg(long = "auth-grpc", default_value = "http://127.0.0.1:50051", value_parser = LoopbackUrl::parse)]
    auth_grpc: LoopbackUrl,
    /// The server's service keys: the gRPC phase calls auth as the broker does, with the
    /// broker's key (`<data dir>/service-keys` of the all-in-one).
    #[arg(long, value_name = "DIR", default_value = "./data/service-keys")]
    service_keys: std::path::PathBuf,
    #[command(flatten)]
    load: LoadArgs,
}

/// Registers a fresh user, measures both phases and prints the comparison.
pub async fn run(args: Args) -> Result<()> {
    let load = &args.load;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    eprintln!(
        "loadgen auth: {} clients, {} warm-up + {} per phase, {cpus} CPUs available to loadgen",
        load.clients,
        humantime::format_duration(load.warmup),
        humantime::format_duration(load.duration),
    );
    let account = Account::generate();
    account.register(&args.broker).await?;
    eprintln!("registered {}", account.username);

    // A fresh token per phase, so a long run never outlives one.
    let token = account.log_in(&args.broker).await?;
    let broker = broker_phase(&args.broker, &token, load).await?;
    broker.print_summary();
    let token = account.log_in(&args.broker).await?;
    let keys = ServiceKeys::load(&args.service_keys, &[Service::Broker])?;
    let credentials = keys.identity(Service::Broker)?.calling(Service::Auth);
    let grpc = grpc_phase(&args.auth_grpc, credentials, &token, load).await?;
    grpc.print_summary();

    let p50_ratio = report::ratio(broker.p50_us, grpc.p50_us);
    if load.json {
        let figures = json!({
            "scenario": "auth",
            "cpus": cpus,
            "clients": load.clients,
            "warmup_secs": load.warmup.as_secs_f64(),
            "duration_secs": load.duration.as_secs_f64(),
            "broker": broker.to_json(),
            "grpc": grpc.to_json(),
            "p50_ratio_broker_over_grpc": p50_ratio,
        });
        println!("{figures}");
    } else {
        println!();
        report::print_table(&[&broker, &grpc]);
        println!();
        let ratio = p50_ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"));
        println!("broker p50 / gRPC p50: {ratio} ({cpus} CPUs available to loadgen)");
    }
    Ok(())
}

async fn broker_phase(broker: &LoopbackUrl, token: &str, load: &LoadArgs) -> Result<PhaseFigures> {
    eprintln!(
        "phase broker: connecting {} clients to {}",
        load.clients,
        broker.addr()
    );
    let uri = broker.uri_for("/api/auth/me")?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token is not a valid header")?;
    let probes = phase::connect_all(load.clients, |_| {
        let (target, uri, bearer) = (broker.clone(), uri.clone(), bearer.clone());
        async move {
            let connection = Connection::open(&target).await?;
            Ok(CallerLookup {
                target,
                connection: Some(connection),
                uri,
                bearer,
            })
        }
    })
    .await?;
    let tally = phase::run(probes, load.warmup, load.duration).await?;
    Ok(PhaseFigures::new(
        "broker GET /api/auth/me",
        load.clients,
        load.duration,
        tally,
    ))
}

async fn grpc_phase(
    auth: &LoopbackUrl,
    credentials: Credentials,
    token: &str,
    load: &LoadArgs,
) -> Result<PhaseFigures> {
    let channels = load.clients.div_ceil(CLIENTS_PER_CHANNEL);
    eprintln!(
        "phase grpc: connecting {} clients to {} over {channels} channels",
        load.clients,
        auth.addr()
    );
    let endpoint = Endpoint::from_shared(auth.grpc_endpoint())?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT);
    let channels: Vec<Channel> = phase::connect_all(channels, |_| {
        let endpoint = endpoint.clone();
        async move {
            endpoint
                .connect()
                .await
                .context("cannot connect to auth's gRPC server")
        }
    })
    .await?;
    let probes = (0..load.clients)
        .map(|index| TokenCheck {
            client: AuthClient::with_interceptor(
                Transport::Network(channels[(index / CLIENTS_PER_CHANNEL) as usize].clone()),
                CallInterceptor::new(credentials.clone()),
            ),
            token: token.to_owned(),
        })
        .collect();
    let tally = phase::run(probes, load.warmup, load.duration).await?;
    Ok(PhaseFigures::new(
        "auth gRPC VerifyToken",
        load.clients,
        load.duration,
        tally,
    ))
}

/// A client asking the broker who it is, on its own connection (reopened if the server closes it).
struct CallerLookup {
    target: LoopbackUrl,
    connection: Option<Connection>,
    uri: Uri,
    bearer: HeaderValue,
}

impl CallerLookup {
    async fn connection(&mut self) -> Result<&mut Connection> {
        if self.connection.as_ref().is_none_or(Connection::is_closed) {
            self.connection = None;
            match Connection::open(&self.target).await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    return Err(error);
                }
            }
        }
        Ok(self
            .connection
            .as_mut()
            .expect("the connection was just opened"))
    }

    async fn look_up(&mut self) -> Result<()> {
        let mut request = Request::new(Full::default());
        *request.uri_mut() = self.uri.clone();
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.bearer.clone());
        let response = self.connection().await?.send(request).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = http::read_body(response.into_body()).await?;
            bail!(
                "GET /api/auth/me answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        http::discard_body(response.into_body()).await
    }
}

impl Probe for CallerLookup {
    async fn call(&mut self) -> Result<()> {
        let outcome = self.look_up().await;
        if outcome.is_err() && self.connection.as_ref().is_some_and(Connection::is_closed) {
            self.connection = None;
        }
        outcome
    }
}

/// A client checking a token with auth over a shared gRPC channel.
struct TokenCheck {
    client: AuthClient<TracedChannel>,
    token: String,
}

impl Probe for TokenCheck {
    async fn call(&mut self) -> Result<()> {
        let request = VerifyTokenRequest {
            access_token: self.token.clone(),
        };
        match self.client.verify_token(request).await {
            Ok(_) => Ok(()),
            Err(status) => bail!(
                "VerifyToken answered {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

/// A throwaway account, unique to this run.
struct Account {
    username: String,
    email: String,
    password: String,
}

impl Account {
    fn generate() -> Self {
        let username = format!("load_{}", random_alphanumeric(12));
        Self {
            email: format!("{username}@example.com"),
            username,
            password: random_alphanumeric(24),
        }
    }

    async fn register(&self, broker: &LoopbackUrl) -> Result<()> {
        let body =
            json!({ "username": self.username, "email": self.email, "password": self.password });
        let (status, answer) = post_account(broker, "/api/auth/register", &body).await?;
        ensure!(
            status == StatusCode::CREATED,
            "registering {} answered {status}: {}",
            self.username,
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    }

    /// Logs in and returns the access token.
    async fn log_in(&self, broker: &LoopbackUrl) -> Result<String> {
        let body = json!({ "login": self.username, "password": self.password });
        let (status, answer) = post_account(broker, "/api/auth/login", &body).await?;
        let answer_text = || String::from_utf8_lossy(&answer).into_owned();
        ensure!(
            status == StatusCode::OK,
            "logging in answered {status}: {}",
            answer_text()
        );
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .with_context(|| format!("the login answer is not JSON: {}", answer_text()))?;
        let token = answer["token"]
            .as_str()
            .with_context(|| format!("the login answer has no token: {answer}"))?;
        Ok(token.to_owned())
    }
}

async fn post_account(
    broker: &LoopbackUrl,
    path: &str,
    body: &serde_json::Value,
) -> Result<(StatusCode, hyper::body::Bytes)> {
    let uri = broker.uri_for(path)?;
    let exchange = async { Connection::open(broker).await?.post_json(uri, body).await };
    tokio::time::timeout(ACCOUNT_TIMEOUT, exchange)
        .await
        .with_context(|| format!("POST {path} took longer than {ACCOUNT_TIMEOUT:?}"))?
        .with_context(|| format!("POST {path} failed"))
}

/// `len` random characters of `a-z0-9`: unique names and passwords, not secrets worth a CSPRNG.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the index is below the alphabet's length"
)]
fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Each `RandomState` is seeded from the OS; hashing a counter with it yields fresh bits.
    let seed = RandomState::new();
    (0..len)
        .map(|i| ALPHABET[(seed.hash_one(i) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_accounts_are_valid_and_distinct() {
        let (a, b) = (Account::generate(), Account::generate());
        assert_ne!(a.username, b.username);
        assert!((3..=32).contains(&a.username.len()));
        assert!(
            a.username
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
        );
        assert!(a.password.len() >= 16);
    }
}
