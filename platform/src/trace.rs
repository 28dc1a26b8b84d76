//! Trace ids that follow one request across services.
//!
//! The broker accepts a W3C `traceparent` header or creates one, and runs the request
//! inside [`scope`]. gRPC clients (`crate::grpc::channel`) copy the current id into
//! the call's metadata, and gRPC servers wrapped in [`TraceLayer`] read it back, so every
//! log line of every service carries the same `trace_id` field.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
};
use tracing::Instrument;

/// Name of the W3C trace-context header, in HTTP and in gRPC metadata.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceId;
}

/// A 128-bit W3C trace id; never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl TraceId {
    /// A fresh trace id: a UUIDv7, the time in milliseconds and then random bits (with a
    /// counter, reseeded at random, that keeps one process's ids in order).
    ///
    /// Time-ordered like AWS X-Ray's trace ids, so the indexes that find a trace's log
    /// entries (the logger's, an audit entry per event) grow at their end instead of
    /// dirtying a random page per entry. Unique, and never all zeros, as W3C Trace
    /// Context asks; the `random` flag of its level 2 is not claimed.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().as_u128())
    }

    /// The trace id of the task, if it runs inside [`scope`].
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|id| *id).ok()
    }

    /// Reads the trace id out of a `traceparent` value (`00-<trace id>-<parent id>-<flags>`).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let well_formed = version.len() == 2
            && version != "ff"
            && parent.len() == 16
            && flags.len() == 2
            && [version, parent, flags]
                .iter()
                .all(|part| part.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return None;
        }
        trace.parse().ok()
    }

    /// A `traceparent` value for an outgoing call made on behalf of this trace.
    pub fn to_traceparent(self) -> String {
        let span_id = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
        format!("00-{self}-{span_id:016x}-01")
    }
}

impl FromStr for TraceId {
    type Err = ();

    /// Parses 32 lowercase or uppercase hex digits, rejecting the all-zero id.
    fn from_str(text: &str) -> Result<Self, ()> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        match u128::from_str_radix(text, 16) {
            Ok(0) | Err(_) => Err(()),
            Ok(id) => Ok(Self(id)),
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// Runs `future` with `id` as the current trace id.
pub async fn scope<F: Future>(id: TraceId, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Tower layer for gRPC servers: each call runs in a span carrying the caller's trace id
/// (or a new one) and with that id as the current trace id.
///
/// Each call also runs on a task of its own, so it is never cancelled halfway: a caller
/// that gives up (its deadline passed, its connection closed) no longer drops the handler
/// in the middle of a database transaction or of a send that must be remembered. That
/// matters beyond tidiness: sqlx 0.8 leaves a PostgreSQL connection inside an open
/// transaction when the future running `BEGIN` is dropped at the wrong moment
/// (transact-rs/sqlx#4385, fixed after the 0.9.0 release), and the next borrower's writes
/// then run, and may be lost, inside it — seen here as "there is already a transaction
/// in progress" under overload. The answer of an abandoned call is simply dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(TraceId::from_traceparent)
            .unwrap_or_else(TraceId::generate);
        let span = tracing::info_span!("grpc", method = %request.uri().path(), trace_id = %id);
        let call = tokio::spawn(scope(id, self.inner.call(request)).instrument(span));
        Box::pin(async move {
            match call.await {
                Ok(answer) => answer,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled only when the runtime shuts down: nobody awaits the answer.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let id = TraceId::generate();
        assert_eq!(TraceId::from_traceparent(&id.to_traceparent()), Some(id));
    }

    #[test]
    fn fresh_ids_are_distinct_and_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1_000)
            .map(|_| TraceId::generate().to_string())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        // As text too: the logger's SQLite index holds the hex form.
        assert_eq!(sorted, ids);
        let newest = u128::from_str_radix(&ids[999], 16).expect("ids are hex");
        let millis = u64::try_from(newest >> 80).expect("48 bits of milliseconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis();
        let now = u64::try_from(now).expect("milliseconds since 1970 fit in 64 bits");
        assert!(now.abs_diff(millis) < 60_000, "the id leads with the time");
    }

    #[test]
    fn w3c_example_is_read() {
        let id =
            TraceId::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            id.map(|id| id.to_string()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceId::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_call_its_caller_gave_up_on_still_runs_to_the_end() {
        use tower::{Layer, Service};
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&finished);
        let handler = tower::service_fn(move |_request: http::Request<()>| {
            let flag = std::sync::Arc::clone(&flag);
            async move {
                // A transaction halfway: must not be cut off.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let mut service = TraceLayer.layer(handler);
        let call = service.call(http::Request::new(()));
        // The caller's deadline passes after 5 ms: its future is dropped.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(5), call)
                .await
                .is_err()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn scope_sets_the_current_id() {
        let id = TraceId::generate();
        assert_eq!(TraceId::current(), None);
        assert_eq!(scope(id, async { TraceId::current() }).await, Some(id));
    }
}
