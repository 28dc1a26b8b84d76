//! The listener: consumes domain events and starts the work they call for — welcome and
//! logout mail through the mail service, chat sessions through chat, and digests of the
//! @mentions of offline users (`handlers/digest.rs`). Delivery is at least
//! once; the listener makes the work happen once:
//!
//! - a message sent or read (published by an older chat only) calls for nothing and is
//!   acknowledged;
//! - an event whose only work is its audit entry (a message edited or deleted) is audited
//!   and acknowledged; the logger stores the entry under the event's id, so a redelivery
//!   stores nothing new;
//! - any other event whose id is in the processed-events table is acknowledged and skipped;
//! - otherwise its handler runs, its audit entry is written to the logger, the id is
//!   recorded (with whether the audit got through), and only then is it acknowledged; a
//!   logger outage retries the audit step alone, never the work;
//! - a handler that fails for a passing reason is retried with exponential backoff, up to
//!   `LISTENER_MAX_ATTEMPTS`; then, or at once for a failure retrying cannot fix, the event
//!   is parked, and an operator lists and replays parked events
//!   (`listener parked list|replay`, or the admin HTTP API).
//!
//! [`ListenerService::build`] binds the two HTTP ports, health and metrics on one, the admin
//! API on the other; [`ListenerService::run`] consumes until shutdown.

mod admin;
mod config;
mod handlers;
mod http;
mod processed;
pub mod source;

pub use admin::{AdminToken, InvalidAdminToken};
pub use config::Config;
pub use handlers::{Digests, HandleError, Handlers, ServiceUrls};
pub use processed::{ProcessedEvents, Progress, Record};

use admin::AdminPort;
use anyhow::Context;
use axum::Router;
use chrono::Utc;
use platform::{batch::GroupCommit, events::envelope, shutdown::Shutdown, trace::TraceId};
use source::{ReceivedEvent, Source};
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tracing::Instrument;

/// How often old processed-event ids are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long in-flight events may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// A built listener, its HTTP ports bound, not yet consuming.
pub struct ListenerService {
    http: TcpListener,
    admin: AdminPort,
    worker: Worker,
    prefetch: u16,
    retention: Duration,
}

/// What handling one delivery needs; cheap to clone.
#[derive(Clone)]
struct Worker {
    source: Arc<dyn Source>,
    processed: ProcessedEvents,
    /// Lookups of events arriving at the same time go to the database in one query.
    lookups: GroupCommit<uuid::Uuid, Result<Progress, String>>,
    /// Records of events handled at the same time go to the database in one statement.
    records: GroupCommit<Record, Result<bool, String>>,
    handlers: Handlers,
    config: Arc<Config>,
}

impl ListenerService {
    /// Opens the processed-events database and binds the HTTP ports; refuses an admin
    /// address beyond loopback without an admin token.
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        source: Arc<dyn Source>,
        service_keys: &platform::service_auth::ServiceKeys,
        dialer: &platform::grpc::Dialer,
    ) -> anyhow::Result<Self> {
        let admin = AdminPort::bind(config.admin_listen, config.admin_token.clone()).await?;
        platform::telemetry::prometheus();
        let database = connect_database(&config.database_url(data_dir))
            .await
            .context("opening the listener database")?;
        let processed = ProcessedEvents::new(database.clone());
        let identity = service_keys.identity(platform::service_auth::Service::Listener)?;
        let urls = ServiceUrls {
            chat: &config.chat_url,
            mail: &config.mail_url,
            logger: &config.logger_url,
            auth: &config.auth_url,
        };
        let handlers = Handlers::new(urls, dialer, &identity, &config.pages_url())
            .context("the chat, mail, auth or logger URL is not valid")?
            .with_digests(Digests::new(database, config.mention_digest_period));
        let http = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the listener to {}", config.listen))?;
        Ok(Self {
            http,
            admin,
            worker: Worker {
                source,
                lookups: look_up_in_batches(processed.clone(), config.prefetch),
                records: record_in_batches(processed.clone(), config.prefetch),
                processed,
                handlers,
                config: Arc::new(config.clone()),
            },
            prefetch: config.prefetch,
            retention: config.dedup_retention,
        })
    }

    /// The address of the health and metrics server.
    pub fn local_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The address of the parked-event admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Consumes until `shutdown`, then lets in-flight events finish.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (addr, admin_addr) = (self.local_addr(), self.admin_addr());
        let token_required = self.admin.requires_token();
        let app = http::router(self.worker.source.clone(), self.worker.processed.clone());
        let server = serve(self.http, app, &shutdown);
        let (admin, admin_app) = self.admin.into_parts(self.worker.source.clone());
        let admin_server = serve(admin, admin_app, &shutdown);
        let pruner = tokio::spawn(prune(
            self.worker.processed.clone(),
            self.retention,
            shutdown.clone(),
        ));
        let digests = tokio::spawn(handlers::send_digests(
            self.worker.handlers.clone(),
            shutdown.clone(),
        ));
        tracing::info!(%addr, "listener serving health and metrics over HTTP");
        tracing::info!(addr = %admin_addr, token_required, "listener serving its admin API over HTTP");
        let permits = Arc::new(Semaphore::new(usize::from(self.prefetch)));
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
                () = shutdown.cancelled() => break,
            };
            let delivery = tokio::select! {
                delivery = self.worker.source.next() => delivery,
                () = shutdown.cancelled() => break,
            };
            let worker = self.worker.clone();
            tokio::spawn(async move {
                worker.process(delivery).await;
                drop(permit);
            });
        }
        let all = u32::from(self.prefetch);
        if tokio::time::timeout(DRAIN, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("events still in flight at shutdown; they will be delivered again");
        }
        server.await.context("listener HTTP server")??;
        admin_server.await.context("listener admin server")??;
        pruner.await.context("pruner")?;
        digests.await.context("mention digests")?;
        tracing::info!("listener stopped");
        Ok(())
    }
}

