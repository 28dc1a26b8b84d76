//! The embedded all-in-one: every microchat service in one process, each on its own port,
//! calling each other in the process through the same tonic servers as when split (the
//! guard, the limits, the trace layer: `platform::grpc::in_process`; no HTTP/2 or TCP
//! between them), with embedded backends (SQLite files in the data
//! directory, the durable embedded event bus in `events.db`, mail as `.eml` files, logs
//! in SQLite). Every
//! service's log lines go to the logger started here. `cargo run` at the
//! repository root starts it; tests start it on port 0. With `AMQP_URL` set, events go
//! through RabbitMQ instead of the embedded bus.
//!
//! What users wait for — pages, the API, sockets, auth and chat — runs on the process's
//! main runtime. The deferred work — the logger, mail and the listener — runs on a
//! runtime of its own whose threads have a lower CPU priority (`--deferred-nice`), so on
//! a busy machine it takes the time the interactive work leaves instead of adding to its
//! latency. It may lag meanwhile: events wait in the bus's queue on disk. The dev stack
//! and the cluster get the same by running them as processes of their own.
//!
//! Shutdown goes from the entry inwards: the broker and the pages stop first (the broker
//! tells chat, last, that its sockets are closed), then auth and chat, then the listener,
//! then the logger and mail it calls: each stops after the last caller that needed it.
//! Nothing an event still needs is lost on the way, at a stop or a crash: the producers'
//! outboxes and the bus's queue are on disk, and the listener leaves what it has not
//! settled in the queue for the next start (docs/RELIABILITY.md).

pub mod admin;

use anyhow::Context;
use platform::{
    events::{EmbeddedBus, EventBus},
    service_auth::{Service, ServiceKeys},
    shutdown::Shutdown,
};
use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::task::JoinSet;

/// Settings of every service, as flags and environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "microchat",
    args_override_self = true,
    version,
    about = "microchat, all in one process: every service on its own port, real gRPC over loopback, zero setup.",
    after_help = platform::process::LOGGING_HELP
)]
pub struct Config {
    /// Directory for embedded state: SQLite files, the generated signing key.
    #[arg(long, value_name = "DIR", env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Nice value (0–19) of the threads running the deferred work: the logger, mail and
    /// the listener. 0 runs them at the interactive services' priority.
    #[arg(long, value_name = "NICE", env = "MICROCHAT_DEFERRED_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub deferred_nice: i32,
    /// Directory of the keys the services sign their calls to each other with [default:
    /// `<data dir>/service-keys`, generated on first start].
    #[arg(long, value_name = "DIR", env = "MICROCHAT_SERVICE_KEYS")]
    pub service_keys: Option<PathBuf>,
    /// Development mode: the pages serve the dev mailbox (`/dev/mailbox`, every mail the
    /// system wrote, to administrators only). Off by default: mail holds people's
    /// addresses, sign-in times and addresses.
    #[arg(long, env = "MICROCHAT_DEV", default_value_t = false)]
    pub dev: bool,
    /// The operator port: `/metrics` (every service's, Prometheus text) and `/healthz`.
    /// Apart from the public API port, so what the system counts is not public.
    #[arg(
        long,
        value_name = "ADDR",
        env = "MICROCHAT_METRICS_LISTEN",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_listen: SocketAddr,
    /// The auth service's settings.
    #[command(flatten)]
    pub auth: auth::Config,
    /// The chat service's settings.
    #[command(flatten)]
    pub chat: chat::Config,
    /// The broker's settings: the public API and sockets.
    #[command(flatten)]
    pub broker: broker::Config,
    /// The logger service's settings.
    #[command(flatten)]
    pub logger: logger::Config,
    /// The mail service's settings.
    #[command(flatten)]
    pub mail: mail::Config,
    /// The listener's settings: the event consumer.
    #[command(flatten)]
    pub listener: listener::Config,
    /// The event bus's settings (the embedded bus, or RabbitMQ with `AMQP_URL`).
    #[command(flatten)]
    pub events: platform::events::BusConfig,
    /// The web pages' settings.
    #[command(flatten)]
    pub frontend: frontend::Config,
    /// Without a command, microchat runs; with one, it does that and exits.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of running the services.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Administration: accounts (on the databases the services use), service keys.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// The running services and their addresses.
pub struct Running {
    /// The broker's HTTP address: the one public entry.
    pub broker: SocketAddr,
    /// The web pages' HTTP address.
    pub frontend: SocketAddr,
    /// The auth service's gRPC address.
    pub auth: SocketAddr,
    /// The chat service's gRPC address.
    pub chat: SocketAddr,
    /// The logger service's gRPC address.
    pub logger: SocketAddr,
    /// The mail service's gRPC address.
    pub mail: SocketAddr,
    /// The listener's health and metrics address.
    pub listener: SocketAddr,
    /// The listener's parked-event admin API.
    pub listener_admin: SocketAddr,
    /// The operator port: `/metrics` and `/healthz`.
    pub metrics: SocketAddr,
    services: JoinSet<(Stage, anyhow::Result<()>)>,
    /// How many services of each stage still run.
    running: [usize; STAGES],
    /// Stops each stage; the first is the caller's token, each next one is cancelled
    /// once every service of the stages before it has stopped.
    stops: [Shutdown; STAGES],
    /// This system's log lines go to its logger while this lives.
    _log_shipping: platform::logship::LogShipping,
    /// Dropped last: its services have stopped by then.
    _deferred: Deferred,
}

/// The order of shutdown: the index into [`Running::stops`].
type Stage = usize;
/// The broker and the pages; auth and chat; the listener; the logger and mail, which the
/// listener calls.
const STAGES: usize = 4;
const ENTRY: Stage = 0;
const CORE: Stage = 1;
const LISTENER: Stage = 2;
const SINKS: Stage = 3;

/// The embedded event bus's file in the data directory.
pub const EVENTS_DATABASE: &str = "events.db";
/// The service keys' directory in the data directory.
pub const SERVICE_KEYS_DIR: &str = "service-keys";

impl Config {
    /// Where the service keys are: the setting, or their directory in the data directory.
    pub fn service_keys_dir(&self) -> PathBuf {
        self.service_keys
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SERVICE_KEYS_DIR))
    }
}

