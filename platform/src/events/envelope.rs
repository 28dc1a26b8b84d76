//! Building and reading event envelopes.

use crate::trace::TraceId;
use chrono::{DateTime, Utc};
use prost::Message as _;
use proto::events::v1::{Envelope, envelope::Payload};
use uuid::Uuid;

/// The routing key (and `type`) of a payload.
pub fn routing_key(payload: &Payload) -> &'static str {
    match payload {
        Payload::UserRegistered(_) => "user.registered",
        Payload::UserLoggedIn(_) => "user.logged_in",
        Payload::UserLoggedOut(_) => "user.logged_out",
        Payload::UserDeleted(_) => "user.deleted",
        Payload::MessageSent(_) => "message.sent",
        Payload::MessageRead(_) => "message.read",
        Payload::PasswordChanged(_) => "user.password_changed",
        Payload::PasswordResetRequested(_) => "user.password_reset_requested",
        Payload::VerificationRequested(_) => "user.verification_requested",
        Payload::MessageEdited(_) => "message.edited",
        Payload::MessageDeleted(_) => "message.deleted",
        Payload::MessageMentioned(_) => "message.mentioned",
        Payload::AttachmentRemoved(_) => "attachment.removed",
    }
}

/// One event about to be written to an outbox: its envelope, encoded once.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// UUIDv7.
    pub id: Uuid,
    /// Routing key.
    pub routing_key: &'static str,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The encoded [`Envelope`].
    pub payload: Vec<u8>,
}

impl Event {
    /// An event from `producer`, happening now, in the current trace (if any).
    pub fn new(producer: &str, payload: Payload) -> Self {
        Self::at(producer, payload, Utc::now())
    }

    /// An event from `producer` that happened at `occurred_at`, in the current trace.
    pub fn at(producer: &str, payload: Payload, occurred_at: DateTime<Utc>) -> Self {
        let id = Uuid::now_v7();
        let routing_key = routing_key(&payload);
        let envelope = Envelope {
            event_id: id.to_string(),
            r#type: routing_key.to_owned(),
            occurred_at: Some(crate::grpc::timestamp(occurred_at)),
            trace_id: TraceId::current()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            producer: producer.to_owned(),
            payload: Some(payload),
        };
        Self {
            id,
            routing_key,
            occurred_at,
            payload: envelope.encode_to_vec(),
        }
    }
}

/// Why an incoming envelope cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadEnvelope {
    /// Not a protobuf `Envelope`.
    #[error("not an event envelope: {0}")]
    Undecodable(String),
    /// The event id is not a UUID.
    #[error("the event id is not a UUID")]
    BadId,
    /// No payload, or one this version does not know.
    #[error("the envelope carries no known payload")]
    NoPayload,
}

/// Decodes an envelope and checks what every consumer relies on.
pub fn decode(bytes: &[u8]) -> Result<(Uuid, Envelope), BadEnvelope> {
    let envelope =
        Envelope::decode(bytes).map_err(|error| BadEnvelope::Undecodable(error.to_string()))?;
    let id = Uuid::parse_str(&envelope.event_id).map_err(|_| BadEnvelope::BadId)?;
    if envelope.payload.is_none() {
        return Err(BadEnvelope::NoPayload);
    }
    Ok((id, envelope))
}

/// The time an envelope says its event happened.
pub fn occurred_at(envelope: &Envelope) -> Option<DateTime<Utc>> {
    let at = envelope.occurred_at.as_ref()?;
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::events::v1::UserRegistered;

    #[test]
    fn an_event_round_trips_with_its_routing_key_and_trace() {
        let payload = Payload::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7().to_string(),
            username: "ada".into(),
            email: "ada@example.com".into(),
            verify_token: String::new(),
        });
        let trace = TraceId::generate();
        let event = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(crate::trace::scope(trace, async {
                Event::new("auth", payload.clone())
            }));
        assert_eq!(event.routing_key, "user.registered");
        let (id, envelope) = decode(&event.payload).expect("our own envelope decodes");
        assert_eq!(id, event.id);
        assert_eq!(envelope.r#type, "user.registered");
        assert_eq!(envelope.producer, "auth");
        assert_eq!(envelope.trace_id, trace.to_string());
        assert_eq!(envelope.payload, Some(payload));
        let at = occurred_at(&envelope).expect("occurred_at is set");
        assert_eq!(at.timestamp_micros(), event.occurred_at.timestamp_micros());
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert!(matches!(
            decode(b"\xff\xff\xff"),
            Err(BadEnvelope::Undecodable(_))
        ));
        let no_id = Envelope::default().encode_to_vec();
        assert_eq!(decode(&no_id), Err(BadEnvelope::BadId));
        let no_payload = Envelope {
            event_id: Uuid::now_v7().to_string(),
            ..Envelope::default()
        }
        .encode_to_vec();
        assert_eq!(decode(&no_payload), Err(BadEnvelope::NoPayload));
    }
}