/// Opens the listener's database, the one `url` names, and applies its migrations: it
/// holds the processed events ([`ProcessedEvents`]) and the pending mention digests
/// ([`Digests`]), each store given a clone of the pool.
pub async fn connect_database(url: &str) -> anyhow::Result<platform::sql::Pool> {
    platform::sql::connect_migrated(
        url,
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
    .await
}

/// Serves `app` on `socket` until `shutdown`, letting requests in flight finish.
fn serve(socket: TcpListener, app: Router, shutdown: &Shutdown) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(
        axum::serve(socket, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    )
}

/// The group commit of processed-event records: at most one batch per `prefetch` events
/// in flight.
fn record_in_batches(
    processed: ProcessedEvents,
    prefetch: u16,
) -> GroupCommit<Record, Result<bool, String>> {
    GroupCommit::start(usize::from(prefetch), move |records: Vec<Record>| {
        let processed = processed.clone();
        async move {
            match processed.record(&records).await {
                Ok(done) => done.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error.to_string()); records.len()],
            }
        }
    })
}

/// The group lookup of events' progress: at most one query per `prefetch` events in
/// flight.
fn look_up_in_batches(
    processed: ProcessedEvents,
    prefetch: u16,
) -> GroupCommit<uuid::Uuid, Result<Progress, String>> {
    GroupCommit::start(usize::from(prefetch), move |ids: Vec<uuid::Uuid>| {
        let processed = processed.clone();
        async move {
            match processed.progress_of(&ids).await {
                Ok(progress) => progress.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error.to_string()); ids.len()],
            }
        }
    })
}

async fn prune(processed: ProcessedEvents, retention: Duration, shutdown: Shutdown) {
    while platform::shutdown::pause(&shutdown, PRUNE_EVERY).await {
        let before =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        match processed.prune(before).await {
            Ok(pruned) => tracing::debug!(pruned, "pruned processed event ids"),
            Err(error) => tracing::warn!(%error, "could not prune processed event ids"),
        }
    }
}

