//! Messages on their way to chat. Every send of this broker — from a socket, the text
//! protocol or REST — goes through one [`Sends`], which hands whatever is waiting to chat
//! in one `SendMessages` call (a group commit, several calls in flight): under load one
//! round trip, one request span and one HTTP/2 frame pair serve up to
//! [`pb::MAX_SENDS_PER_CALL`] sends instead of one each. At low load a batch is one send
//! and nothing waits.
//!
//! Each send keeps its own outcome (a non-member's send in the batch is refused alone)
//! and its own trace id, carried inside the batch.
//!
//! Before a send joins the queue, [`Admission`] decides whether it can be served within
//! `BROKER_SEND_QUEUE_TARGET`; one that cannot is refused at once as [`Overloaded`]
//! (never stored), so past capacity the queue stays short instead of growing without
//! bound (docs/ARCHITECTURE.md, "Overload").

use crate::admission::{Admission, Overloaded};
use platform::{batch::GroupCommit, grpc::TracedChannel, trace::TraceId};
use proto::chat::v1::{self as pb, chat_client::ChatClient, send_outcome::Outcome};
use std::{sync::Arc, time::Duration};
use tonic::{Code, Status};

/// `SendMessages` calls in flight at once. One at a time would cap the sends at one
/// batch per round trip, and a round trip is long when the broker is busy (every hop
/// waits its turn behind thousands of socket tasks); sixteen keep up with 10,000 sockets
/// sending at once on one core while bounding what chat has to take in (2,048 sends), and
/// spread a broker's sends over chat replicas.
const CALLS_IN_FLIGHT: usize = 16;

/// Why a send was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Refused before it was queued: it could not be served in time.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// Chat refused it, failed, or did not answer in time.
    #[error("chat: {0}")]
    Chat(#[from] Status),
}

/// The broker's way to send messages; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sends {
    batches: GroupCommit<pb::BatchedSend, Result<pb::Message, Status>>,
    /// Whether a new send can be served in time.
    admission: Arc<Admission>,
    /// How long a sender waits for its outcome, queueing included.
    deadline: Duration,
}

impl Sends {
    /// Starts the batching task over `chat`; a sender waits at most `deadline`, and a
    /// send expected to wait longer than `target` is refused (zero: never).
    pub fn start(chat: ChatClient<TracedChannel>, deadline: Duration, target: Duration) -> Self {
        let batches =
            GroupCommit::pipelined(pb::MAX_SENDS_PER_CALL, CALLS_IN_FLIGHT, move |sends| {
                let mut chat = chat.clone();
                async move { commit(&mut chat, sends).await }
            });
        // One full batch is always admitted: batching needs company, and a broker
        // that has not measured chat yet must not refuse a burst it can serve.
        let admission = Admission::new(target, pb::MAX_SENDS_PER_CALL, std::time::Instant::now());
        Self {
            batches,
            admission: Arc::new(admission),
            deadline,
        }
    }

    /// The gate of this broker's sends (for the runtime lag probe).
    pub fn admission(&self) -> Arc<Admission> {
        Arc::clone(&self.admission)
    }

    /// Sends one message and returns it as stored; refuses it at once when it cannot be
    /// served in time, or passes on chat's refusal of it.
    pub async fn send(&self, message: pb::SendMessageRequest) -> Result<pb::Message, SendError> {
        let ticket = self
            .admission
            .admit(std::time::Instant::now())
            .inspect_err(|refusal| {
                metrics::counter!("broker_sends_refused_total", "reason" => refusal.reason)
                    .increment(1);
            })?;
        let send = pb::BatchedSend {
            message: Some(message),
            traceparent: TraceId::current()
                .map(TraceId::to_traceparent)
                .unwrap_or_default(),
        };
        // A sender that stops waiting takes its send out of the queue with it: the batch
        // leaves it out, so a send reported as failed is never stored behind its back.
        let outcome = match tokio::time::timeout(self.deadline, self.batches.submit(send)).await {
            Ok(Some(outcome)) => {
                ticket.finished();
                outcome
            }
            Ok(None) => Err(Status::unavailable("chat: the sender stopped")),
            Err(_) => Err(Status::deadline_exceeded("chat did not answer in time")),
        };
        Ok(outcome?)
    }
}

/// One call for the whole batch; one outcome per send, in order.
async fn commit(
    chat: &mut ChatClient<TracedChannel>,
    sends: Vec<pb::BatchedSend>,
) -> Vec<Result<pb::Message, Status>> {
    let count = sends.len();
    metrics::histogram!("broker_send_batch_size").record(count as f64);
    match chat.send_messages(pb::SendMessagesRequest { sends }).await {
        Ok(answer) => outcomes(answer.into_inner(), count),
        // The call as a whole failed (chat unreachable, deadline): every send with it.
        Err(status) => vec![Err(status); count],
    }
}

/// Chat's answer as one result per send; a short answer fails the sends it left out.
fn outcomes(answer: pb::SendMessagesResponse, count: usize) -> Vec<Result<pb::Message, Status>> {
    let mut outcomes: Vec<_> = answer
        .outcomes
        .into_iter()
        .take(count)
        .map(|outcome| match outcome.outcome {
            Some(Outcome::Sent(message)) => Ok(message),
            Some(Outcome::Refused(refusal)) => {
                Err(Status::new(Code::from(refusal.code), refusal.message))
            }
            None => Err(Status::internal("chat gave no outcome for a send")),
        })
        .collect();
    outcomes.resize_with(count, || {
        Err(Status::internal(
            "chat answered fewer sends than it was given",
        ))
    });
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_send_gets_its_own_outcome_and_a_short_answer_fails_the_rest() {
        let sent = pb::Message {
            id: "m1".into(),
            ..Default::default()
        };
        let answer = pb::SendMessagesResponse {
            outcomes: vec![
                pb::SendOutcome {
                    outcome: Some(Outcome::Sent(sent.clone())),
                },
                pb::SendOutcome {
                    outcome: Some(Outcome::Refused(pb::Refusal {
                        code: Code::PermissionDenied as i32,
                        message: "not a member".into(),
                    })),
                },
                pb::SendOutcome { outcome: None },
            ],
        };
        let outcomes = outcomes(answer, 4);
        assert_eq!(outcomes.len(), 4);
        assert_eq!(outcomes[0].as_ref().expect("the first was sent"), &sent);
        let refused = outcomes[1].as_ref().expect_err("the second was refused");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(refused.message(), "not a member");
        for missing in &outcomes[2..] {
            assert_eq!(
                missing.as_ref().expect_err("no outcome").code(),
                Code::Internal
            );
        }
    }

    #[test]
    fn a_longer_answer_than_the_batch_is_cut_to_it() {
        let answer = pb::SendMessagesResponse {
            outcomes: vec![pb::SendOutcome { outcome: None }; 3],
        };
        assert_eq!(outcomes(answer, 2).len(), 2);
    }
}
