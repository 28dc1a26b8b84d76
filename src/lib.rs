//! The embedded all-in-one: every microchat service in one process, each on its own port,
//! talking real gRPC over loopback, with embedded backends (SQLite files in the data
//! directory, the in-process event bus, mail as `.eml` files, logs in SQLite). Every
//! service's log lines go to the logger started here. `cargo run` at the
//! repository root starts it; tests start it on port 0. With `AMQP_URL` set, events go
//! through RabbitMQ instead of the in-process bus.

use anyhow::Context;
use platform::{
    events::{EventBus, InProcessBus},
    shutdown::Shutdown,
};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::task::JoinSet;

/// Settings of every service, as flags and environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "microchat",
    args_override_self = true,
    version,
    about = "microchat, all in one process: every service on its own port, real gRPC over loopback, zero setup.",
    after_help = "Logging: RUST_LOG (default info), LOG_FORMAT=json."
)]
pub struct Config {
    /// Directory for embedded state: SQLite files, the generated signing key.
    #[arg(long, value_name = "DIR", env = "MICROCHAT_DATA_DIR", default_value = platform::settings::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: auth::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub chat: chat::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: broker::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub logger: logger::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub mail: mail::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub listener: listener::Config,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub events: platform::events::BusConfig,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub frontend: frontend::Config,
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
    /// The listener's HTTP address (health, metrics, parked events).
    pub listener: SocketAddr,
    services: JoinSet<anyhow::Result<()>>,
    shutdown: Shutdown,
    /// This system's log lines go to its logger while this lives.
    _log_shipping: platform::logship::Destination,
}

/// Starts every service. Callers are pointed at the services started here, whatever
/// their `*_URL` settings say, so ports may be 0.
pub async fn start(mut config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    // The logger first: every other service's lines go to it from their first one.
    let logger = logger::LoggerService::build(&config.logger, &config.data_dir)
        .await
        .context("starting the logger")?;
    let logger_addr = logger.local_addr();
    let logger_url = format!("http://{logger_addr}");
    let log_shipping = platform::logship::ship_to(&logger_url);
    let mail = mail::MailService::build(&config.mail, &config.data_dir)
        .await
        .context("starting mail")?;
    let mail_addr = mail.local_addr();
    let chat = chat::ChatService::build(&config.chat, &config.data_dir)
        .await
        .context("starting chat")?;
    let chat_addr = chat.local_addr();
    // The listener binds its queue before any producer publishes.
    config.listener.chat_url = format!("http://{chat_addr}");
    config.listener.mail_url = format!("http://{mail_addr}");
    config.listener.logger_url.clone_from(&logger_url);
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
                let bus = InProcessBus::default();
                let source = listener::source::MemorySource::bind(&bus);
                (Arc::new(bus), Arc::new(source))
            }
        };
    let listener = listener::Listener::build(&config.listener, &config.data_dir, source)
        .await
        .context("starting the listener")?;
    let listener_addr = listener.local_addr();
    let chat = chat.publish_events_to(Arc::clone(&bus));
    let auth = auth::Auth::build(&config.auth, &config.data_dir)
        .await
        .context("starting auth")?
        .publish_events_to(bus);
    let auth_addr = auth.local_addr();
    config.broker.auth_url = format!("http://{auth_addr}");
    config.broker.chat_url = format!("http://{chat_addr}");
    config.broker.logger_url = logger_url;
    config.broker.mail_url = format!("http://{mail_addr}");
    let broker = broker::Broker::build(config.broker)
        .await
        .context("starting the broker")?;
    let broker_addr = broker.local_addr();
    // The pages talk to this process's broker, and show the mail it writes.
    config.frontend.broker_url = format!("http://{broker_addr}");
    if config.frontend.mail_dir.is_none()
        && let mail::Destination::Files(dir) = config.mail.destination(&config.data_dir)
    {
        config.frontend.mail_dir = Some(dir);
    }
    let frontend = frontend::Frontend::build(&config.frontend)
        .await
        .context("starting the frontend")?;
    let frontend_addr = frontend.local_addr();
    let mut services = JoinSet::new();
    services.spawn(logger.run(shutdown.clone()));
    services.spawn(mail.run(shutdown.clone()));
    services.spawn(listener.run(shutdown.clone()));
    services.spawn(auth.run(shutdown.clone()));
    services.spawn(chat.run(shutdown.clone()));
    services.spawn(broker.run(shutdown.clone()));
    services.spawn(frontend.run(shutdown.clone()));
    Ok(Running {
        broker: broker_addr,
        frontend: frontend_addr,
        auth: auth_addr,
        chat: chat_addr,
        logger: logger_addr,
        mail: mail_addr,
        listener: listener_addr,
        services,
        shutdown,
        _log_shipping: log_shipping,
    })
}

impl Running {
    /// Waits until every service has stopped. If one fails, the others are shut down too.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        while let Some(joined) = self.services.join_next().await {
            let result = joined
                .context("a service panicked")
                .and_then(|result| result);
            if let Err(error) = result {
                tracing::error!(
                    error = format!("{error:#}"),
                    "a service failed; stopping the others"
                );
                self.shutdown.cancel();
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        outcome
    }

    /// Asks every service to stop and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The last lines reach the logger before it stops.
        platform::logship::flush(std::time::Duration::from_secs(2)).await;
        self.shutdown.cancel();
        self.wait().await
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
