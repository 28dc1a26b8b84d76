//! Rendering and sending one mail, with de-duplication by idempotency key.
//!
//! A key sent once is remembered in a bounded in-memory cache (which also makes
//! concurrent calls with one key wait for each other) and in the database
//! ([`crate::sent`]), so a caller retrying a call whose answer it lost — also across a
//! restart of this service — gets the first send's Message-ID, not a second mail. The
//! listener's processed-events table keeps it from asking again once it recorded the
//! event; the Message-ID derived from the key lets the receiving side spot the rare
//! duplicate that gets past both (a crash between the SMTP server's acceptance and the
//! row's commit).

use crate::{
    config::Destination,
    sent::SentMails,
    templates::{RenderError, Templates},
};
// `message::Mailbox` is lettre's (RFC 5322's word): an address with an optional display
// name, not a folder of mails; written with its module so it reads as such.
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{self, MultiPart},
};
use quick_cache::sync::Cache;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

/// Idempotency keys remembered.
const REMEMBERED_KEYS: usize = 100_000;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The template does not exist.
    #[error("{0}")]
    UnknownTemplate(String),
    /// The transport is down or timed out: try again later.
    #[error("the mail transport is unavailable: {0}")]
    Unavailable(String),
    /// The SMTP server refused the mail for good.
    #[error("the SMTP server refused the mail: {0}")]
    Refused(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in this directory, one per Message-ID (see [`write_mail_file`]).
    Files(PathBuf),
}

/// What was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The Message-ID header.
    pub message_id: String,
    /// False when the key had been sent already.
    pub sent: bool,
}

/// Renders and sends mail.
pub struct Sender {
    from: message::Mailbox,
    templates: Templates,
    transport: Transport,
    sent_keys: Cache<String, String>,
    sent: SentMails,
}

impl Sender {
    /// A sender to `destination`, from `from`, remembering what it sent in `sent`.
    pub fn new(
        destination: &Destination,
        from: &str,
        smtp_timeout: Duration,
        sent: SentMails,
    ) -> anyhow::Result<Self> {
        let from: message::Mailbox = from
            .parse()
            .map_err(|error| anyhow::anyhow!("MAIL_FROM is not a mailbox: {error}"))?;
        let transport = match destination {
            Destination::Smtp(url) => Transport::Smtp(smtp_transport(url, smtp_timeout)?),
            Destination::Files(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|error| anyhow::anyhow!("creating {}: {error}", dir.display()))?;
                Transport::Files(dir.clone())
            }
        };
        Ok(Self {
            from,
            templates: Templates::default(),
            transport,
            sent_keys: Cache::new(REMEMBERED_KEYS),
            sent,
        })
    }

    /// Renders `template` with `vars` and sends it to `to`, once per idempotency key.
    pub async fn send(
        &self,
        to: &str,
        template: &str,
        vars: &HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<Sent, SendError> {
        validate(to, template, vars, idempotency_key)?;
        let to: message::Mailbox = to
            .parse()
            .map_err(|_| SendError::Invalid("to: not an email address".into()))?;
        let rendered = self
            .templates
            .render(template, vars)
            .map_err(|error| match error {
                RenderError::UnknownTemplate(_) => SendError::UnknownTemplate(error.to_string()),
                RenderError::MissingVar { .. } | RenderError::Failed(..) => {
                    SendError::Invalid(error.to_string())
                }
            })?;
        if idempotency_key.is_empty() {
            let message_id = format!("<{}@microchat>", uuid::Uuid::now_v7());
            self.deliver(to, rendered, &message_id).await?;
            return Ok(Sent {
                message_id,
                sent: true,
            });
        }
        let message_id = format!("<{idempotency_key}@microchat>");
        // The guard makes a concurrent send with the same key wait for this one.
        match self
            .sent_keys
            .get_value_or_guard_async(idempotency_key)
            .await
        {
            Ok(message_id) => {
                metrics::counter!("mail_deduplicated_total").increment(1);
                Ok(Sent {
                    message_id,
                    sent: false,
                })
            }
            Err(guard) => {
                // Dropping the guard without a value (on failure) lets a retry send.
                // Sent before this process started?
                let earlier = self
                    .sent
                    .message_id(idempotency_key)
                    .await
                    .map_err(|error| {
                        SendError::Unavailable(format!("the sent-mail database: {error}"))
                    })?;
                if let Some(message_id) = earlier {
                    metrics::counter!("mail_deduplicated_total").increment(1);
                    let _ = guard.insert(message_id.clone());
                    return Ok(Sent {
                        message_id,
                        sent: false,
                    });
                }
                self.deliver(to, rendered, &message_id).await?;
                // The mail is out: a failed record must not turn it into an error (the
                // caller would retry); the cache still covers this process's lifetime.
                if let Err(error) = self
                    .sent
                    .remember(idempotency_key, &message_id, chrono::Utc::now())
                    .await
                {
                    metrics::counter!("mail_record_failures_total").increment(1);
                    tracing::error!(%error, %message_id, "mail sent but not recorded; a retry after a restart would send it again");
                }
                let _ = guard.insert(message_id.clone());
                Ok(Sent {
                    message_id,
                    sent: true,
                })
            }
        }
    }

    async fn deliver(
        &self,
        to: message::Mailbox,
        rendered: crate::templates::Rendered,
        message_id: &str,
    ) -> Result<(), SendError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id.to_owned()))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|error| SendError::Invalid(error.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|error| {
                if error.is_permanent() {
                    SendError::Refused(error.to_string())
                } else {
                    SendError::Unavailable(error.to_string())
                }
            }),
            Transport::Files(dir) => write_mail_file(dir, message_id, message.formatted())
                .await
                .map_err(|error| SendError::Unavailable(format!("writing the mail: {error}"))),
        }
    }
}

