//! What the listener does for each event: mail through the mail service, chat sessions
//! through chat, and an audit entry in the logger. Every call is idempotent on the callee's side too (mail takes the event
//! id as its idempotency key; chat-session writes are upserts), so an event handled again
//! after a crash between its work and its record does no harm.

use chrono::{SecondsFormat, Utc};
use platform::{
    batch::GroupCommit,
    grpc::{Deadlines, Dialer, TracedChannel, timestamp},
    service_auth::{Service, token::Identity},
};
mod digest;

pub use digest::{Digests, run as send_digests};

use proto::{
    auth::v1::auth_client::AuthClient,
    chat::v1::{self as chat, chat_client::ChatClient},
    events::v1::{Envelope, envelope::Payload},
    logger::v1::{self as logger, logger_client::LoggerClient},
    mail::v1::{SendMailRequest, mail_client::MailClient},
};
use std::{collections::HashMap, sync::Arc};
use tonic::{Code, Status};

/// Why an event's work did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying: a service is down or overloaded.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (a bad payload, a refused address): park it at once.
    #[error("{0}")]
    Permanent(String),
}

impl HandleError {
    fn from_status(service: &str, status: &Status) -> Self {
        let text = format!("{service}: {:?}: {}", status.code(), status.message());
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::OutOfRange => Self::Permanent(text),
            _ => Self::Transient(text),
        }
    }
}

/// The clients the work needs.
#[derive(Clone)]
pub struct Handlers {
    chat: ChatClient<TracedChannel>,
    mail: MailClient<TracedChannel>,
    /// For the address (and whether it is verified) of a user a digest mails.
    auth: AuthClient<TracedChannel>,
    audits: AuditWriter,
    /// The pages mail links point at.
    pages: MailLinks,
    /// Pending mention digests; without them, mentions start no mail.
    digests: Option<Digests>,
}

/// Links in mails, to the web pages (a token goes in the fragment, which browsers send
/// to no server and put in no Referer).
#[derive(Debug, Clone)]
pub struct MailLinks {
    base: String,
}

impl MailLinks {
    /// Links under `base` (`http[s]://host[:port][/path]`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim().trim_end_matches('/');
        let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
        if !scheme_ok || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
            anyhow::bail!("the pages URL must be http[s]://host[:port][/path], got {base:?}");
        }
        Ok(Self {
            base: base.to_owned(),
        })
    }

    /// A page with a token: `{base}{path}#token={token}`.
    pub fn with_token(&self, path: &str, token: &str) -> String {
        format!("{}{path}#token={token}", self.base)
    }

    /// A page.
    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Where the services the listener calls are.
#[derive(Debug, Clone, Copy)]
pub struct ServiceUrls<'a> {
    /// Chat's gRPC URL.
    pub chat: &'a str,
    /// Mail's.
    pub mail: &'a str,
    /// The logger's.
    pub logger: &'a str,
    /// Auth's.
    pub auth: &'a str,
}

fn caller(user_id: &str, username: &str) -> chat::Caller {
    chat::Caller {
        user_id: user_id.to_owned(),
        username: username.to_owned(),
    }
}

impl Handlers {
    /// Clients for chat, mail, auth and the logger (reached through `dialer`, connecting
    /// lazily), calling as `identity`; mail links point at the pages at `pages_url`.
    pub fn new(
        urls: ServiceUrls<'_>,
        dialer: &Dialer,
        identity: &Arc<Identity>,
        pages_url: &str,
    ) -> anyhow::Result<Self> {
        let ServiceUrls {
            chat: chat_url,
            mail: mail_url,
            logger: logger_url,
            auth: auth_url,
        } = urls;
        let deadlines = Deadlines {
            connect: std::time::Duration::from_secs(1),
            // SMTP behind mail may take a few seconds.
            request: std::time::Duration::from_secs(15),
        };
        Ok(Self {
            chat: ChatClient::new(dialer.channel(
                chat_url,
                deadlines,
                identity.calling(Service::Chat),
            )?),
            mail: MailClient::new(dialer.channel(
                mail_url,
                deadlines,
                identity.calling(Service::Mail),
            )?),
            auth: AuthClient::new(dialer.channel(
                auth_url,
                deadlines,
                identity.calling(Service::Auth),
            )?),
            audits: audit_writer(LoggerClient::new(dialer.channel(
                logger_url,
                deadlines,
                identity.calling(Service::Logger),
            )?)),
            pages: MailLinks::new(pages_url)?,
            digests: None,
        })
    }

