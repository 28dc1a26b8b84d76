//! The microchat web frontend: server-rendered page shells, CSS and ES-module JavaScript
//! (all compiled into the binary) that talk to the broker's REST API and WebSocket
//! straight from the browser with the session cookie; plus the dev mailbox, which lists
//! the `.eml` files the mail service writes in the embedded run, to administrators only
//! (the broker says who is one: [`caller`]).
//!
//! [`FrontendService::build`] checks the settings and binds the port;
//! [`FrontendService::run`] serves until shutdown.

mod assets;
pub mod caller;
mod config;
pub mod mailbox;
mod pages;

pub use config::{BrokerOrigin, Config};

use anyhow::Context;
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use platform::shutdown::Shutdown;
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::net::TcpListener;

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    site: pages::Site,
    mail_dir: Option<PathBuf>,
    /// Who may read the mailbox.
    broker: caller::Broker,
    csp: HeaderValue,
}

type Shared = State<Arc<AppState>>;

/// A built frontend, bound to its port, not yet serving.
pub struct FrontendService {
    socket: TcpListener,
    router: Router,
}

impl FrontendService {
    /// Checks the settings and binds the port.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let socket = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the frontend to {}", config.listen))?;
        Self::build_on(config, socket)
    }

    /// Checks the settings and serves on `socket`, bound earlier (the all-in-one binds
    /// it first, so the links in mails can name the pages' address).
    pub fn build_on(config: &Config, socket: TcpListener) -> anyhow::Result<Self> {
        let broker = BrokerOrigin::parse(&config.broker_url)?;
        let broker_http = broker.http.clone();
        let csp = HeaderValue::from_str(&content_security_policy(&broker))
            .context("building the Content-Security-Policy")?;
        let state = Arc::new(AppState {
            site: pages::Site {
                broker,
                mailbox: config.mail_dir.is_some(),
            },
            mail_dir: config.mail_dir.clone(),
            broker: caller::Broker::new(config.broker_api_url.as_deref().unwrap_or(&broker_http))
                .context("building the broker client")?,
            csp,
        });
        if let Some(dir) = &state.mail_dir {
            tracing::info!(dir = %dir.display(), "the dev mailbox lists .eml files at /dev/mailbox, to administrators");
        }
        Ok(Self {
            socket,
            router: router(state),
        })
    }

    /// The address the HTTP server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "frontend serving");
        axum::serve(self.socket, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving the frontend")?;
        tracing::info!("frontend stopped");
        Ok(())
    }
}

/// Scripts, styles and connections only from here and the broker; never framed. Images
/// from the broker too: a message's attachments are shown from there (docs/ARCHITECTURE.md,
/// "Attachments"), with the session cookie the pages and the broker share, or from a
/// `blob:` copy the page fetched when the browser refused the broker's answer to an `<img>`.
fn content_security_policy(broker: &BrokerOrigin) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         img-src 'self' data: blob: {http}; font-src 'self'; connect-src 'self' {http} {ws}; \
         form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'; object-src 'none'",
        http = broker.http,
        ws = broker.ws,
    )
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/chat") }))
        .route("/register", get(page_register))
        .route("/login", get(page_login))
        .route("/chat", get(page_chat))
        .route("/account", get(page_account))
        .route("/logs", get(page_logs))
        .route("/admin", get(page_admin))
        .route("/account/password", get(page_change_password))
        .route("/account/sessions", get(page_sessions))
        .route("/forgot-password", get(page_forgot_password))
        .route("/reset-password", get(page_reset_password))
        .route("/verify-email", get(page_verify_email))
        .route("/dev/mailbox", get(mailbox_list))
        .route("/dev/mailbox/{name}", get(mailbox_one))
        .route("/assets/{*path}", get(asset))
        .route(
            "/favicon.ico",
            get(|| async { Redirect::permanent("/assets/icon.svg") }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn security_headers(
    State(state): Shared,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, state.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page_register(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::register(&state.site))
}

async fn page_login(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::login(&state.site))
}

async fn page_chat(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::chat(&state.site))
}

async fn page_account(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::account(&state.site))
}

async fn page_logs(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::logs(&state.site))
}

async fn page_admin(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::admin(&state.site))
}

async fn page_change_password(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::change_password(&state.site))
}

async fn page_sessions(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::sessions(&state.site))
}

async fn page_forgot_password(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::forgot_password(&state.site))
}

async fn page_reset_password(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::reset_password(&state.site))
}

async fn page_verify_email(State(state): Shared) -> Response {
    html(StatusCode::OK, pages::verify_email(&state.site))
}

async fn not_found(State(state): Shared) -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found(&state.site, None))
}

/// The mailbox's directory when the caller may read it; else the page to answer.
async fn mailbox_for_admins(state: &AppState, headers: &HeaderMap) -> Result<PathBuf, Response> {
    let Some(dir) = state.mail_dir.clone() else {
        return Err(html(
            StatusCode::NOT_FOUND,
            pages::not_found(
                &state.site,
                Some(
                    "The dev mailbox is off: it is on only in development mode (MICROCHAT_DEV=1).",
                ),
            ),
        ));
    };
    match state.broker.caller(headers).await {
        caller::Caller::Admin => Ok(dir),
        caller::Caller::Member => Err(html(
            StatusCode::FORBIDDEN,
            pages::forbidden(&state.site, "The dev mailbox is for administrators."),
        )),
        caller::Caller::SignedOut => Err(html(
            StatusCode::UNAUTHORIZED,
            pages::forbidden(
                &state.site,
                "Log in as an administrator to read the dev mailbox.",
            ),
        )),
        caller::Caller::Unknown => Err(html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::error(
                &state.site,
                "Cannot tell whether you are an administrator now; try again shortly.",
            ),
        )),
    }
}

async fn mailbox_list(State(state): Shared, headers: HeaderMap) -> Response {
    let dir = match mailbox_for_admins(&state, &headers).await {
        Ok(dir) => dir,
        Err(page) => return page,
    };
    match mailbox::list(dir).await {
        Ok(mails) => html(StatusCode::OK, pages::mailbox(&state.site, &mails)),
        Err(error) => {
            tracing::warn!(%error, "reading the mail directory");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::error(&state.site, "The mail directory cannot be read."),
            )
        }
    }
}

async fn mailbox_one(
    State(state): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let missing = || {
        html(
            StatusCode::NOT_FOUND,
            pages::not_found(&state.site, Some("There is no such mail.")),
        )
    };
    let dir = match mailbox_for_admins(&state, &headers).await {
        Ok(dir) => dir,
        Err(page) => return page,
    };
    if !mailbox::valid_name(&name) {
        return missing();
    }
    match mailbox::read_one(dir, name).await {
        Some(mail) => html(StatusCode::OK, pages::mail(&state.site, &mail)),
        None => missing(),
    }
}

async fn asset(Path(path): Path<String>) -> Response {
    match assets::get(&path) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
