//! What the listener does for each event: mail through the mail service, chat sessions
//! through chat. Every call is idempotent on the callee's side too (mail takes the event
//! id as its idempotency key; chat-session writes are upserts), so an event handled again
//! after a crash between its work and its record does no harm.

use chrono::{DateTime, SecondsFormat, Utc};
use platform::grpc::{Deadlines, TracedChannel};
use proto::{
    chat::v1::{self as chat, chat_client::ChatClient},
    events::v1::{Envelope, envelope::Payload},
    mail::v1::{SendMailRequest, mail_client::MailClient},
};
use std::collections::HashMap;
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
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn caller(user_id: &str, username: &str) -> chat::Caller {
    chat::Caller {
        user_id: user_id.to_owned(),
        username: username.to_owned(),
    }
}

impl Handlers {
    /// Clients for chat and mail (connecting lazily).
    pub fn new(chat_url: &str, mail_url: &str) -> anyhow::Result<Self> {
        let deadlines = Deadlines {
            connect: std::time::Duration::from_secs(1),
            // SMTP behind mail may take a few seconds.
            request: std::time::Duration::from_secs(15),
        };
        Ok(Self {
            chat: ChatClient::new(platform::grpc::channel(chat_url, deadlines)?),
            mail: MailClient::new(platform::grpc::channel(mail_url, deadlines)?),
        })
    }

    /// Does the work of one event.
    pub async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let occurred_at = platform::events::envelope::occurred_at(envelope).ok_or_else(|| {
            HandleError::Permanent("the envelope has no valid occurred_at".into())
        })?;
        let Some(payload) = &envelope.payload else {
            return Err(HandleError::Permanent("the envelope has no payload".into()));
        };
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
                self.chat
                    .clone()
                    .end_chat_session(chat::EndChatSessionRequest {
                        session_id: logout.session_id.clone(),
                        user: Some(caller(&logout.user_id, &logout.username)),
                        ended_at: Some(timestamp(occurred_at)),
                    })
                    .await
                    .map_err(|status| HandleError::from_status("chat", &status))?;
                let client = logout.client.clone().unwrap_or_default();
                self.mail(
                    &envelope.event_id,
                    &logout.email,
                    "logout",
                    [
                        ("username", logout.username.clone()),
                        ("at", occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                        ("client_ip", client.ip),
                        ("user_agent", client.user_agent),
                    ],
                )
                .await
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
            // Nothing to start yet: counted, and recorded as processed (audit entries for
            // them arrive with the logger service).
            Payload::MessageSent(_) | Payload::MessageRead(_) => Ok(()),
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
