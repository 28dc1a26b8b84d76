//! The gRPC face of the mail service.

use crate::{
    sender::{SendError, Sender},
    templates::TEMPLATES,
};
use proto::mail::v1::{self as pb, mail_server};
use std::{sync::Arc, time::Instant};
use tonic::{Request, Response, Status};

/// The template of an administrator's message: it names its sender.
const ADMIN_MESSAGE_TEMPLATE: &str = "message";

/// `microchat.mail.v1.Mail`.
pub struct MailApi {
    sender: Arc<Sender>,
}

impl MailApi {
    /// The API over a sender.
    pub fn new(sender: Arc<Sender>) -> Self {
        Self { sender }
    }
}

impl From<SendError> for Status {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Invalid(_) => Status::invalid_argument(error.to_string()),
            SendError::UnknownTemplate(_) => Status::not_found(error.to_string()),
            SendError::Unavailable(_) => Status::unavailable(error.to_string()),
            SendError::Refused(_) => Status::failed_precondition(error.to_string()),
        }
    }
}

fn reason(error: &SendError) -> &'static str {
    match error {
        SendError::Invalid(_) => "invalid",
        SendError::UnknownTemplate(_) => "unknown_template",
        SendError::Unavailable(_) => "unavailable",
        SendError::Refused(_) => "refused",
    }
}

impl MailApi {
    /// Renders `template` and sends it, counting and logging the outcome.
    async fn deliver(
        &self,
        to: &str,
        template: &str,
        vars: &std::collections::HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<Response<pb::SendMailResponse>, Status> {
        let started = Instant::now();
        // A template name from outside is only a metric label once it is known.
        let label = TEMPLATES
            .iter()
            .find(|known| known.name == template)
            .map_or("unknown", |known| known.name);
        // A caller that goes away mid-send does not cut it short between the SMTP
        // transaction and remembering its key: every call runs to its end on a task of its
        // own (`platform::trace::TraceLayer`, which `platform::grpc::BoundServer::serve` puts in front).
        let outcome = self.sender.send(to, template, vars, idempotency_key).await;
        metrics::histogram!("mail_send_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(sent) => {
                if sent.sent {
                    metrics::counter!("mail_sent_total", "template" => label).increment(1);
                    tracing::info!(template = label, message_id = %sent.message_id, "mail sent");
                } else {
                    tracing::info!(template = label, message_id = %sent.message_id, "mail already sent; not again");
                }
                Ok(Response::new(pb::SendMailResponse {
                    message_id: sent.message_id,
                    sent: sent.sent,
                }))
            }
            Err(error) => {
                metrics::counter!("mail_failed_total", "template" => label, "reason" => reason(&error))
                    .increment(1);
                tracing::warn!(template = label, %error, "mail not sent");
                Err(error.into())
            }
        }
    }
}

#[tonic::async_trait]
impl mail_server::Mail for MailApi {
    async fn send_mail(
        &self,
        request: Request<pb::SendMailRequest>,
    ) -> Result<Response<pb::SendMailResponse>, Status> {
        let body = request.into_inner();
        self.deliver(&body.to, &body.template, &body.vars, &body.idempotency_key)
            .await
    }

    async fn send_admin_message(
        &self,
        request: Request<pb::SendAdminMessageRequest>,
    ) -> Result<Response<pb::SendMailResponse>, Status> {
        let body = request.into_inner();
        let vars = std::collections::HashMap::from([
            ("subject".to_owned(), body.subject),
            ("message".to_owned(), body.message),
            ("sender".to_owned(), body.sender),
        ]);
        self.deliver(&body.to, ADMIN_MESSAGE_TEMPLATE, &vars, "")
            .await
    }

    async fn list_templates(
        &self,
        _request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: TEMPLATES
                .iter()
                .map(|template| pb::Template {
                    name: template.name.to_owned(),
                    vars: template.vars.iter().map(|var| (*var).to_owned()).collect(),
                })
                .collect(),
        }))
    }
}
