//! The mail service: templated mail (subject, plain text and HTML), sent over SMTP (MailHog
//! in the dev stack) or written as `.eml` files (the embedded run). Serves gRPC
//! (`microchat.mail.v1.Mail`) plus gRPC health. Mail is asked for by the listener, from
//! events; nothing public reaches this service.
//!
//! [`MailService::build`] prepares the transport and binds the port; [`MailService::run`]
//! serves until shutdown.

mod config;
mod grpc;
pub mod sender;
pub mod sent;
pub mod templates;

pub use config::{Config, Destination};

use anyhow::Context;
use platform::{grpc::BoundServer, service_auth::Service, shutdown::Shutdown};
use proto::mail::v1::mail_server::MailServer;
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

/// Largest gRPC message mail accepts: 32 variables of 1,000 characters fit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// How long a sent mail's idempotency key is remembered in the database (retries come
/// within minutes; the listener's processed-events table takes over after).
const REMEMBER_SENT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often older keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A built mail service, bound to its port, not yet serving.
pub struct MailService {
    /// The gRPC server: its port, who may call it, and where callers in this process
    /// reach it.
    grpc: BoundServer,
    sender: Arc<sender::Sender>,
    sent: sent::SentMails,
}

impl MailService {
    /// Prepares the transport and binds the port.
    pub async fn build(
        config: &Config,
        data_dir: &Path,
        service_keys: &platform::service_auth::ServiceKeys,
    ) -> anyhow::Result<Self> {
        platform::telemetry::prometheus();
        let destination = config.destination(data_dir);
        let sent = sent::SentMails::connect(&config.database_url(data_dir))
            .await
            .context("opening the sent-mail database (MAIL_DATABASE_URL)")?;
        let sender = sender::Sender::new(
            &destination,
            &config.from,
            config.smtp_timeout,
            sent.clone(),
        )?;
        match &destination {
            Destination::Smtp(_) => tracing::info!("mail goes to the SMTP server of MAIL_SMTP_URL"),
            Destination::Files(dir) => {
                tracing::info!(dir = %dir.display(), "mail is written as .eml files");
            }
        }
        let grpc = BoundServer::bind(config.listen, Service::Mail, service_keys).await?;
        Ok(Self {
            grpc,
            sender: Arc::new(sender),
            sent,
        })
    }

    /// Where callers in this process reach the server while it serves, through the same
    /// stack (guard, limits) as over the network.
    pub fn local(&self) -> platform::grpc::in_process::Local {
        self.grpc.local()
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let api = MailServer::new(grpc::MailApi::new(self.sender))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let pruner = tokio::spawn(prune(self.sent, shutdown.clone()));
        self.grpc.serve(api, shutdown.clone()).await?;
        pruner.abort();
        tracing::info!("mail stopped");
        Ok(())
    }
}

/// Forgets sent-mail keys older than [`REMEMBER_SENT`], now and then every [`PRUNE_EVERY`].
async fn prune(sent: sent::SentMails, shutdown: Shutdown) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let before = chrono::Utc::now()
            - chrono::TimeDelta::from_std(REMEMBER_SENT).expect("a week fits a TimeDelta");
        match sent.prune(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot old sent-mail keys"),
            Err(error) => tracing::warn!(%error, "could not prune sent-mail keys"),
        }
    }
}
