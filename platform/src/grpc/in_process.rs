//! gRPC calls inside one process: the all-in-one's services call each other through the
//! same tonic servers, layers and codecs as the split deployment (the trace layer, the
//! service-token guard, health, the generated service with its message limits), without
//! HTTP/2 framing, TCP, or the kernel's loopback.
//!
//! On loopback every call cost its caller two segments each way on the same core (and the
//! HTTP/2 connection tasks' wake-ups); the broker makes one to chat per batch of sends and
//! several per socket opened, so the hop was a share of the core the sockets need
//! (docs/PERFORMANCE.md, "Why ≥ 2× the anchor is out of reach").
//!
//! A call here keeps what the network gave it, so code above cannot tell the two apart:
//! - the handler runs on the callee's runtime, as a task of its own that runs to its end
//!   whether or not its caller waits (the server stack's trace layer spawns it,
//!   [`crate::trace::TraceLayer`]; it is called here inside the callee's runtime). The
//!   all-in-one's deferred work has a runtime of its own at a lower priority: a call from
//!   it must not run chat's handler at that priority while it holds chat's writer;
//! - the deadline is the channel's, or the call's `grpc-timeout` if shorter, and passing it
//!   fails the call as tonic's channel does ([`tonic::TimeoutExpired`], `Cancelled`);
//! - a service bound and not serving yet (the all-in-one starts its services together, and
//!   the broker may take a request first) is waited for within the call's deadline, as a
//!   connection waits in a bound port's backlog; one that has stopped refuses the call as
//!   a closed port would ([`tonic::ConnectError`], `Unavailable`).

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{runtime::Handle, sync::watch};
use tonic::body::Body;
use tower::{BoxError, Service, util::BoxCloneSyncService};

/// A service's whole server stack, as a tower service.
type Stack = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Where one service can be called in this process, from the moment its port is bound:
/// calls wait while it is not serving yet, reach its stack while it serves, and are
/// refused from the moment it starts shutting down. Cheap to clone; every clone is the
/// same place.
#[derive(Clone)]
pub struct Local {
    state: Arc<watch::Sender<State>>,
}

/// Where a service is in its life.
#[derive(Clone)]
enum State {
    /// Bound, not serving yet.
    Bound,
    Serving(Serving),
    /// Shut down (or shutting down): for good.
    Stopped,
}

impl Default for Local {
    /// A service bound and not serving yet.
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::Bound)),
        }
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.state.borrow() {
            State::Bound => "bound",
            State::Serving(_) => "serving",
            State::Stopped => "stopped",
        };
        formatter
            .debug_struct("Local")
            .field("state", &state)
            .finish()
    }
}

/// A serving service: its stack and the runtime its calls run on.
#[derive(Clone)]
struct Serving {
    stack: Stack,
    runtime: Handle,
}

impl Local {
    /// Serves `stack` here, its calls run on the current runtime, until [`Local::close`].
    pub(crate) fn open<S>(&self, stack: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let serving = Serving {
            stack: BoxCloneSyncService::new(stack),
            runtime: Handle::current(),
        };
        self.state.send_replace(State::Serving(serving));
    }

    /// Refuses every call from now on, and those waiting for the service to serve (calls
    /// already made run to their end).
    pub(crate) fn close(&self) {
        self.state.send_replace(State::Stopped);
    }

    /// A channel to this service whose calls end after `deadline` at most.
    pub fn channel(&self, deadline: Duration) -> LocalChannel {
        LocalChannel {
            local: self.clone(),
            deadline,
        }
    }
}

/// The calling side of [`Local`]: what a tonic client is built on in place of a
/// [`tonic::transport::Channel`].
#[derive(Clone, Debug)]
pub struct LocalChannel {
    local: Local,
    deadline: Duration,
}

impl Service<http::Request<Body>> for LocalChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the callee stack's, asked for each call (the call owns a clone).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline =
            grpc_timeout(request.headers()).map_or(self.deadline, |asked| asked.min(self.deadline));
        let mut state = self.local.state.subscribe();
        Box::pin(async move {
            let until = tokio::time::Instant::now() + deadline;
            let Serving { mut stack, runtime } =
                tokio::time::timeout_at(until, serving(&mut state))
                    .await
                    .map_err(|_| tonic::TimeoutExpired(()))??;
            std::future::poll_fn(|context| stack.poll_ready(context))
                .await
                .unwrap_or_else(|never| match never {});
            // Called inside the callee's runtime: the trace layer spawns the handler there.
            let answer = {
                let _callee = runtime.enter();
                stack.call(request)
            };
            match tokio::time::timeout_at(until, answer).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(never)) => match never {},
                Err(_) => Err(tonic::TimeoutExpired(()).into()),
            }
        })
    }
}

/// The service's stack once it serves: at once while it does, after waiting while it is
/// bound and not serving yet; refused once it has stopped.
async fn serving(state: &mut watch::Receiver<State>) -> Result<Serving, BoxError> {
    let refused = || tonic::ConnectError("the service is not serving in this process".into());
    let state = state
        .wait_for(|state| !matches!(state, State::Bound))
        .await
        .map_err(|_| refused())?;
    match &*state {
        State::Serving(serving) => Ok(serving.clone()),
        State::Bound | State::Stopped => Err(refused().into()),
    }
}

/// The `grpc-timeout` a call asks for (`Request::set_timeout`): at most eight digits and
/// a unit (gRPC over HTTP/2, "Requests"). A malformed one is ignored, as tonic's server
/// does.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().expect("ASCII"));
        headers
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_malformed_ones_ignored() {
        assert_eq!(
            grpc_timeout(&headers("3H")),
            Some(Duration::from_secs(3 * 3600))
        );
        assert_eq!(grpc_timeout(&headers("2M")), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(&headers("5S")), Some(Duration::from_secs(5)));
        assert_eq!(
            grpc_timeout(&headers("500m")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(grpc_timeout(&headers("7u")), Some(Duration::from_micros(7)));
        assert_eq!(
            grpc_timeout(&headers("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        for malformed in ["", "S", "5", "5s", "123456789S", "-5S", "5.0S", "ÿS"] {
            let mut map = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_bytes(malformed.as_bytes()) {
                map.insert("grpc-timeout", value);
            }
            assert_eq!(grpc_timeout(&map), None, "{malformed:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
