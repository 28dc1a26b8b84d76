//! The all-in-one's in-process gRPC calls (`platform::grpc::in_process`): the server's
//! whole stack as over the network (the guard's grants, the same answers), and the
//! network's semantics for what can go wrong: a deadline cancels the call while the
//! handler runs to its end, a service bound and not serving yet is waited for and one
//! that stopped is unavailable, the handler runs on the callee's runtime.

use platform::{
    grpc::{BoundServer, Deadlines, Dialer, TracedChannel, in_process::Local},
    service_auth::{Service, ServiceKeys},
    shutdown::Shutdown,
};
use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tonic::{Code, Status, body::Body, server::NamedService};

/// The method the stand-in answers: one the broker may call and the listener may not.
const REGISTER: &str = "/microchat.auth.v1.Auth/Register";
/// The name the callee's runtime gives its threads.
const CALLEE_THREADS: &str = "callee-runtime";

/// A stand-in for auth: answers `Register` with an empty message after `delay`, noting
/// which thread ran it, and whether it finished or was dropped before.
#[derive(Clone)]
struct Slow {
    delay: Duration,
    threads: Arc<Mutex<Vec<String>>>,
    finished: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
}

impl NamedService for Slow {
    const NAME: &'static str = "microchat.auth.v1.Auth";
}

/// Counts a handler dropped before its end.
struct Abandoned(Arc<AtomicUsize>, bool);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl tower::Service<http::Request<Body>> for Slow {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            this.threads.lock().expect("not poisoned").push(thread);
            let mut running = Abandoned(Arc::clone(&this.abandoned), false);
            tokio::time::sleep(this.delay).await;
            running.1 = true;
            this.finished.fetch_add(1, Ordering::SeqCst);
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Answer, request).await)
        })
    }
}

struct Answer;

impl tonic::server::UnaryService<()> for Answer {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

/// The stand-in served over TCP and in the process, on a runtime of its own.
struct Served {
    url: String,
    local: Local,
    keys: ServiceKeys,
    slow: Slow,
    stop: Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Served {
    async fn start(delay: Duration) -> Self {
        let keys = key_set();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(CALLEE_THREADS)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let bound = {
            let keys = keys.clone();
            runtime.spawn(async move {
                let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                BoundServer::bind(listen, Service::Auth, &keys).await
            })
        };
        let server = bound.await.expect("bound").expect("binds");
        let url = format!("http://{}", server.local_addr());
        let (local, stop) = (server.local(), Shutdown::new());
        let slow = Slow {
            delay,
            threads: Arc::default(),
            finished: Arc::default(),
            abandoned: Arc::default(),
        };
        runtime.spawn(server.serve(slow.clone(), stop.clone()));
        // Serving once the health check answers.
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            Dialer::network()
                .serving(url.clone(), local.clone())
                .channel(
                    &url,
                    deadlines(Duration::from_secs(1)),
                    credentials(&keys, Service::Broker),
                )
                .expect("a valid URL"),
        );
        let request = || tonic_health::pb::HealthCheckRequest::default();
        let mut tries = 0;
        while health.check(request()).await.is_err() {
            tries += 1;
            assert!(tries < 100, "the stand-in never served in the process");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            url,
            local,
            keys,
            slow,
            stop,
            runtime: Some(runtime),
        }
    }

