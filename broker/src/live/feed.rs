//! The live feed: one `Subscribe` stream from chat per broker instance (never one per
//! socket), each event serialized once and queued to the local sockets that follow its
//! conversation. Reconnects with backoff; after a gap, sockets are told to resync.

use super::{
    frames::{Outbound, PresenceView, text_line},
    hub::{Frames, Hub},
};
use backon::BackoffBuilder;
use platform::{grpc::TracedChannel, shutdown::Shutdown};
use proto::chat::v1::{SubscribeRequest, chat_client::ChatClient, live_event::Event};
use std::{sync::Arc, time::Duration};
use uuid::Uuid;

fn ids(texts: &[String]) -> Vec<Uuid> {
    texts
        .iter()
        .filter_map(|text| Uuid::try_parse(text).ok())
        .collect()
}

fn id(text: &str) -> Option<Uuid> {
    Uuid::try_parse(text).ok()
}

/// Queues one live event to the sockets that should see it.
pub fn dispatch(hub: &Hub, event: Event) {
    match event {
        Event::Message(message) => {
            let Some(conversation) = id(&message.conversation_id) else {
                return;
            };
            let json = || {
                Outbound::Message {
                    message: (&message).into(),
                }
                .to_json()
            };
            let text = || text_line(&message);
            hub.deliver(&[conversation], None, &mut Frames::new(&json, Some(&text)));
        }
        Event::Read(read) => {
            let Some(conversation) = id(&read.conversation_id) else {
                return;
            };
            let frame = |unread_count| {
                Outbound::Read {
                    conversation_id: &read.conversation_id,
                    user_id: &read.user_id,
                    up_to: &read.up_to,
                    unread_count,
                }
                .to_json()
            };
            let json = || frame(None);
            let reader = id(&read.user_id);
            hub.deliver(&[conversation], reader, &mut Frames::new(&json, None));
            // The reader's own sockets (every tab and device) learn what is left unread;
            // nobody else does.
            if let Some(reader) = reader {
                let own = || frame(Some(read.unread_count));
                hub.deliver_to_user(reader, &mut Frames::new(&own, None));
            }
        }
        Event::Typing(typing) => {
            let Some(conversation) = id(&typing.conversation_id) else {
                return;
            };
            let json = || {
                Outbound::Typing {
                    conversation_id: &typing.conversation_id,
                    user_id: &typing.user_id,
                    username: &typing.username,
                }
                .to_json()
            };
            hub.deliver(
                &[conversation],
                id(&typing.user_id),
                &mut Frames::new(&json, None),
            );
        }
        Event::Presence(change) => {
            let Some(presence) = change.presence else {
                return;
            };
            let json = || Outbound::Presence(PresenceView::from(&presence)).to_json();
            hub.deliver(
                &ids(&change.conversation_ids),
                None,
                &mut Frames::new(&json, None),
            );
        }
        Event::Membership(membership) => {
            let (Some(conversation), Some(user)) =
                (id(&membership.conversation_id), id(&membership.user_id))
            else {
                return;
            };
            hub.set_membership(user, conversation, membership.joined);
            let json = || {
                Outbound::Membership {
                    conversation_id: &membership.conversation_id,
                    user_id: &membership.user_id,
                    joined: membership.joined,
                }
                .to_json()
            };
            hub.deliver(&[conversation], None, &mut Frames::new(&json, None));
        }
        Event::ConversationDeleted(deleted) => {
            let Some(conversation) = id(&deleted.conversation_id) else {
                return;
            };
            let json = || {
                Outbound::ConversationDeleted {
                    conversation_id: &deleted.conversation_id,
                }
                .to_json()
            };
            hub.deliver(&[conversation], None, &mut Frames::new(&json, None));
            hub.forget_conversation(conversation);
        }
        Event::Resync(_) => resync(hub),
        Event::MessageEdited(message) => {
            let json = || {
                Outbound::MessageEdited {
                    message: (&message).into(),
                }
                .to_json()
            };
            deliver_about(hub, &message.conversation_id, &json);
        }
        Event::MessageDeleted(message) => {
            let json = || {
                Outbound::MessageDeleted {
                    message: (&message).into(),
                }
                .to_json()
            };
            deliver_about(hub, &message.conversation_id, &json);
        }
        Event::Reaction(reaction) => {
            let Some(conversation) = id(&reaction.conversation_id) else {
                return;
            };
            let json = || {
                Outbound::Reaction {
                    conversation_id: &reaction.conversation_id,
                    message_id: &reaction.message_id,
                    emoji: &reaction.emoji,
                    count: reaction.count,
                    user_id: &reaction.user_id,
                    added: reaction.added,
                }
                .to_json()
            };
            hub.deliver(&[conversation], None, &mut Frames::new(&json, None));
        }
        Event::Notification(notification) => {
            let Some(user) = id(&notification.user_id) else {
                return;
            };
            let json = || {
                Outbound::Notification {
                    notification: (&notification).into(),
                }
                .to_json()
            };
            hub.deliver_to_user(user, &mut Frames::new(&json, None));
        }
    }
}

/// Queues a JSON-only frame to the sockets of one conversation.
fn deliver_about(hub: &Hub, conversation_id: &str, json: &dyn Fn() -> String) {
    if let Some(conversation) = id(conversation_id) {
        hub.deliver(&[conversation], None, &mut Frames::new(json, None));
    }
}

fn resync(hub: &Hub) {
    let json = || Outbound::Resync.to_json();
    hub.broadcast(&mut Frames::new(&json, None));
}

/// Follows chat's live stream until shutdown.
pub async fn follow(
    mut chat: ChatClient<TracedChannel>,
    hub: Arc<Hub>,
    broker_id: String,
    shutdown: Shutdown,
) {
    let backoff = crate::reconnect_backoff();
    let mut delays = backoff.build();
    loop {
        let mut request = tonic::Request::new(SubscribeRequest {
            broker_id: broker_id.clone(),
        });
        request.set_timeout(platform::grpc::STREAM_DEADLINE);
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            stream = chat.subscribe(request) => stream,
        };
        match stream {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                delays = backoff.build();
                tracing::info!("following chat's live events");
                hub.set_fed(true);
                // Every socket already here missed what happened while there was no
                // feed: after a broken stream, and also on a fresh start, where sockets
                // can be accepted before the first subscription (a broker that restarted
                // lost events to them otherwise; the fault matrix caught it).
                resync(&hub);
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = stream.message() => next,
                    };
                    match next {
                        Ok(Some(event)) => {
                            if let Some(event) = event.event {
                                dispatch(&hub, event);
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(%status, "chat's live stream broke");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::debug!(%status, "cannot subscribe to chat's live events yet"),
        }
        hub.set_fed(false);
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        if !platform::shutdown::pause(&shutdown, delay).await {
            return;
        }
    }
}