/// The keys of every service, generating what is missing in `dir`: the all-in-one runs
/// them all.
pub fn open_service_keys(dir: &Path) -> anyhow::Result<ServiceKeys> {
    ServiceKeys::open_full_set(dir).context("opening the service keys")
}

/// Opens the embedded event bus in `data_dir` and binds the listener's queue on it,
/// taking over what an earlier run left unsettled.
pub async fn open_embedded_events(
    data_dir: &Path,
    listener: &listener::Config,
) -> anyhow::Result<(EmbeddedBus, listener::source::EmbeddedSource)> {
    let url = platform::settings::sqlite_url(data_dir, EVENTS_DATABASE);
    let bus = EmbeddedBus::open(&url)
        .await
        .context("opening the embedded event bus")?;
    let source = listener::source::EmbeddedSource::bind(&bus, &listener.queue, listener.prefetch)
        .await
        .context("binding the listener's queue on the embedded event bus")?;
    Ok((bus, source))
}

/// Starts every service. Callers are pointed at the services started here, whatever
/// their `*_URL` settings say, so ports may be 0.
pub async fn start(mut config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let deferred = Deferred::start(config.deferred_nice)
        .context("starting the runtime of the deferred work")?;
    let keys = open_service_keys(&config.service_keys_dir())?;
    // The logger first: every other service's lines go to it from their first one.
    let logger = deferred
        .run({
            let (config, data_dir, keys) =
                (config.logger.clone(), config.data_dir.clone(), keys.clone());
            async move { logger::LoggerService::build(&config, &data_dir, &keys).await }
        })
        .await
        .context("starting the logger")?;
    let logger_addr = logger.local_addr();
    let logger_url = format!("http://{logger_addr}");
    // One shipper carries every service's lines here; it calls as the logger itself.
    let log_shipping = platform::logship::ship_to(
        &logger_url,
        keys.identity(Service::Logger)?.calling(Service::Logger),
    );
    let mail = deferred
        .run({
            let (config, data_dir, keys) =
                (config.mail.clone(), config.data_dir.clone(), keys.clone());
            async move { mail::MailService::build(&config, &data_dir, &keys).await }
        })
        .await
        .context("starting mail")?;
    let mail_addr = mail.local_addr();
    let chat = chat::ChatService::build(&config.chat, &config.data_dir, &keys)
        .await
        .context("starting chat")?;
    let chat_addr = chat.local_addr();
    // The pages' port first: the links in mails name it.
    let pages = tokio::net::TcpListener::bind(config.frontend.listen)
        .await
        .with_context(|| format!("binding the frontend to {}", config.frontend.listen))?;
    if config.listener.pages_url.is_none() {
        let mut addr = pages.local_addr()?;
        if addr.ip().is_unspecified() {
            // Listening everywhere: this machine's own name for itself is the safe guess.
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        config.listener.pages_url = Some(format!("http://{addr}"));
    }
    // Before the listener, which asks auth for the addresses of mention digests (auth
    // publishes nothing until it runs).
    let auth = auth::AuthService::build(&config.auth, &config.data_dir, &keys)
        .await
        .context("starting auth")?;
    let auth_addr = auth.local_addr();
    config.listener.auth_url = format!("http://{auth_addr}");
    // The listener binds its queue before any producer publishes.
    config.listener.chat_url = format!("http://{chat_addr}");
    config.listener.mail_url = format!("http://{mail_addr}");
    config.listener.logger_url.clone_from(&logger_url);
    // Calls between the services started here stay in the process: the same servers
    // (guard, limits, trace layer) without HTTP/2 over loopback (platform::grpc::in_process).
    let dialer = platform::grpc::Dialer::network()
        .serving(config.listener.auth_url.clone(), auth.local())
        .serving(config.listener.chat_url.clone(), chat.local())
        .serving(config.listener.mail_url.clone(), mail.local())
        .serving(logger_url.clone(), logger.local());
    let (bus, source): (Arc<dyn EventBus>, Arc<dyn listener::source::Source>) =
        match config.events.rabbit() {
            Some(bus) => {
                let url = config.events.amqp_url.clone().unwrap_or_default();
                let source = listener::source::RabbitSource::new(
                    url,
                    config.events.exchange.clone(),
                    &config.listener,
                );
                (bus, Arc::new(source))
            }
            None => {
                // On the deferred runtime: the bus's SQLite connection thread, started
                // there, shares its lower priority.
                let (data_dir, listener) = (config.data_dir.clone(), config.listener.clone());
                let (bus, source) = deferred
                    .run(async move { open_embedded_events(&data_dir, &listener).await })
                    .await?;
                (Arc::new(bus), Arc::new(source))
            }
        };
    let listener = deferred
        .run({
            let (config, data_dir, keys, dialer) = (
                config.listener.clone(),
                config.data_dir.clone(),
                keys.clone(),
                dialer.clone(),
            );
            async move {
                listener::ListenerService::build(&config, &data_dir, source, &keys, &dialer).await
            }
        })
        .await
        .context("starting the listener")?;
    let (listener_addr, listener_admin_addr) = (listener.local_addr(), listener.admin_addr());
    let chat = chat.publish_events_to(Arc::clone(&bus));
    let auth = auth.publish_events_to(bus);
    config.broker.auth_url = format!("http://{auth_addr}");
    config.broker.chat_url = format!("http://{chat_addr}");
    config.broker.logger_url = logger_url;
    config.broker.mail_url = format!("http://{mail_addr}");
    let broker = broker::BrokerService::build(config.broker, &keys, &dialer)
        .await
        .context("starting the broker")?;
    let broker_addr = broker.local_addr();
    // The pages talk to this process's broker, and in development mode show the mail it
    // writes (to administrators); never outside it, whatever FRONTEND_MAIL_DIR says.
    config.frontend.broker_url = format!("http://{broker_addr}");
    config.frontend.broker_api_url = None;
    if !config.dev {
        if config.frontend.mail_dir.take().is_some() {
            tracing::warn!(
                "FRONTEND_MAIL_DIR is ignored: the dev mailbox is on only with MICROCHAT_DEV=1"
            );
        }
    } else if config.frontend.mail_dir.is_none()
        && let mail::Destination::Files(dir) = config.mail.destination(&config.data_dir)
    {
        config.frontend.mail_dir = Some(dir);
    }
    let frontend = frontend::FrontendService::build_on(&config.frontend, pages)
        .context("starting the frontend")?;
    let frontend_addr = frontend.local_addr();
    let metrics = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the operator port to {}", config.metrics_listen))?;
    let metrics_addr = metrics.local_addr()?;

    let stops = [shutdown, Shutdown::new(), Shutdown::new(), Shutdown::new()];
    let mut running = [0; STAGES];
    let mut services = JoinSet::new();
    let deferred_services: [(Stage, ServiceFuture); 3] = [
        (SINKS, Box::pin(logger.run(stops[SINKS].clone()))),
        (SINKS, Box::pin(mail.run(stops[SINKS].clone()))),
        (LISTENER, Box::pin(listener.run(stops[LISTENER].clone()))),
    ];
    for (stage, service) in deferred_services {
        let service = deferred.run(service);
        services.spawn(async move { (stage, service.await) });
        running[stage] += 1;
    }
    let main_services: [(Stage, ServiceFuture); 6] = [
        (ENTRY, Box::pin(broker.run(stops[ENTRY].clone()))),
        (
            ENTRY,
            Box::pin(platform::telemetry::serve_metrics(
                metrics,
                stops[ENTRY].clone(),
            )),
        ),
        (
            ENTRY,
            Box::pin(platform::telemetry::keep_metrics(stops[ENTRY].clone())),
        ),
        (ENTRY, Box::pin(frontend.run(stops[ENTRY].clone()))),
        (CORE, Box::pin(auth.run(stops[CORE].clone()))),
        (CORE, Box::pin(chat.run(stops[CORE].clone()))),
    ];
    for (stage, service) in main_services {
        services.spawn(async move { (stage, service.await) });
        running[stage] += 1;
    }
    Ok(Running {
        broker: broker_addr,
        frontend: frontend_addr,
        auth: auth_addr,
        chat: chat_addr,
        logger: logger_addr,
        mail: mail_addr,
        listener: listener_addr,
        listener_admin: listener_admin_addr,
        metrics: metrics_addr,
        services,
        running,
        stops,
        _log_shipping: log_shipping,
        _deferred: deferred,
    })
}

/// A service's `run`, boxed so services of different types share one set.
type ServiceFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

impl Running {
    /// Waits until every service has stopped, stage after stage once the caller's token
    /// is cancelled. If one fails, the others are shut down too.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.services.join_next().await {
            // The tasks of the set only await a service, so they do not panic themselves.
            let (stage, result) = joined
                .context("a service panicked")
                .unwrap_or_else(|error| (ENTRY, Err(error)));
            self.running[stage] = self.running[stage].saturating_sub(1);
            if let Err(error) = result {
                tracing::error!(
                    error = format!("{error:#}"),
                    "a service failed; stopping the others"
                );
                self.stops.iter().for_each(Shutdown::cancel);
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
            // A stage stops once the ones before it have: what they left to do — calls
            // in flight, events to relay, mails and audits — is its last work.
            for next in 1..STAGES {
                if self.running[..next].iter().all(|&count| count == 0) {
                    self.stops[next].cancel();
                }
            }
        }
        outcome
    }

    /// Asks every service to stop and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The last lines reach the logger before it stops.
        platform::logship::flush(std::time::Duration::from_secs(2)).await;
        self.stops[ENTRY].cancel();
        self.wait().await
    }
}

/// The runtime of the deferred work, its threads at a lower CPU priority.
struct Deferred {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Deferred {
    /// A multi-threaded runtime whose threads — workers, blocking threads and the threads
    /// they start, such as SQLite's connection threads — run at nice value `nice`.
    fn start(nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("deferred")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Starts `future` on this runtime at once — a service built or run here keeps its
    /// sockets, timers and tasks here — and returns its outcome, to await anywhere.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<T>> + Send + 'static {
        let task = self
            .runtime
            .as_ref()
            .expect("the runtime is only taken when dropping")
            .spawn(future);
        async move {
            task.await
                .context("a deferred task panicked")
                .and_then(|result| result)
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which an async context may not
        // do; by now its services have stopped, and whatever is left is dropped.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value; on Linux it belongs to the thread, and the
/// threads it starts inherit it.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        let thread = libc::id_t::try_from(unsafe { libc::syscall(libc::SYS_gettid) })
            .expect("a thread id is a positive pid_t");
        // SAFETY: setpriority only reads its arguments; raising a thread's own nice
        // value needs no privilege.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, thread, nice) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                nice,
                "cannot lower the priority of a deferred-work thread"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_unique_flag_and_variable() {
        <Config as clap::CommandFactory>::command().debug_assert();
    }
}