    /// Mentions of offline users start digests kept in `digests`.
    #[must_use]
    pub fn with_digests(mut self, digests: Digests) -> Self {
        self.digests = Some(digests);
        self
    }

    /// Whether an event gets an audit entry: the security-relevant ones — accounts,
    /// sessions, passwords, verification — and the edits and deletions of messages (they
    /// change what others read, and a moderator's deletion is an act of authority).
    ///
    /// Not a message sent or read, nor a mention: a stored message is its own record
    /// (its row in chat, with sender and time), a read marker is chat's too, and an entry
    /// per message made the audit log two and a half times the size of the messages it
    /// described (issue 29, docs/PERFORMANCE.md "Resource bounds over time").
    pub fn audited(envelope: &Envelope) -> bool {
        match &envelope.payload {
            Some(Payload::MessageMentioned(_) | Payload::AttachmentRemoved(_)) => false,
            Some(payload) => !Self::unattended(payload),
            None => true,
        }
    }

    /// Whether an event calls for nothing at all, neither work nor an audit entry: a
    /// message sent or read, which chat no longer publishes (an older chat's, still
    /// queued), acknowledged as it comes.
    pub fn unattended(payload: &Payload) -> bool {
        matches!(payload, Payload::MessageSent(_) | Payload::MessageRead(_))
    }

    /// Whether an event calls for nothing but its audit entry: a message edited or
    /// deleted.
    pub fn audit_only(payload: &Payload) -> bool {
        matches!(
            payload,
            Payload::MessageEdited(_) | Payload::MessageDeleted(_)
        )
    }

