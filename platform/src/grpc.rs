//! gRPC client and server helpers: every channel connects lazily (a service may start
//! before the ones it calls), and every call has a deadline and carries the current trace
//! id and the calling service's token; every server checks that token
//! ([`crate::service_auth`]). In the all-in-one, calls between its services stay in the
//! process ([`in_process`], chosen by a [`Dialer`]) through the same servers.

pub mod in_process;

use crate::{
    service_auth::{Credentials, Guard},
    trace::{TraceId, TraceLayer},
};
use anyhow::Context as _;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::{
    Code, Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};
use tower::{
    BoxError, ServiceBuilder,
    layer::util::{Identity, Stack},
};

/// A channel whose calls carry the current trace id and the caller's service token.
pub type TracedChannel = InterceptedService<Transport, CallInterceptor>;

/// How a client's calls reach their service.
#[derive(Clone, Debug)]
pub enum Transport {
    /// HTTP/2 over TCP, connected lazily.
    Network(Channel),
    /// In this process (the all-in-one's services calling each other).
    InProcess(in_process::LocalChannel),
}

impl tower::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match self {
            Self::Network(channel) => channel.poll_ready(context).map_err(Into::into),
            Self::InProcess(local) => local.poll_ready(context),
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Self::Network(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Self::InProcess(local) => local.call(request),
        }
    }
}

/// Where a process's clients find the services they call: over the network at their
/// URLs, except those this process serves itself (the all-in-one), which are called in
/// the process.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    local: std::collections::HashMap<String, in_process::Local>,
}

impl Dialer {
    /// Every service over the network.
    pub fn network() -> Self {
        Self::default()
    }

    /// Calls to `url` go to `local`, in this process.
    #[must_use]
    pub fn serving(mut self, url: impl Into<String>, local: in_process::Local) -> Self {
        self.local.insert(url.into(), local);
        self
    }

    /// A channel to `url` (in-process if this process serves it, else a lazily connecting
    /// one) with the given deadlines, its calls made with `credentials` (which name the
    /// service at `url`).
    pub fn channel(
        &self,
        url: &str,
        deadlines: Deadlines,
        credentials: Credentials,
    ) -> Result<TracedChannel, tonic::transport::Error> {
        let transport = match self.local.get(url) {
            Some(local) => Transport::InProcess(local.channel(deadlines.request)),
            None => Transport::Network(network_channel(url, deadlines)?),
        };
        Ok(InterceptedService::new(
            transport,
            CallInterceptor::new(credentials),
        ))
    }
}

/// Adds the current trace id and the calling service's token to every outgoing call.
#[derive(Clone, Debug)]
pub struct CallInterceptor {
    credentials: Credentials,
}

impl CallInterceptor {
    /// Calls made with `credentials` (for a channel built by hand, e.g. connected eagerly).
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl tonic::service::Interceptor for CallInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(id) = TraceId::current() {
            let value = id
                .to_traceparent()
                .parse()
                .expect("a formatted traceparent is valid ASCII metadata");
            metadata.insert(crate::trace::TRACEPARENT, value);
        }
        metadata.insert("authorization", self.credentials.authorization());
        Ok(request)
    }
}

/// Deadlines for the calls of one client.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// How long establishing the connection may take.
    pub connect: Duration,
    /// How long one call may take, end to end.
    pub request: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(5),
        }
    }
}

/// A lazily-connecting channel to `url` with the given deadlines, its calls made with
/// `credentials` (which name the service at `url`).
pub fn channel(
    url: &str,
    deadlines: Deadlines,
    credentials: Credentials,
) -> Result<TracedChannel, tonic::transport::Error> {
    Dialer::network().channel(url, deadlines, credentials)
}

