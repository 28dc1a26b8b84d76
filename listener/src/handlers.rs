//! What the listener does for each event: mail through the mail service, chat sessions
//! through chat, and an audit entry in the logger. Every call is idempotent on the callee's side too (mail takes the event
//! id as its idempotency key; chat-session writes are upserts), so an event handled again
//! after a crash between its work and its record does no harm.

use chrono::{SecondsFormat, Utc};
use platform::{
    batch::GroupCommit,
    grpc::{Deadlines, TracedChannel, channel, timestamp},
    service_auth::{Service, token::Identity},
};
use proto::{
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
    audits: AuditWriter,
}

fn caller(user_id: &str, username: &str) -> chat::Caller {
    chat::Caller {
        user_id: user_id.to_owned(),
        username: username.to_owned(),
    }
}

impl Handlers {
    /// Clients for chat, mail and the logger (connecting lazily), calling as `identity`.
    pub fn new(
        chat_url: &str,
        mail_url: &str,
        logger_url: &str,
        identity: &Arc<Identity>,
    ) -> anyhow::Result<Self> {
        let deadlines = Deadlines {
            connect: std::time::Duration::from_secs(1),
            // SMTP behind mail may take a few seconds.
            request: std::time::Duration::from_secs(15),
        };
        Ok(Self {
            chat: ChatClient::new(channel(
                chat_url,
                deadlines,
                identity.calling(Service::Chat),
            )?),
            mail: MailClient::new(channel(
                mail_url,
                deadlines,
                identity.calling(Service::Mail),
            )?),
            audits: audit_writer(LoggerClient::new(channel(
                logger_url,
                deadlines,
                identity.calling(Service::Logger),
            )?)),
        })
    }

    /// Whether an event calls for nothing but its audit entry: a message sent or read.
    pub fn audit_only(payload: &Payload) -> bool {
        matches!(payload, Payload::MessageSent(_) | Payload::MessageRead(_))
    }

    /// Does the work of one event.
    pub async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let occurred_at = platform::events::envelope::occurred_at(envelope).ok_or_else(|| {
            HandleError::Permanent("the envelope has no valid occurred_at".into())
        })?;
        let Some(payload) = &envelope.payload else {
            return Err(HandleError::Permanent("the envelope has no payload".into()));
        };
        if Self::audit_only(payload) {
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
                self.mail(
                    &envelope.event_id,
                    &user.email,
                    "welcome",
                    [("username", user.username.clone())],
                )
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
                let mailed = self.mail(
                    &envelope.event_id,
                    &logout.email,
                    "logout",
                    [
                        ("username", logout.username.clone()),
                        ("at", occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                        ("client_ip", client.ip),
                        ("user_agent", client.user_agent),
                    ],
                );
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
            // Returned early in `handle`: they call nothing.
            Payload::MessageSent(_) | Payload::MessageRead(_) => Ok(()),
        }
    }

    /// Stores the event's audit entry in the logger: who did what, when, in which trace
    /// (never an email address, a message body or a client's secrets).
    pub async fn audit(&self, envelope: &Envelope) -> Result<(), HandleError> {
        self.audits
            .submit(audit_entry(envelope))
            .await
            .unwrap_or_else(|| Err(Status::unavailable("the audit writer stopped")))
            .map_err(|status| HandleError::from_status("logger", &status))
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

/// Audit entries of events handled at the same time go to the logger in one batch (a
/// group commit): one `WriteLogs` call for whatever is waiting, each handler told the
/// outcome of its own entry's batch.
type AuditWriter = GroupCommit<logger::LogEntry, Result<(), Status>>;

/// Entries per audit batch, at most (the logger takes up to 1,000).
const AUDIT_BATCH: usize = 500;

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
    /// An envelope without a payload.
    None,
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
        None => ("", Details::None),
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
}