    /// Does the work of one event.
    pub async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let occurred_at = platform::events::envelope::occurred_at(envelope).ok_or_else(|| {
            HandleError::Permanent("the envelope has no valid occurred_at".into())
        })?;
        let Some(payload) = &envelope.payload else {
            return Err(HandleError::Permanent("the envelope has no payload".into()));
        };
        if Self::audit_only(payload) || Self::unattended(payload) {
            return Ok(());
        }
        // The calls' futures are large (several KiB): boxed, so the task of every event
        // (most are messages, which call nothing) does not carry room for them.
        Box::pin(self.call_services(envelope, payload, occurred_at)).await
    }

    /// The calls to chat and mail that a user event starts.
    async fn call_services(
        &self,
        envelope: &Envelope,
        payload: &Payload,
        occurred_at: chrono::DateTime<Utc>,
    ) -> Result<(), HandleError> {
        match payload {
            Payload::UserRegistered(user) => {
                // The registration mail is the verification mail: the one mail an
                // unverified address gets.
                let verify_url = if user.verify_token.is_empty() {
                    String::new()
                } else {
                    self.pages.with_token(VERIFY_PAGE, &user.verify_token)
                };
                self.mail(
                    &envelope.event_id,
                    &user.email,
                    "welcome",
                    [
                        ("username", user.username.clone()),
                        ("verify_url", verify_url),
                    ],
                )
                .await
            }
            Payload::PasswordChanged(_)
            | Payload::PasswordResetRequested(_)
            | Payload::VerificationRequested(_) => {
                self.mail_for_passwords(&envelope.event_id, payload, occurred_at)
                    .await
            }
            Payload::UserLoggedIn(login) => {
                let client = login.client.clone().unwrap_or_default();
                let session = chat::ChatSession {
                    session_id: login.session_id.clone(),
                    user: Some(caller(&login.user_id, &login.username)),
                    started_at: Some(timestamp(occurred_at)),
                    expires_at: login.expires_at,
                    client_ip: client.ip,
                    user_agent: client.user_agent,
                };
                self.chat
                    .clone()
                    .start_chat_session(chat::StartChatSessionRequest {
                        session: Some(session),
                    })
                    .await
                    .map_err(|status| HandleError::from_status("chat", &status))?;
                Ok(())
            }
            Payload::UserLoggedOut(logout) => {
                // Two independent pieces of work, both idempotent: one service being
                // down must not hold up the other (chat down must not delay the mail).
                // A retry repeats both; mail de-duplicates by the event id.
                let mut chat = self.chat.clone();
                let ended = async move {
                    chat.end_chat_session(chat::EndChatSessionRequest {
                        session_id: logout.session_id.clone(),
                        user: Some(caller(&logout.user_id, &logout.username)),
                        ended_at: Some(timestamp(occurred_at)),
                    })
                    .await
                    .map_err(|status| HandleError::from_status("chat", &status))
                };
                let client = logout.client.clone().unwrap_or_default();
                // Only verified addresses get it; a silent logout (a password change
                // ended the session) has a mail of its own.
                let mailed = async {
                    if !logout.email_verified || logout.silent {
                        return Ok(());
                    }
                    self.mail(
                        &envelope.event_id,
                        &logout.email,
                        "logout",
                        [
                            ("username", logout.username.clone()),
                            ("at", occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                            ("client_ip", client.ip),
                            ("user_agent", client.user_agent),
                            ("password_url", self.pages.page(PASSWORD_PAGE)),
                        ],
                    )
                    .await
                };
                let (ended, mailed) = tokio::join!(ended, mailed);
                ended.and(mailed)
            }
            Payload::UserDeleted(user) => {
                self.chat
                    .clone()
                    .forget_chat_sessions(chat::ForgetChatSessionsRequest {
                        user_id: user.user_id.clone(),
                    })
                    .await
                    .map_err(|status| HandleError::from_status("chat", &status))?;
                Ok(())
            }
            Payload::MessageMentioned(mention) => self.note_mention(mention, occurred_at).await,
            Payload::AttachmentRemoved(removed) => {
                // The rows are gone: chat deletes the objects (idempotent, so a retry or a
                // second delivery deletes nothing twice).
                for ids in removed.attachment_ids.chunks(PURGE_AT_ONCE) {
                    self.chat
                        .clone()
                        .purge_attachments(chat::PurgeAttachmentsRequest {
                            attachment_ids: ids.to_vec(),
                        })
                        .await
                        .map_err(|status| HandleError::from_status("chat", &status))?;
                }
                Ok(())
            }
            // Returned early in `handle`: they call nothing.
            Payload::MessageSent(_)
            | Payload::MessageRead(_)
            | Payload::MessageEdited(_)
            | Payload::MessageDeleted(_) => Ok(()),
        }
    }

    /// Stores the event's audit entry in the logger: who did what, when, in which trace
    /// (never an email address, a message body or a client's secrets).
    ///
    /// A message sent or read and a mention have none (see [`Handlers::audited`]): they
    /// change no one's access or account, and an entry per message or per mentioned user
    /// would grow the audit log with the traffic instead of with what it is for.
    pub async fn audit(&self, envelope: &Envelope) -> Result<(), HandleError> {
        if !Self::audited(envelope) {
            return Ok(());
        }
        self.audits
            .submit(audit_entry(envelope))
            .await
            .unwrap_or_else(|| Err(Status::unavailable("the audit writer stopped")))
            .map_err(|status| HandleError::from_status("logger", &status))
    }

    /// The mails of password and verification events.
    async fn mail_for_passwords(
        &self,
        event_id: &str,
        payload: &Payload,
        occurred_at: chrono::DateTime<Utc>,
    ) -> Result<(), HandleError> {
        let expiry = |at: &Option<prost_types::Timestamp>| {
            at.as_ref()
                .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0))
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        match payload {
            Payload::VerificationRequested(asked) => {
                self.mail(
                    event_id,
                    &asked.email,
                    "verify_email",
                    [
                        ("username", asked.username.clone()),
                        ("email", asked.email.clone()),
                        (
                            "verify_url",
                            self.pages.with_token(VERIFY_PAGE, &asked.token),
                        ),
                        ("expires_at", expiry(&asked.expires_at)),
                    ],
                )
                .await
            }
            Payload::PasswordResetRequested(asked) => {
                self.mail(
                    event_id,
                    &asked.email,
                    "password_reset",
                    [
                        ("username", asked.username.clone()),
                        ("reset_url", self.pages.with_token(RESET_PAGE, &asked.token)),
                        ("expires_at", expiry(&asked.expires_at)),
                    ],
                )
                .await
            }
            Payload::PasswordChanged(changed) if changed.email_verified => {
                let client = changed.client.clone().unwrap_or_default();
                self.mail(
                    event_id,
                    &changed.email,
                    "password_changed",
                    [
                        ("username", changed.username.clone()),
                        ("at", occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                        ("client_ip", client.ip),
                        ("user_agent", client.user_agent),
                        ("by_reset", changed.by_reset.to_string()),
                        ("reset_url", self.pages.page(FORGOT_PAGE)),
                    ],
                )
                .await
            }
            // An unverified address gets no mail but the verification.
            _ => Ok(()),
        }
    }

    async fn mail<const N: usize>(
        &self,
        event_id: &str,
        to: &str,
        template: &str,
        vars: [(&str, String); N],
    ) -> Result<(), HandleError> {
        let request = SendMailRequest {
            to: to.to_owned(),
            template: template.to_owned(),
            vars: vars
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect::<HashMap<_, _>>(),
            idempotency_key: event_id.to_owned(),
        };
        self.mail
            .clone()
            .send_mail(request)
            .await
            .map_err(|status| HandleError::from_status("mail", &status))?;
        Ok(())
    }
}

