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
pub mod templates;

pub use config::{Config, Destination};

use anyhow::Context;
use platform::shutdown::Shutdown;
use proto::mail::v1::mail_server::MailServer;
use std::{net::SocketAddr, path::Path, sync::Arc};
use tokio::net::TcpListener;

/// Largest gRPC message mail accepts: 32 variables of 1,000 characters fit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A built mail service, bound to its port, not yet serving.
pub struct MailService {
    listener: TcpListener,
    sender: Arc<sender::Sender>,
}

impl MailService {
    /// Prepares the transport and binds the port.
    pub async fn build(config: &Config, data_dir: &Path) -> anyhow::Result<Self> {
        platform::telemetry::prometheus();
        let destination = config.destination(data_dir);
        let sender = sender::Sender::new(&destination, &config.from, config.smtp_timeout)?;
        match &destination {
            Destination::Smtp(_) => tracing::info!("mail goes to the SMTP server of MAIL_SMTP_URL"),
            Destination::Files(dir) => {
                tracing::info!(dir = %dir.display(), "mail is written as .eml files")
            }
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding mail to {}", config.listen))?;
        Ok(Self {
            listener,
            sender: Arc::new(sender),
        })
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let api = MailServer::new(grpc::MailApi::new(self.sender))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        platform::grpc::serve("mail", self.listener, api, shutdown.clone()).await?;
        tracing::info!("mail stopped");
        Ok(())
    }
}