impl Worker {
    /// Handles one delivery and settles it; never fails (a failure to settle means the
    /// delivery comes again, which the processed-events table absorbs).
    async fn process(&self, delivery: ReceivedEvent) {
        let (id, envelope) = match envelope::decode(&delivery.payload) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(%error, routing_key = %delivery.routing_key, "parking an unreadable event");
                self.settle(
                    delivery.park(0, &error.to_string()).await,
                    "unreadable",
                    "parked",
                );
                return;
            }
        };
        // The work runs in the trace of the request that caused the event, so its calls
        // (and their log lines) carry the same trace id.
        let trace = envelope
            .trace_id
            .parse::<TraceId>()
            .unwrap_or_else(|()| TraceId::generate());
        let span = tracing::info_span!("event", trace_id = %trace);
        platform::trace::scope(trace, self.handle(id, &envelope, delivery).instrument(span)).await;
    }

    async fn handle(
        &self,
        id: uuid::Uuid,
        envelope: &proto::events::v1::Envelope,
        delivery: ReceivedEvent,
    ) {
        // A label from our own list, never the free text of a message.
        let key = envelope
            .payload
            .as_ref()
            .map_or("unknown", platform::events::routing_key);
        let started = std::time::Instant::now();
        let attempts = delivery.attempts + 1;
        let done = if envelope.payload.as_ref().is_some_and(Handlers::unattended) {
            // A message sent or read (an older chat's; chat no longer publishes them) calls
            // for nothing: acknowledged as it comes, with no lookup and no record.
            Ok(())
        } else if envelope.payload.as_ref().is_some_and(Handlers::audit_only) {
            // Its audit entry is all its work, and the logger stores the entry of an event
            // once however often it comes (the entry takes the event's id): no lookup and
            // no record.
            self.handlers.audit(envelope).await
        } else {
            let progress = self
                .lookups
                .submit(id)
                .await
                .unwrap_or_else(|| Err("the lookup task stopped".to_owned()));
            match progress {
                Ok(Progress::Audited) => {
                    tracing::info!(event_id = %id, r#type = key, "already processed; acknowledging");
                    self.settle(delivery.ack().await, key, "duplicate");
                    return;
                }
                // Rare (a redelivery after the logger was away): boxed, off the common
                // path's task size.
                Ok(Progress::WorkDone) => Box::pin(self.audit(id, envelope)).await,
                Ok(Progress::New) => self.work(id, key, envelope).await,
                Err(error) => Err(HandleError::Transient(format!(
                    "the listener database: {error}"
                ))),
            }
        };
        metrics::histogram!("listener_event_seconds", "type" => key)
            .record(started.elapsed().as_secs_f64());
        match done {
            Ok(()) => {
                if let Some(at) = envelope::occurred_at(envelope) {
                    let lag = (Utc::now() - at).to_std().unwrap_or_default();
                    metrics::histogram!("listener_event_lag_seconds", "type" => key)
                        .record(lag.as_secs_f64());
                }
                tracing::debug!(event_id = %id, r#type = key, attempts, "event handled");
                self.settle(delivery.ack().await, key, "handled");
            }
            Err(HandleError::Transient(reason)) if attempts < self.config.max_attempts => {
                let delay = self.config.retry_delay(attempts);
                tracing::warn!(event_id = %id, r#type = key, attempts, retry_in = ?delay, %reason, "event failed; retrying later");
                self.settle(delivery.retry(attempts, delay).await, key, "retried");
            }
            Err(error) => {
                tracing::error!(event_id = %id, r#type = key, attempts, reason = %error, "event parked");
                self.settle(
                    delivery.park(attempts, &error.to_string()).await,
                    key,
                    "parked",
                );
            }
        }
    }

    /// The event's work and its audit entry, then one record of both, written together
    /// with those of the other events in flight. An audit entry that did not reach the logger is recorded as pending, so
    /// the retry writes it alone and never repeats the work.
    async fn work(
        &self,
        id: uuid::Uuid,
        key: &'static str,
        envelope: &proto::events::v1::Envelope,
    ) -> Result<(), HandleError> {
        self.handlers.handle(envelope).await?;
        let audited = self.handlers.audit(envelope).await;
        let record = Record {
            event_id: id,
            routing_key: key,
            at: Utc::now(),
            audited: audited.is_ok(),
        };
        self.records
            .submit(record)
            .await
            .unwrap_or_else(|| Err("the recorder stopped".to_owned()))
            .map_err(|error| HandleError::Transient(format!("recording it: {error}")))?;
        audited
    }

    /// The audit entry of an event whose work is done, then the record that it is stored.
    async fn audit(
        &self,
        id: uuid::Uuid,
        envelope: &proto::events::v1::Envelope,
    ) -> Result<(), HandleError> {
        self.handlers.audit(envelope).await?;
        self.processed
            .mark_audited(id)
            .await
            .map_err(|error| HandleError::Transient(format!("recording the audit: {error}")))
    }

    fn settle(&self, settled: anyhow::Result<()>, key: &'static str, outcome: &'static str) {
        match settled {
            Ok(()) => {
                metrics::counter!("listener_events_total", "type" => key, "outcome" => outcome)
                    .increment(1);
            }
            Err(error) => {
                metrics::counter!("listener_settle_failures_total").increment(1);
                tracing::warn!(%error, outcome, "could not settle the event; it will be delivered again");
            }
        }
    }
}