/// The page that verifies an address with the token of its link.
const VERIFY_PAGE: &str = "/verify-email";
/// The page that sets a new password with the token of a reset link.
const RESET_PAGE: &str = "/reset-password";
/// The page that asks for a reset link.
const FORGOT_PAGE: &str = "/forgot-password";
/// The page that changes the password (signed in).
const PASSWORD_PAGE: &str = "/account/password";

/// Audit entries of events handled at the same time go to the logger in one batch (a
/// group commit): one `WriteLogs` call for whatever is waiting, each handler told the
/// outcome of its own entry's batch.
type AuditWriter = GroupCommit<logger::LogEntry, Result<(), Status>>;

/// Entries per audit batch, at most (the logger takes up to 1,000).
const AUDIT_BATCH: usize = 500;

/// Most attachment ids per `PurgeAttachments` call (chat takes up to 10,000).
const PURGE_AT_ONCE: usize = 1_000;

fn audit_writer(client: LoggerClient<TracedChannel>) -> AuditWriter {
    GroupCommit::start(AUDIT_BATCH, move |entries: Vec<logger::LogEntry>| {
        let mut client = client.clone();
        async move {
            let count = entries.len();
            let written = client
                .write_logs(tokio_stream::once(logger::WriteLogsRequest { entries }))
                .await
                .map(drop);
            vec![written; count]
        }
    })
}

/// The details of an audit entry, serialized straight to JSON text (no value tree).
#[derive(serde::Serialize)]
struct AuditData<'a> {
    event_id: &'a str,
    r#type: &'a str,
    producer: &'a str,
    occurred_at: Option<String>,
    details: Details<'a>,
}

/// What an audit entry says about its event, by type.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Details<'a> {
    User {
        username: &'a str,
    },
    Session {
        username: &'a str,
        session_id: &'a str,
        client_ip: Option<&'a str>,
    },
    Message {
        message_id: &'a str,
        conversation_id: &'a str,
        body_chars: u32,
    },
    Read {
        conversation_id: &'a str,
        up_to: &'a str,
    },
    Mention {
        message_id: &'a str,
        conversation_id: &'a str,
        user_id: &'a str,
    },
    /// An envelope without a payload.
    None,
    /// A message deleted: whose it was, and whether a moderator deleted it.
    Deleted {
        message_id: &'a str,
        conversation_id: &'a str,
        sender_id: &'a str,
        moderator: bool,
    },
}

