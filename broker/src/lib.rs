//! The broker: microchat's only public entry. It serves the REST API, the WebSocket and
//! the ops endpoints over HTTP, authenticates callers itself (see [`sessions`]), and
//! forwards the work to the gRPC services behind it. It owns no state.
//!
//! [`BrokerService::build`] binds the port; [`BrokerService::run`] serves until shutdown.

pub mod admission;
pub mod allocator;
mod config;
mod deletion;
pub mod error;
mod extract;
pub mod live;
mod middleware;
mod openapi;
pub mod rate_limit;
mod recent;
mod routes;
pub mod sends;
pub mod sessions;

pub use config::Config;

use anyhow::Context;
use live::{hub::Hub, socket::SocketLimits};
use platform::{grpc::TracedChannel, service_auth::Service, shutdown::Shutdown};
use proto::{
    auth::v1::auth_client::AuthClient, chat::v1::chat_client::ChatClient,
    logger::v1::logger_client::LoggerClient, mail::v1::mail_client::MailClient,
};
use sessions::Sessions;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic_health::pb::health_client::HealthClient;

/// Largest gRPC answer the broker accepts from a service.
const MAX_GRPC_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What every handler can reach: one shared allocation, so a clone (per request, per
/// socket) is a reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Sockets whose registration calls to chat may be in flight at once.
const SOCKETS_OPENING_AT_ONCE: usize = 128;
/// Closed sockets whose calls to chat (recording them closed) may be in flight at once:
/// 100,000 sockets closing together must queue, not bury chat in calls that time out and
/// leave their users online for good.
const SOCKETS_CLOSING_AT_ONCE: usize = 128;

/// Uploads one user may have in flight on one broker (the pages run three at once).
const UPLOADS_PER_USER: usize = 4;

/// Sign-ins waiting for auth that are always admitted, lag or not: a burst such as a
/// page of new users or a test makes (50 at once) is served; a login storm queues more.
const SIGN_INS_ALWAYS_ADMITTED: usize = 64;

/// The gate in front of sign-ins: past [`SIGN_INS_ALWAYS_ADMITTED`] waiting, refuses one
/// expected to wait for auth longer than `BROKER_SIGN_IN_QUEUE_TARGET` (once auth's rate
/// was measured: a burst on a quiet broker is served), the runtime's lag counted as for
/// sends.
fn sign_in_gate(config: &Config) -> admission::Admission {
    admission::Admission::new(
        config.sign_in_queue_target,
        SIGN_INS_ALWAYS_ADMITTED,
        std::time::Instant::now(),
    )
    .patient()
}

/// The inside of [`AppState`].
pub struct Shared {
    config: Arc<Config>,
    auth: AuthClient<TracedChannel>,
    chat: ChatClient<TracedChannel>,
    /// Chat for uploads, on a connection of their own with the transfer deadline.
    chat_files: ChatClient<TracedChannel>,
    /// Messages to chat, batched.
    sends: sends::Sends,
    /// Whether a new sign-in can be served in time ([`admission`]).
    sign_ins: Arc<admission::Admission>,
    logger: LoggerClient<TracedChannel>,
    mail: MailClient<TracedChannel>,
    health: HealthClient<TracedChannel>,
    chat_health: HealthClient<TracedChannel>,
    sessions: Arc<Sessions>,
    hub: Arc<Hub>,
    broker_id: Arc<str>,
    socket_limits: SocketLimits,
    /// Sockets registering with chat at once (a burst of connections waits here, not in
    /// chat's queue, where their calls would pass their deadlines together).
    socket_opening: Arc<tokio::sync::Semaphore>,
    /// Attachment uploads streaming at once (`BROKER_UPLOADS_AT_ONCE`).
    uploads: Arc<tokio::sync::Semaphore>,
    /// Each user's uploads in flight (the same per-user count as sockets), so no one
    /// holds every turn of `uploads`.
    uploads_per_user: live::quota::SocketQuota,
    /// Bounds the calls recording closed sockets.
    socket_closing: Arc<tokio::sync::Semaphore>,
    /// Cancelled at shutdown: sockets close with "going away".
    shutdown: Shutdown,
    /// Open sockets per user.
    socket_quota: live::quota::SocketQuota,
    /// The one login limit of every login path (REST, `/handle`).
    login_limit: rate_limit::LoginLimit,
    /// Roles auth gave member tokens' sessions a moment ago.
    recent_roles: recent::Recent<uuid::Uuid, platform::role::Role>,
    /// Whether users' addresses were verified, as auth said a moment ago.
    pub(crate) recent_verified: recent::Recent<uuid::Uuid, bool>,
}

impl Shared {
    /// Forgets the roles auth gave sessions a moment ago: a role just changed. Roles
    /// change seldom, so all of them go rather than looking up the account's sessions.
    pub(crate) fn forget_recent_roles(&self) {
        self.recent_roles.clear();
    }

    /// The caller's role now. A token's role can only be too low (a lost role ends the
    /// session), never too high; a token saying `member` is checked with auth, so a
    /// promotion counts within seconds rather than at the next token (auth's answer is
    /// remembered per session for [`recent::FRESH_FOR`]). Falls back to the token
    /// when auth does not answer in time: that errs on the side of fewer rights.
    pub async fn current_role(&self, claims: &platform::token::Claims) -> platform::role::Role {
        if claims.role.is_admin() {
            return claims.role;
        }
        if let Some(role) = self.recent_roles.get(&claims.sid) {
            return role;
        }
        let mut request = tonic::Request::new(proto::auth::v1::GetUserRequest {
            id: claims.sub.to_string(),
        });
        request.set_timeout(ROLE_CHECK_DEADLINE);
        match self.auth.clone().get_user(request).await {
            Ok(user) => {
                let role =
                    platform::role::Role::parse(&user.into_inner().role).unwrap_or(claims.role);
                self.recent_roles.put(claims.sid, role);
                role
            }
            Err(status) => {
                tracing::debug!(%status, "cannot ask auth for a role; using the token's");
                claims.role
            }
        }
    }
}

/// Deadline of asking auth for a caller's current role.
const ROLE_CHECK_DEADLINE: Duration = Duration::from_millis(500);

/// A built broker, bound to its port, not yet serving.
pub struct BrokerService {
    socket: TcpListener,
    state: AppState,
}

impl BrokerService {
    /// Prepares the gRPC clients (reached through `dialer`, connecting lazily, calling as
    /// the broker with its key in `service_keys`) and binds the HTTP port.
    pub async fn build(
        config: Config,
        service_keys: &platform::service_auth::ServiceKeys,
        dialer: &platform::grpc::Dialer,
    ) -> anyhow::Result<Self> {
        // Install the recorder before the first request records anything.
        platform::telemetry::prometheus();
        if std::env::var_os("BROKER_ADMINS").is_some() {
            tracing::warn!(
                "BROKER_ADMINS is no longer read: roles are stored by user id in auth (the first account is the owner; `microchat admin grant USER` names more)"
            );
        }
        let deadlines = platform::grpc::Deadlines {
            connect: Duration::from_secs(1),
            request: config.grpc_timeout,
        };
        let identity = service_keys.identity(Service::Broker)?;
        let channel = |url: &str, callee: Service| {
            dialer
                .channel(url, deadlines, identity.calling(callee))
                .with_context(|| format!("invalid {callee} URL {url:?}"))
        };
        let auth_channel = channel(&config.auth_url, Service::Auth)?;
        let chat_channel = channel(&config.chat_url, Service::Chat)?;
        let auth =
            AuthClient::new(auth_channel.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let chat =
            ChatClient::new(chat_channel.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        // Uploads stream for as long as the client sends (the answer comes at the end): a
        // connection of their own, with the transfer's deadline, so large files never
        // share flow control with the sends of the sockets.
        let transfers = platform::grpc::Deadlines {
            connect: Duration::from_secs(1),
            request: config.transfer_timeout,
        };
        let chat_files = ChatClient::new(
            dialer
                .channel(&config.chat_url, transfers, identity.calling(Service::Chat))
                .with_context(|| format!("invalid chat URL {:?}", config.chat_url))?,
        )
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let logger = channel(&config.logger_url, Service::Logger)?;
        let mail = channel(&config.mail_url, Service::Mail)?;
        let socket = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the broker to {}", config.listen))?;
        let broker_id = config
            .broker_id
            .clone()
            .unwrap_or_else(|| format!("broker-{}", uuid::Uuid::new_v4().simple()));
        let state = AppState(Arc::new(Shared {
            sessions: Arc::new(Sessions::new(auth.clone())),
            health: HealthClient::new(auth_channel),
            chat_health: HealthClient::new(chat_channel),
            sends: sends::Sends::start(chat.clone(), config.grpc_timeout, config.send_queue_target),
            sign_ins: Arc::new(sign_in_gate(&config)),
            auth,
            chat,
            chat_files,
            logger: LoggerClient::new(logger).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            mail: MailClient::new(mail),
            hub: Arc::new(Hub::default()),
            broker_id: broker_id.into(),
            socket_limits: SocketLimits {
                frames_per_second: config.ws_frames_per_second,
                idle_timeout: config.ws_idle_timeout,
                ping_interval: config.ws_ping_interval,
            },
            socket_opening: Arc::new(tokio::sync::Semaphore::new(SOCKETS_OPENING_AT_ONCE)),
            uploads: Arc::new(tokio::sync::Semaphore::new(config.uploads_at_once.max(1))),
            uploads_per_user: live::quota::SocketQuota::new(UPLOADS_PER_USER),
            socket_closing: Arc::new(tokio::sync::Semaphore::new(SOCKETS_CLOSING_AT_ONCE)),
            shutdown: Shutdown::new(),
            login_limit: rate_limit::LoginLimit::new(config.rate_limit_auth),
            recent_roles: recent::Recent::new(),
            recent_verified: recent::Recent::new(),
            socket_quota: live::quota::SocketQuota::new(config.ws_max_sockets_per_user),
            config: Arc::new(config),
        }));
        Ok(Self { socket, state })
    }

    /// The address the HTTP server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let state = self.state;
        let limiters = rate_limit::Limiters::default();
        let app = routes::router(state.clone(), &limiters);
        let tasks = [
            tokio::spawn(Arc::clone(&state.sessions).follow_revocations(shutdown.clone())),
            tokio::spawn(close_ended_sessions(state.clone(), shutdown.clone())),
            tokio::spawn(live::feed::follow(
                state.chat.clone(),
                Arc::clone(&state.hub),
                state.broker_id.to_string(),
                shutdown.clone(),
            )),
            tokio::spawn(deletion::sweep(
                state.clone(),
                state.config.deletion_sweep,
                shutdown.clone(),
            )),
            tokio::spawn(forget_idle_clients(limiters, shutdown.clone())),
            tokio::spawn(admission::probe_lag(
                vec![state.sends.admission(), Arc::clone(&state.sign_ins)],
                shutdown.clone(),
            )),
        ];
        tracing::info!(%addr, broker_id = %state.broker_id, "broker serving HTTP and WebSocket");
        // Sockets are long-lived: tell them to close as soon as shutdown starts, so the
        // graceful drain below does not wait on them.
        let sockets = state.shutdown.clone();
        let drain = shutdown.clone();
        tokio::spawn(async move {
            drain.cancelled().await;
            sockets.cancel();
        });
        axum::serve(
            self.socket,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("broker HTTP server")?;
        shutdown.cancel();
        for task in tasks {
            task.await.context("a broker background task panicked")?;
        }
        leave_chat(&state).await;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Tells chat that this broker's sockets are all closed, in one call instead of one per
/// socket. If chat does not answer, it forgets them on its own once this broker has been
/// gone for a while (its live stream ended).
async fn leave_chat(state: &AppState) {
    let request = proto::chat::v1::LeaveBrokerRequest {
        broker_id: state.broker_id.to_string(),
    };
    let left = tokio::time::timeout(LEAVE_TIMEOUT, state.chat.clone().leave_broker(request)).await;
    match left {
        Ok(Ok(_)) => tracing::debug!("told chat this broker's sockets are closed"),
        Ok(Err(status)) => tracing::warn!(%status, "cannot tell chat this broker left"),
        Err(_) => tracing::warn!("chat did not answer this broker's leaving in time"),
    }
}

/// How long a stopping broker waits for chat to forget its sockets.
const LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Closes the sockets of every session that ends, wherever it was ended.
async fn close_ended_sessions(state: AppState, shutdown: Shutdown) {
    let mut ended = state.sessions.ended_sessions();
    loop {
        let session = tokio::select! {
            () = shutdown.cancelled() => return,
            session = ended.recv() => session,
        };
        match session {
            Ok(session) => {
                let closed = state.hub.close_session(session);
                if closed > 0 {
                    tracing::info!(%session, closed, "closed the sockets of an ended session");
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                state
                    .hub
                    .close_sessions_where(|session| state.sessions.is_revoked(session));
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How the broker reconnects its long-lived streams (auth's revocations, chat's live
/// events): quickly at first, then at most every 5 s, with jitter so brokers spread out.
fn reconnect_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

async fn forget_idle_clients(limiters: rate_limit::Limiters, shutdown: Shutdown) {
    loop {
        if !platform::shutdown::pause(&shutdown, Duration::from_secs(60)).await {
            return;
        }
        limiters.forget_idle_clients();
    }
}