    /// A channel to the stand-in, calling as `caller`: in the process, or over TCP.
    fn channel(&self, caller: Service, in_process: bool, deadline: Duration) -> TracedChannel {
        let dialer = if in_process {
            Dialer::network().serving(self.url.clone(), self.local.clone())
        } else {
            Dialer::network()
        };
        dialer
            .channel(
                &self.url,
                deadlines(deadline),
                credentials(&self.keys, caller),
            )
            .expect("a valid URL")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A fresh set of every service's keys.
fn key_set() -> ServiceKeys {
    let dir = std::env::temp_dir().join(format!("in-process-{}", uuid::Uuid::new_v4()));
    ServiceKeys::generate_missing(&dir).expect("keys are generated");
    let keys = ServiceKeys::load(&dir, &Service::ALL).expect("keys load");
    std::fs::remove_dir_all(&dir).expect("the keys' directory is ours to remove");
    keys
}

fn deadlines(request: Duration) -> Deadlines {
    Deadlines {
        connect: Duration::from_secs(1),
        request,
    }
}

fn credentials(keys: &ServiceKeys, caller: Service) -> platform::service_auth::Credentials {
    keys.identity(caller)
        .expect("every key is here")
        .calling(Service::Auth)
}

/// Calls the stand-in's `Register`, with the call's own deadline if given.
async fn register(channel: TracedChannel, timeout: Option<Duration>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unknown(error.to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let path = http::uri::PathAndQuery::from_static(REGISTER);
    grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_call_in_the_process_passes_the_same_guard_and_runs_on_the_callees_runtime() {
    let served = Served::start(Duration::ZERO).await;
    let second = Duration::from_secs(1);
    for in_process in [true, false] {
        register(served.channel(Service::Broker, in_process, second), None)
            .await
            .unwrap_or_else(|status| panic!("in process {in_process}: {status:?}"));
        let refused = register(served.channel(Service::Listener, in_process, second), None)
            .await
            .expect_err("the listener may not register users");
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "in process {in_process}"
        );
    }
    let threads = served.slow.threads.lock().expect("not poisoned").clone();
    assert_eq!(
        threads.len(),
        2,
        "the refused calls never reached the service"
    );
    assert!(
        threads.iter().all(|thread| thread == CALLEE_THREADS),
        "every call ran on the callee's runtime: {threads:?}"
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_as_over_the_network_and_its_handler_still_ends() {
    let served = Served::start(Duration::from_millis(600)).await;
    // The channel's deadline, then a shorter one the call asks for.
    for (deadline, asked) in [
        (Duration::from_millis(100), None),
        (Duration::from_secs(30), Some(Duration::from_millis(100))),
    ] {
        let mut codes = Vec::new();
        for in_process in [true, false] {
            let started = std::time::Instant::now();
            let status = register(served.channel(Service::Broker, in_process, deadline), asked)
                .await
                .expect_err("the call outlasts its deadline");
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "failed at the deadline, not after the handler: {:?}",
                started.elapsed()
            );
            codes.push(status.code());
        }
        assert_eq!(
            codes[0], codes[1],
            "the same failure in the process as over TCP"
        );
        assert!(
            matches!(codes[0], Code::Cancelled | Code::DeadlineExceeded),
            "{codes:?}"
        );
    }
    // Never cancelled halfway (the trace layer's rule): all four handlers finish.
    let mut waited = 0;
    while served.slow.finished.load(Ordering::SeqCst) < 4 {
        waited += 1;
        assert!(waited < 200, "a handler did not run to its end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.slow.abandoned.load(Ordering::SeqCst), 0);
}

/// The all-in-one starts its services together and the broker may take a request before
/// auth serves: a call to a service bound and not serving yet waits for it within its
/// deadline (as a connection waits in a bound port's backlog) instead of failing.
#[tokio::test]
async fn a_call_waits_for_a_bound_service_to_serve() {
    let keys = key_set();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = BoundServer::bind(listen, Service::Auth, &keys)
        .await
        .expect("binds");
    let url = format!("http://{}", server.local_addr());
    let channel = |deadline| {
        Dialer::network()
            .serving(url.clone(), server.local())
            .channel(
                &url,
                deadlines(deadline),
                credentials(&keys, Service::Broker),
            )
            .expect("a valid URL")
    };
    let status = register(channel(Duration::from_millis(200)), None)
        .await
        .expect_err("not serving within the deadline");
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );

    let call = tokio::spawn(register(channel(Duration::from_secs(10)), None));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "the call waits for the service");
    let slow = Slow {
        delay: Duration::ZERO,
        threads: Arc::default(),
        finished: Arc::default(),
        abandoned: Arc::default(),
    };
    let stop = Shutdown::new();
    let serving = tokio::spawn(server.serve(slow, stop.clone()));
    call.await
        .expect("the call's task ends")
        .expect("answered once the service serves");
    stop.cancel();
    serving.await.expect("joined").expect("served");
}

#[tokio::test]
async fn a_service_that_stopped_is_unavailable() {
    let served = Served::start(Duration::ZERO).await;
    let channel = served.channel(Service::Broker, true, Duration::from_secs(1));
    register(channel.clone(), None).await.expect("serving");
    served.stop.cancel();
    let mut tries = 0;
    loop {
        match register(channel.clone(), None).await {
            Err(status) if status.code() == Code::Unavailable => break,
            outcome => {
                tries += 1;
                assert!(tries < 100, "still answered after shutdown: {outcome:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