/// The audit entry of one event: `audit <type>`, about the user it concerns.
pub fn audit_entry(envelope: &Envelope) -> logger::LogEntry {
    fn client_ip(client: &Option<proto::events::v1::Client>) -> Option<&str> {
        client.as_ref().map(|client| client.ip.as_str())
    }
    let (user_id, details) = match &envelope.payload {
        Some(Payload::UserRegistered(user)) => (
            user.user_id.as_str(),
            Details::User {
                username: &user.username,
            },
        ),
        Some(Payload::UserLoggedIn(login)) => (
            login.user_id.as_str(),
            Details::Session {
                username: &login.username,
                session_id: &login.session_id,
                client_ip: client_ip(&login.client),
            },
        ),
        Some(Payload::UserLoggedOut(logout)) => (
            logout.user_id.as_str(),
            Details::Session {
                username: &logout.username,
                session_id: &logout.session_id,
                client_ip: client_ip(&logout.client),
            },
        ),
        Some(Payload::UserDeleted(user)) => (
            user.user_id.as_str(),
            Details::User {
                username: &user.username,
            },
        ),
        // Never the token: an audit entry outlives the link, and anyone reading logs
        // must not be able to use it.
        Some(Payload::PasswordChanged(changed)) => (
            changed.user_id.as_str(),
            Details::User {
                username: &changed.username,
            },
        ),
        Some(Payload::PasswordResetRequested(asked)) => (
            asked.user_id.as_str(),
            Details::User {
                username: &asked.username,
            },
        ),
        Some(Payload::VerificationRequested(asked)) => (
            asked.user_id.as_str(),
            Details::User {
                username: &asked.username,
            },
        ),
        // Not written since issue 29 (see `Handlers::audited`); described for completeness.
        Some(Payload::MessageSent(message)) => (
            message.sender_id.as_str(),
            Details::Message {
                message_id: &message.message_id,
                conversation_id: &message.conversation_id,
                body_chars: message.body_chars,
            },
        ),
        Some(Payload::MessageRead(read)) => (
            read.user_id.as_str(),
            Details::Read {
                conversation_id: &read.conversation_id,
                up_to: &read.up_to,
            },
        ),
        // Who edited (the sender), never the body, old or new.
        Some(Payload::MessageEdited(edited)) => (
            edited.editor_id.as_str(),
            Details::Message {
                message_id: &edited.message_id,
                conversation_id: &edited.conversation_id,
                body_chars: edited.body_chars,
            },
        ),
        Some(Payload::MessageDeleted(deleted)) => (
            deleted.deleted_by.as_str(),
            Details::Deleted {
                message_id: &deleted.message_id,
                conversation_id: &deleted.conversation_id,
                sender_id: &deleted.sender_id,
                moderator: deleted.moderator,
            },
        ),
        // Not written (see `Handlers::audited`); described for completeness.
        Some(Payload::MessageMentioned(mention)) => (
            mention.sender_id.as_str(),
            Details::Mention {
                message_id: &mention.message_id,
                conversation_id: &mention.conversation_id,
                user_id: &mention.user_id,
            },
        ),
        // An attachment's removal is not written (see `Handlers::audited`): the deletion
        // that removed the files has its own entry.
        Some(Payload::AttachmentRemoved(_)) | None => ("", Details::None),
    };
    let data = AuditData {
        event_id: &envelope.event_id,
        r#type: &envelope.r#type,
        producer: &envelope.producer,
        occurred_at: platform::events::envelope::occurred_at(envelope)
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        details,
    };
    logger::LogEntry {
        // The event's id, so the logger stores the entry once however often the event
        // is delivered (idempotent by event id, as every consumer is).
        id: envelope.event_id.clone(),
        name: format!("audit {}", envelope.r#type),
        data: serde_json::to_string(&data).expect("audit details always serialize"),
        level: logger::Level::Info as i32,
        service: "listener".to_owned(),
        user_id: user_id.to_owned(),
        trace_id: envelope.trace_id.clone(),
        created_at: Some(timestamp(Utc::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::events::v1::{UserLoggedIn, UserRegistered};

    fn envelope(payload: Payload) -> Envelope {
        Envelope {
            event_id: uuid::Uuid::now_v7().to_string(),
            r#type: platform::events::routing_key(&payload).to_owned(),
            occurred_at: Some(timestamp(Utc::now())),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            producer: "auth".into(),
            payload: Some(payload),
        }
    }

    #[test]
    fn an_audit_entry_names_the_event_its_user_and_trace_but_no_email() {
        let user_id = uuid::Uuid::now_v7().to_string();
        let event = envelope(Payload::UserRegistered(UserRegistered {
            user_id: user_id.clone(),
            username: "ada".into(),
            email: "ada@example.com".into(),
            verify_token: "a-secret-token".into(),
        }));
        let entry = audit_entry(&event);
        assert_eq!(entry.name, "audit user.registered");
        assert_eq!(entry.service, "listener");
        assert_eq!(entry.user_id, user_id);
        assert_eq!(entry.trace_id, event.trace_id);
        let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
        assert_eq!(data["event_id"], event.event_id);
        assert_eq!(data["details"]["username"], "ada");
        assert!(!entry.data.contains("ada@example.com"), "{}", entry.data);
        assert!(!entry.data.contains("a-secret-token"), "{}", entry.data);
    }

    #[test]
    fn a_reset_audit_names_the_user_but_never_the_token() {
        let event = envelope(Payload::PasswordResetRequested(
            proto::events::v1::PasswordResetRequested {
                user_id: "u1".into(),
                username: "ada".into(),
                email: "ada@example.com".into(),
                token: "reset-secret".into(),
                expires_at: None,
            },
        ));
        let entry = audit_entry(&event);
        assert_eq!(entry.name, "audit user.password_reset_requested");
        assert_eq!(entry.user_id, "u1");
        assert!(!entry.data.contains("reset-secret"), "{}", entry.data);
        assert!(!entry.data.contains("ada@example.com"), "{}", entry.data);
    }

    #[test]
    fn mail_links_put_the_token_in_the_fragment() {
        let links = MailLinks::new("https://chat.example.com/").expect("valid");
        assert_eq!(
            links.with_token(RESET_PAGE, "abc"),
            "https://chat.example.com/reset-password#token=abc"
        );
        assert!(MailLinks::new("ftp://x").is_err());
        assert!(MailLinks::new("https://a b").is_err());
    }

    #[test]
    fn a_message_audit_names_the_message_and_its_length_but_not_its_body() {
        let event = envelope(Payload::MessageSent(proto::events::v1::MessageSent {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            sender_id: "u1".into(),
            body_chars: 12,
        }));
        let entry = audit_entry(&event);
        assert_eq!(entry.user_id, "u1");
        let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
        assert_eq!(data["type"], "message.sent");
        assert_eq!(
            data["details"],
            serde_json::json!({ "message_id": "m1", "conversation_id": "c1", "body_chars": 12 })
        );
        assert!(
            data["occurred_at"]
                .as_str()
                .is_some_and(|at| at.ends_with('Z'))
        );
    }

    #[test]
    fn messages_sent_or_read_call_for_nothing_but_account_events_and_edits_are_audited() {
        let sent = envelope(Payload::MessageSent(proto::events::v1::MessageSent {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            sender_id: "u1".into(),
            body_chars: 12,
        }));
        let read = envelope(Payload::MessageRead(proto::events::v1::MessageRead {
            conversation_id: "c1".into(),
            user_id: "u1".into(),
            up_to: "m1".into(),
        }));
        for event in [&sent, &read] {
            assert!(!Handlers::audited(event), "{}", event.r#type);
            assert!(Handlers::unattended(event.payload.as_ref().unwrap()));
            assert!(!Handlers::audit_only(event.payload.as_ref().unwrap()));
        }
        let edited = envelope(Payload::MessageEdited(proto::events::v1::MessageEdited {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            editor_id: "u1".into(),
            body_chars: 7,
        }));
        let registered = envelope(Payload::UserRegistered(UserRegistered {
            user_id: "u1".into(),
            username: "ada".into(),
            ..UserRegistered::default()
        }));
        for event in [&edited, &registered] {
            assert!(Handlers::audited(event), "{}", event.r#type);
            assert!(!Handlers::unattended(event.payload.as_ref().unwrap()));
        }
    }

    #[test]
    fn a_login_audit_names_the_session_and_client() {
        let event = envelope(Payload::UserLoggedIn(UserLoggedIn {
            user_id: uuid::Uuid::now_v7().to_string(),
            username: "ada".into(),
            session_id: "s1".into(),
            client: Some(proto::events::v1::Client {
                ip: "127.0.0.1".into(),
                user_agent: "test".into(),
            }),
            ..UserLoggedIn::default()
        }));
        let data: serde_json::Value = serde_json::from_str(&audit_entry(&event).data).unwrap();
        assert_eq!(data["details"]["session_id"], "s1");
        assert_eq!(data["details"]["client_ip"], "127.0.0.1");
    }

    #[test]
    fn edit_and_delete_audits_name_who_acted_and_how_but_never_a_body() {
        let edited = envelope(Payload::MessageEdited(proto::events::v1::MessageEdited {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            editor_id: "u1".into(),
            body_chars: 7,
        }));
        let entry = audit_entry(&edited);
        assert_eq!(entry.name, "audit message.edited");
        assert_eq!(entry.user_id, "u1");
        let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
        assert_eq!(
            data["details"],
            serde_json::json!({ "message_id": "m1", "conversation_id": "c1", "body_chars": 7 })
        );
        let deleted = envelope(Payload::MessageDeleted(proto::events::v1::MessageDeleted {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            sender_id: "u1".into(),
            deleted_by: "admin".into(),
            moderator: true,
        }));
        let entry = audit_entry(&deleted);
        assert_eq!(entry.name, "audit message.deleted");
        assert_eq!(entry.user_id, "admin", "the entry is about who acted");
        let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
        assert_eq!(
            data["details"],
            serde_json::json!({
                "message_id": "m1", "conversation_id": "c1", "sender_id": "u1", "moderator": true
            })
        );
        assert!(Handlers::audit_only(edited.payload.as_ref().unwrap()));
        assert!(Handlers::audit_only(deleted.payload.as_ref().unwrap()));
    }
}