fn network_channel(url: &str, deadlines: Deadlines) -> Result<Channel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(deadlines.connect)
        .timeout(deadlines.request)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(5))
        // Every call that passes its deadline is reset by this side. h2 remembers only a
        // few reset streams (hyper's default: 10); the late answers of forgotten ones count
        // as protocol errors, and after 1,024 of them h2 closes the whole connection with
        // GOAWAY(ENHANCE_YOUR_CALM) — every other call on it fails too. A burst of slow
        // calls (10,000 sockets opening at once, the callee busy) did exactly that. The
        // peer is one of ours: remember many resets, and keep a high ceiling rather than
        // none, so a peer that really misbehaves is still cut off.
        .http2_max_concurrent_reset_streams(16 * 1024)
        .http2_max_local_error_reset_streams(64 * 1024)
        .connect_lazy();
    Ok(channel)
}

/// Deadline of a long-lived server stream: it lasts as long as the connection, not one
/// request's deadline (the channel's default deadline would cut it).
pub const STREAM_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A tonic server whose calls run in a span carrying the caller's trace id.
pub fn server() -> tonic::transport::Server<Stack<TraceLayer, Identity>> {
    tonic::transport::Server::builder().layer(TraceLayer)
}

/// A gRPC server bound to its port, not yet serving: where it listens, who may call it
/// (its service's grants, checked on every call), and where callers in this process reach
/// it ([`in_process`]).
pub struct BoundServer {
    service: crate::service_auth::Service,
    socket: TcpListener,
    guard: Guard,
    local: in_process::Local,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BoundServer")
            .field("service", &self.service)
            .field("socket", &self.socket)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// Binds `listen` for `service`, whose callers' tokens are checked against the public
    /// keys in `service_keys`.
    pub async fn bind(
        listen: std::net::SocketAddr,
        service: crate::service_auth::Service,
        service_keys: &crate::service_auth::ServiceKeys,
    ) -> anyhow::Result<Self> {
        let socket = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {service} to {listen}"))?;
        Ok(Self {
            service,
            socket,
            guard: Guard::new(service, service_keys),
            local: in_process::Local::default(),
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Where callers in this process reach the server while it serves, through the same
    /// stack (guard, limits) as over the network.
    pub fn local(&self) -> in_process::Local {
        self.local.clone()
    }

    /// Serves `service` on the port and in this process until `shutdown`, then drains
    /// in-flight calls, next to the standard health service (reporting it serving) and
    /// server reflection (so `grpcurl` lists and calls it without the `.proto` files).
    /// Every call but health and reflection must pass the guard.
    pub async fn serve<S>(
        self,
        service: S,
        shutdown: crate::shutdown::Shutdown,
    ) -> anyhow::Result<()>
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let Self {
            service: name,
            socket,
            guard,
            local,
        } = self;
        let addr = socket.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
            .await;
        // Advertise what this server serves: the service and health (one descriptor set
        // holds every microchat service).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(S::NAME)
                .with_service_name("grpc.health.v1.Health")
        };
        let reflection_v1 = reflection().build_v1()?;
        // grpcurl and many tools still ask the pre-standard version first.
        let reflection_alpha = reflection().build_v1alpha()?;
        let routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_alpha)
            .add_service(service)
            .prepare();
        // The same layers, in the same order, as `server().layer(guard)` below.
        local.open(
            ServiceBuilder::new()
                .layer(TraceLayer)
                .layer(guard.clone())
                .service(routes.clone()),
        );
        tracing::info!(%addr, "{name} serving gRPC");
        let stopping = async {
            shutdown.cancelled().await;
            // As the listening socket closes: new in-process calls are refused from here.
            local.close();
        };
        let served = server()
            .layer(guard)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(socket), stopping)
            .await;
        local.close();
        served.map_err(|error| anyhow::anyhow!("{name} gRPC server: {error}"))
    }
}

/// The connections accepted on `socket`, with Nagle's algorithm off (gRPC messages are
/// small and latency matters more than packet count).
pub fn incoming(socket: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(socket).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// A time as a protobuf timestamp (the wire form of every time in microchat's protos).
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos())
            .expect("chrono's sub-second nanoseconds are below 2 * 10^9 (a leap second)"),
    }
}

/// True when the status means "the service could not be reached in time", as opposed to
/// an answer from it: the caller should say the service is unavailable.
pub fn is_unavailable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
        // A transport failure before any answer surfaces as Unknown with a source error.
        || (status.code() == Code::Unknown && std::error::Error::source(status).is_some())
}