/// Writes a mail as `<dir>/<id>.eml`, `<id>` its Message-ID without the brackets and the
/// domain (an idempotency key or a UUID: letters, digits, `.`, `_`, `-`), through a hidden
/// temporary file renamed into place. So a mail is whole or absent, and the same mail
/// written again — a retry after a crash between writing it and recording its key — is
/// the same file, not a second mail: with files, exactly once.
async fn write_mail_file(dir: &Path, message_id: &str, formatted: Vec<u8>) -> std::io::Result<()> {
    let id = message_id
        .trim_start_matches('<')
        .split('@')
        .next()
        .unwrap_or_default();
    let name = format!("{id}.eml");
    let temporary = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&temporary, formatted).await?;
    if let Err(error) = tokio::fs::rename(&temporary, dir.join(&name)).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(error);
    }
    Ok(())
}

/// A plain SMTP transport from `smtp://[user:pass@]host[:port]` (port 25 by default). TLS
/// is not built in: inside a cluster the SMTP relay is a neighbour (MailHog, or a relay
/// that does TLS onwards).
fn smtp_transport(
    url: &str,
    timeout: Duration,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let rest = url
        .strip_prefix("smtp://")
        .ok_or_else(|| anyhow::anyhow!("MAIL_SMTP_URL: only smtp:// is supported (no TLS)"))?
        .trim_end_matches('/');
    let (credentials, server) = match rest.rsplit_once('@') {
        Some((credentials, server)) => (Some(credentials), server),
        None => (None, rest),
    };
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("MAIL_SMTP_URL: the port is not a number"))?,
        ),
        None => (server, 25),
    };
    anyhow::ensure!(!host.is_empty(), "MAIL_SMTP_URL: the host is missing");
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(timeout));
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.to_owned(),
            password.to_owned(),
        ));
    }
    Ok(builder.build())
}

fn validate(
    to: &str,
    template: &str,
    vars: &HashMap<String, String>,
    idempotency_key: &str,
) -> Result<(), SendError> {
    let invalid = |text: &str| Err(SendError::Invalid(text.to_owned()));
    if to.is_empty() || to.len() > 254 {
        return invalid("to: required, at most 254 bytes");
    }
    if template.is_empty() || template.len() > 64 {
        return invalid("template: required, at most 64 bytes");
    }
    if vars.len() > 32 {
        return invalid("vars: at most 32");
    }
    if vars
        .iter()
        .any(|(key, value)| key.len() > 64 || value.chars().count() > 1000)
    {
        return invalid("vars: names at most 64 bytes, values at most 1,000 characters");
    }
    if idempotency_key.len() > 128
        || !idempotency_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("idempotency_key: at most 128 of A-Z a-z 0-9 . _ -");
    }
    Ok(())
}
