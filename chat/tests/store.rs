//! The chat store contract, written once and checked against both backends: SQLite (the
//! embedded run) and PostgreSQL (dev stack, cluster). Each behaviour below is one
//! function over `&ChatStore`; `on_both_backends!` gives it a `#[tokio::test]` per
//! backend (`sqlite::<behaviour>` and `postgres::<behaviour>`), each on a database of its own.
//! Without a reachable PostgreSQL the `postgres::` tests say they are skipped (outside CI).

use chat::{
    domain::{
        Attachment, Conversation, ConversationView, Kind, Message, Presence, Reaction,
        ReactionEmoji, RoomName, UserRef, direct_key,
    },
    mentions::Notification,
    search::{SearchHit, SearchQuery, SearchText},
    store::{
        self, ChatSession, ChatStore, Connection, Deleted, Edited, Inserted, NewMention,
        NewMessage, NewUpload, NotificationPage, Page, Reacted, StoreError, Upload,
    },
};
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use platform::{
    events::Event,
    sql::{Backend, Pool},
    testing::{OutboxRow, TestDatabase, outbox_rows},
};
use proto::events::v1::{self as events, envelope::Payload};
use std::ops::Deref;
use uuid::Uuid;

/// A migrated store on a database that lives as long as this does.
struct TestStore {
    store: ChatStore,
    database: TestDatabase,
}

/// A behaviour over `&ChatStore` takes a `&TestStore` as its store.
impl Deref for TestStore {
    type Target = ChatStore;

    fn deref(&self) -> &ChatStore {
        &self.store
    }
}

impl TestStore {
    /// A store on a fresh SQLite file.
    async fn sqlite() -> Self {
        Self::open(TestDatabase::sqlite("chat")).await
    }

    /// A store on a fresh PostgreSQL database; `None` when no server answers (outside CI).
    async fn postgres() -> Option<Self> {
        Some(Self::open(TestDatabase::postgres().await?).await)
    }

    async fn open(database: TestDatabase) -> Self {
        let store = store::connect(database.url())
            .await
            .expect("a fresh test database opens and migrates");
        Self { store, database }
    }

    /// A pool of its own on the store's database, for SQL the store does not offer (the
    /// store keeps its pools to itself).
    async fn sql(&self) -> Pool {
        platform::sql::connect_paged(self.database.url(), store::SQLITE_PAGE_SIZE)
            .await
            .expect("the test database opens again")
    }
}

/// One `#[tokio::test]` per behaviour and backend.
macro_rules! on_both_backends {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let store = super::TestStore::sqlite().await;
                    super::$behaviour(&store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(store) = super::TestStore::postgres().await else {
                        eprintln!(
                            "skipped postgres::{}: PostgreSQL is not reachable",
                            stringify!($behaviour)
                        );
                        return;
                    };
                    super::$behaviour(&store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    room_is_created_with_its_creator_as_member,
    room_name_taken_is_refused,
    rooms_are_listed_by_name_with_counts_and_joined_flags,
    joining_and_leaving_twice_change_nothing_the_second_time,
    opening_a_direct_twice_gives_one_conversation,
    opening_a_direct_from_both_sides_at_once_gives_one_conversation,
    conversations_of_a_user_are_listed_latest_activity_first,
    non_member_cannot_post,
    a_batch_stores_members_messages_and_refuses_the_rest_alone,
    message_ids_made_in_sequence_sort_in_time_order,
    history_pages_back_return_every_message_once_despite_new_ones,
    history_pages_forward_return_every_message_once_including_new_ones,
    history_between_two_messages_is_the_gap_oldest_first,
    message_is_found_only_in_its_own_conversation,
    read_marker_never_moves_back,
    presence_counts_sockets_over_two_brokers,
    closing_the_last_socket_gives_last_seen,
    resetting_a_broker_keeps_only_the_listed_sockets,
    presence_of_unknown_users_is_omitted,
    brokers_unseen_by_every_instance_are_found,
    deleting_user_data_removes_directs_and_presence_but_keeps_rooms,
    deleting_user_data_twice_deletes_nothing_the_second_time,
    timestamps_round_trip_to_the_microsecond,
    migrating_again_keeps_the_data,
    a_sent_message_writes_no_event_only_its_stored_mentions_do,
    a_batch_whose_event_cannot_be_written_stores_nothing,
    a_read_writes_no_event,
    a_chat_session_starts_once_and_ends_once,
    an_end_that_overtakes_its_start_keeps_the_session_ended,
    open_chat_sessions_are_listed_by_user_without_ended_ones,
    forgetting_a_users_chat_sessions_keeps_everyone_elses,
    only_the_sender_edits_and_each_edit_writes_its_event,
    a_deleted_message_stays_in_its_place_as_a_tombstone,
    only_the_sender_or_a_moderator_deletes_and_each_deletion_writes_its_event,
    reactions_are_idempotent_and_counted_with_me_over_a_page,
    no_reaction_on_a_tombstone_or_another_conversations_message,
    unread_counts_are_others_messages_after_the_marker,
    unread_counts_stop_at_the_cap,
    unread_counts_of_every_conversation_come_from_one_call,
    mentions_are_stored_with_their_message_and_events_in_one_transaction,
    mentions_of_a_message_that_is_not_stored_are_not_stored,
    members_are_found_by_name_only_in_their_conversation,
    notifications_page_newest_first_and_hide_what_a_leaver_may_not_read,
    marking_notifications_read_touches_only_ones_own,
    search_ranks_better_matches_first_and_ties_newest_first,
    search_snippets_locate_the_matched_words,
    search_pages_cover_every_hit_once_despite_new_messages,
    search_never_shows_a_conversation_of_others,
    search_treats_query_syntax_as_text,
    search_follows_edits_tombstones_and_deletions,
    search_ranks_only_the_newest_window_of_matches,
    search_answers_every_text_the_parser_takes,
    an_upload_is_ready_once_finished_and_claimed_by_one_message,
    only_the_uploaders_own_unclaimed_uploads_to_the_conversation_are_claimed,
    a_refused_claim_undoes_the_claims_before_it,
    a_non_member_cannot_upload,
    uploads_count_against_the_quota,
    deleting_a_message_removes_its_attachments_with_their_event,
    unclaimed_uploads_expire_with_their_event,
    deleting_user_data_removes_their_uploads_and_those_of_their_directs,
    a_thumbnail_is_recorded_only_while_its_attachment_exists,
);

// ---------------------------------------------------------------------------------------
// Test data

/// Now, at the precision both databases keep.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn user(username: &str) -> UserRef {
    UserRef {
        id: Uuid::now_v7(),
        username: username.to_owned(),
    }
}

fn room(name: &str) -> Conversation {
    Conversation {
        id: Uuid::now_v7(),
        kind: Kind::Room,
        name: RoomName::parse(name)
            .expect("test room names are valid")
            .as_str()
            .to_owned(),
        topic: format!("all about {name}"),
        created_at: now(),
    }
}

fn direct() -> Conversation {
    Conversation {
        id: Uuid::now_v7(),
        kind: Kind::Direct,
        name: String::new(),
        topic: String::new(),
        created_at: now(),
    }
}

async fn create_room(store: &ChatStore, name: &str, creator: &UserRef) -> Conversation {
    let room = room(name);
    store
        .create_room(&room, creator)
        .await
        .expect("a new room is created");
    room
}

async fn open_direct(store: &ChatStore, a: &UserRef, b: &UserRef) -> Conversation {
    store
        .create_direct(&direct(), &direct_key(a.id, b.id), [a, b])
        .await
        .expect("a direct conversation opens")
}

/// A message without mentions, as chat stores it.
fn sent(message: &Message) -> NewMessage {
    NewMessage {
        message: message.clone(),
        mentions: Vec::new(),
        attachments: Vec::new(),
    }
}

fn all_sent(messages: &[Message]) -> Vec<NewMessage> {
    messages.iter().map(sent).collect()
}

/// Moves `user`'s read marker; returns the marker after.
async fn mark_read(store: &ChatStore, conversation: Uuid, user: Uuid, up_to: Uuid) -> Option<Uuid> {
    store
        .mark_read(conversation, user, up_to)
        .await
        .expect("the read marker is written")
}

/// One outbox row, read back as a consumer would see it.
type Written = OutboxRow;

/// The outbox, in commit order.
async fn outbox(store: &ChatStore) -> Vec<Written> {
    outbox_rows(&store.outbox()).await
}

/// The outbox rows with one routing key, in commit order.
async fn outbox_of(store: &ChatStore, key: &str) -> Vec<Written> {
    let mut written = outbox(store).await;
    written.retain(|row| row.routing_key == key);
    written
}

fn event_ids(written: &[Written]) -> Vec<Uuid> {
    written.iter().map(|row| row.event_id).collect()
}

fn message(conversation: &Conversation, sender: &UserRef, body: &str) -> Message {
    Message {
        id: Uuid::now_v7(),
        conversation_id: conversation.id,
        sender: sender.clone(),
        body: body.to_owned(),
        created_at: now(),
        edited_at: None,
        deleted_at: None,
        reactions: Vec::new(),
        attachments: Vec::new(),
    }
}

/// Posts as a member; the message is stored.
async fn post(
    store: &ChatStore,
    conversation: &Conversation,
    sender: &UserRef,
    body: &str,
) -> Message {
    let message = message(conversation, sender, body);
    assert!(
        store.insert_message(&sent(&message)).await.unwrap(),
        "a member may post"
    );
    message
}

async fn post_many(
    store: &ChatStore,
    conversation: &Conversation,
    sender: &UserRef,
    count: usize,
) -> Vec<Message> {
    let mut messages = Vec::with_capacity(count);
    for n in 0..count {
        messages.push(post(store, conversation, sender, &format!("message {n}")).await);
    }
    messages
}

fn ids(messages: &[Message]) -> Vec<Uuid> {
    messages.iter().map(|message| message.id).collect()
}

fn names(views: &[ConversationView]) -> Vec<&str> {
    views
        .iter()
        .map(|view| view.conversation.name.as_str())
        .collect()
}

fn connection(user: &UserRef, broker_id: &str, opened_at: DateTime<Utc>) -> Connection {
    Connection {
        id: Uuid::now_v7(),
        user: user.clone(),
        broker_id: broker_id.to_owned(),
        opened_at,
    }
}

async fn open(store: &ChatStore, connection: &Connection) -> Presence {
    store
        .open_connection(connection)
        .await
        .expect("a socket is recorded")
}

fn presence(user: &UserRef, connections: u32, since: DateTime<Utc>) -> Presence {
    Presence {
        user: user.clone(),
        connections,
        since,
    }
}

// ---------------------------------------------------------------------------------------
// Rooms

async fn room_is_created_with_its_creator_as_member(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "#General", &ada).await;
    assert_eq!(general.name, "general");

    assert_eq!(
        store.conversation(general.id).await.unwrap(),
        Some(general.clone())
    );
    assert_eq!(store.conversation(Uuid::now_v7()).await.unwrap(), None);
    assert!(store.is_member(general.id, ada.id).await.unwrap());
    let members = store.members(general.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user, ada);
    assert_eq!(members[0].last_read_id, None);
}

async fn room_name_taken_is_refused(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let first = create_room(store, "general", &ada).await;

    let second = store.create_room(&room("GENERAL"), &grace).await;
    assert!(
        matches!(second, Err(StoreError::NameTaken)),
        "got {second:?}"
    );
    // Nothing of the refused room was kept, not even its creator's membership.
    let rooms = store.rooms(grace.id).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].conversation, first);
    assert_eq!(rooms[0].member_count, 1);
    assert!(!rooms[0].joined);
    assert!(store.membership_ids(grace.id).await.unwrap().is_empty());
}

async fn rooms_are_listed_by_name_with_counts_and_joined_flags(store: &ChatStore) {
    let (ada, grace, linus) = (user("ada"), user("grace"), user("linus"));
    let zig = create_room(store, "zig", &ada).await;
    let rust = create_room(store, "rust", &grace).await;
    create_room(store, "general", &linus).await;
    assert!(store.join(rust.id, &ada, now()).await.unwrap());
    assert!(store.join(rust.id, &linus, now()).await.unwrap());
    assert!(store.join(zig.id, &grace, now()).await.unwrap());
    // Direct conversations are not rooms.
    open_direct(store, &ada, &grace).await;

    let rooms = store.rooms(ada.id).await.unwrap();
    assert_eq!(names(&rooms), ["general", "rust", "zig"]);
    let seen: Vec<(u32, bool)> = rooms
        .iter()
        .map(|view| (view.member_count, view.joined))
        .collect();
    assert_eq!(seen, [(1, false), (3, true), (2, true)]);

    let stranger = store.rooms(Uuid::now_v7()).await.unwrap();
    assert_eq!(names(&stranger), ["general", "rust", "zig"]);
    assert!(stranger.iter().all(|view| !view.joined));
}

async fn joining_and_leaving_twice_change_nothing_the_second_time(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;

    assert!(store.join(general.id, &grace, now()).await.unwrap());
    assert!(!store.join(general.id, &grace, now()).await.unwrap());
    assert!(store.is_member(general.id, grace.id).await.unwrap());
    assert_eq!(store.members(general.id).await.unwrap().len(), 2);
    assert_eq!(
        store.membership_ids(grace.id).await.unwrap(),
        vec![general.id]
    );

    assert!(store.leave(general.id, grace.id).await.unwrap());
    assert!(!store.leave(general.id, grace.id).await.unwrap());
    assert!(!store.is_member(general.id, grace.id).await.unwrap());
    assert_eq!(store.members(general.id).await.unwrap().len(), 1);
    assert!(store.membership_ids(grace.id).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Direct conversations

async fn opening_a_direct_twice_gives_one_conversation(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let first = open_direct(store, &ada, &grace).await;
    assert_eq!(first.kind, Kind::Direct);
    let again = open_direct(store, &grace, &ada).await;
    assert_eq!(again, first);

    assert_eq!(
        store
            .direct_by_key(&direct_key(ada.id, grace.id))
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.conversation(first.id).await.unwrap(),
        Some(first.clone())
    );
    let mut members: Vec<UserRef> = store
        .members(first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|member| member.user)
        .collect();
    members.sort_by(|a, b| a.username.cmp(&b.username));
    assert_eq!(members, [ada.clone(), grace.clone()]);
    for user in [&ada, &grace] {
        let listed = store.conversations_of(user.id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].conversation, first);
        assert_eq!((listed[0].member_count, listed[0].joined), (2, true));
    }
}

async fn opening_a_direct_from_both_sides_at_once_gives_one_conversation(store: &ChatStore) {
    for round in 0..5 {
        let (ada, grace) = (user(&format!("ada{round}")), user(&format!("grace{round}")));
        let key = direct_key(ada.id, grace.id);
        let (mine, theirs) = (direct(), direct());
        let (from_ada, from_grace) = tokio::join!(
            store.create_direct(&mine, &key, [&ada, &grace]),
            store.create_direct(&theirs, &key, [&grace, &ada]),
        );
        let (from_ada, from_grace) = (from_ada.unwrap(), from_grace.unwrap());
        assert_eq!(from_ada, from_grace);
        assert!([mine.id, theirs.id].contains(&from_ada.id));
        assert_eq!(store.conversations_of(ada.id).await.unwrap().len(), 1);
        assert_eq!(store.conversations_of(grace.id).await.unwrap().len(), 1);
        assert_eq!(store.members(from_ada.id).await.unwrap().len(), 2);
    }
}

async fn conversations_of_a_user_are_listed_latest_activity_first(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let an_hour_ago = now() - Duration::hours(1);
    let mut created = Vec::new();
    for (minutes, name) in [(0, "first"), (2, "third")] {
        let room = Conversation {
            created_at: an_hour_ago + Duration::minutes(minutes),
            ..room(name)
        };
        store.create_room(&room, &ada).await.unwrap();
        created.push(room);
    }
    let chat = store
        .create_direct(
            &Conversation {
                created_at: an_hour_ago + Duration::minutes(1),
                ..direct()
            },
            &direct_key(ada.id, grace.id),
            [&ada, &grace],
        )
        .await
        .unwrap();
    // Somebody else's room is not ada's.
    create_room(store, "other", &grace).await;

    let listed = store.conversations_of(ada.id).await.unwrap();
    assert_eq!(names(&listed), ["third", "", "first"]);
    assert_eq!(listed[1].conversation, chat);
    assert!(listed.iter().all(|view| view.joined));

    // A new message makes its conversation the latest.
    post(store, &created[0], &ada, "back to the start").await;
    let listed = store.conversations_of(ada.id).await.unwrap();
    assert_eq!(names(&listed), ["first", "third", ""]);
    let counts: Vec<u32> = listed.iter().map(|view| view.member_count).collect();
    assert_eq!(counts, [1, 1, 2]);
}

// ---------------------------------------------------------------------------------------
// Messages

async fn a_batch_stores_members_messages_and_refuses_the_rest_alone(store: &ChatStore) {
    let (ada, mallory) = (user("ada"), user("mallory"));
    let general = create_room(store, "general", &ada).await;
    let batch = [
        message(&general, &ada, "one"),
        message(&general, &mallory, "not a member"),
        message(&general, &ada, "two"),
    ];
    let stored = store.insert_messages(&all_sent(&batch)).await.unwrap();
    assert_eq!(stored, [true, false, true]);
    let history = store
        .messages(general.id, Page::Before(None), 50)
        .await
        .unwrap();
    let bodies: Vec<&str> = history.iter().rev().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two"]);
}

async fn non_member_cannot_post(store: &ChatStore) {
    let (ada, mallory) = (user("ada"), user("mallory"));
    let general = create_room(store, "general", &ada).await;

    let intruding = message(&general, &mallory, "let me in");
    assert!(!store.insert_message(&sent(&intruding)).await.unwrap());
    assert!(!store.has_message(general.id, intruding.id).await.unwrap());
    assert!(
        store
            .messages(general.id, Page::Before(None), 50)
            .await
            .unwrap()
            .is_empty()
    );

    // Nor may a former member, nor anyone in a conversation that does not exist.
    assert!(store.join(general.id, &mallory, now()).await.unwrap());
    assert!(store.leave(general.id, mallory.id).await.unwrap());
    assert!(
        !store
            .insert_message(&sent(&message(&general, &mallory, "again")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_message(&sent(&message(&direct(), &ada, "anyone?")))
            .await
            .unwrap()
    );

    let posted = post(store, &general, &ada, "hello").await;
    assert_eq!(
        store
            .messages(general.id, Page::Before(None), 50)
            .await
            .unwrap(),
        vec![posted]
    );
}

async fn message_ids_made_in_sequence_sort_in_time_order(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    // Made in order, stored in reverse, so that only the ids can give the order back.
    let made: Vec<Message> = (0..100)
        .map(|n| message(&general, &ada, &format!("message {n}")))
        .collect();
    for message in made.iter().rev() {
        assert!(store.insert_message(&sent(message)).await.unwrap());
    }

    let oldest_first = store
        .messages(
            general.id,
            Page::After {
                after: Uuid::nil(),
                before: None,
            },
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(oldest_first, made);
    let newest_first = store
        .messages(general.id, Page::Before(None), 1_000)
        .await
        .unwrap();
    assert_eq!(
        ids(&newest_first),
        ids(&made).into_iter().rev().collect::<Vec<_>>()
    );
}

async fn history_pages_back_return_every_message_once_despite_new_ones(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;
    let other = create_room(store, "other", &ada).await;
    let history = post_many(store, &general, &ada, 10).await;
    post_many(store, &other, &ada, 3).await;
    store.join(general.id, &grace, now()).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .messages(general.id, Page::Before(cursor), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        // Newer messages arrive while the client reads back: they are not in older pages.
        post(store, &general, &grace, "meanwhile").await;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        seen.extend(page);
    }
    let mut expected = history;
    expected.reverse();
    assert_eq!(seen, expected);
}

async fn history_pages_forward_return_every_message_once_including_new_ones(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &grace, now()).await.unwrap();
    let mut expected = post_many(store, &general, &ada, 7).await;

    let mut seen: Vec<Message> = Vec::new();
    let mut cursor = Uuid::nil();
    for fetch in 0.. {
        let page = store
            .messages(
                general.id,
                Page::After {
                    after: cursor,
                    before: None,
                },
                3,
            )
            .await
            .unwrap();
        // Messages arriving while the client catches up come in later pages.
        if fetch < 4 {
            expected.push(post(store, &general, &grace, &format!("meanwhile {fetch}")).await);
        }
        let Some(last) = page.last() else { break };
        cursor = last.id;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 11);
    assert_eq!(seen, expected);
}

async fn history_between_two_messages_is_the_gap_oldest_first(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let sent = post_many(store, &general, &ada, 6).await;
    let gap = store
        .messages(
            general.id,
            Page::After {
                after: sent[1].id,
                before: Some(sent[4].id),
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(gap, sent[2..4].to_vec());
    let none = store
        .messages(
            general.id,
            Page::After {
                after: sent[4].id,
                before: Some(sent[1].id),
            },
            100,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn message_is_found_only_in_its_own_conversation(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let other = create_room(store, "other", &ada).await;
    let posted = post(store, &general, &ada, "hello").await;

    assert!(store.has_message(general.id, posted.id).await.unwrap());
    assert!(!store.has_message(other.id, posted.id).await.unwrap());
    assert!(!store.has_message(general.id, Uuid::now_v7()).await.unwrap());
}

async fn read_marker_never_moves_back(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &grace, now()).await.unwrap();
    let posted = post_many(store, &general, &ada, 3).await;
    let (first, second, third) = (posted[0].id, posted[1].id, posted[2].id);

    let marker = |up_to| mark_read(store, general.id, grace.id, up_to);
    assert_eq!(marker(second).await, Some(second));
    assert_eq!(marker(first).await, Some(second));
    assert_eq!(marker(second).await, Some(second));
    assert_eq!(marker(third).await, Some(third));

    let grace_read = store
        .members(general.id)
        .await
        .unwrap()
        .into_iter()
        .find(|member| member.user == grace)
        .map(|member| member.last_read_id);
    assert_eq!(grace_read, Some(Some(third)));
    // Only grace's marker moved.
    assert!(
        store
            .members(general.id)
            .await
            .unwrap()
            .iter()
            .any(|member| member.user == ada && member.last_read_id.is_none())
    );
    // A non-member has no marker to move.
    assert_eq!(
        mark_read(store, general.id, Uuid::now_v7(), third).await,
        None
    );
}

// ---------------------------------------------------------------------------------------
// Presence

async fn presence_counts_sockets_over_two_brokers(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let start = now() - Duration::minutes(10);
    let laptop = connection(&ada, "broker-a", start);
    let phone = connection(&ada, "broker-b", start + Duration::minutes(1));

    assert_eq!(open(store, &laptop).await, presence(&ada, 1, start));
    assert_eq!(open(store, &phone).await, presence(&ada, 2, start));
    let grace_at = start + Duration::minutes(2);
    open(store, &connection(&grace, "broker-a", grace_at)).await;

    assert_eq!(
        store.presence(&[ada.id]).await.unwrap(),
        vec![presence(&ada, 2, start)]
    );
    assert_eq!(
        store.presence(&[]).await.unwrap(),
        vec![presence(&ada, 2, start), presence(&grace, 1, grace_at)]
    );

    // Online since the oldest socket still open.
    let closed = store
        .close_connection(laptop.id, start + Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(closed, Some(presence(&ada, 1, phone.opened_at)));
    assert_eq!(
        store.presence(&[ada.id, grace.id]).await.unwrap(),
        vec![
            presence(&ada, 1, phone.opened_at),
            presence(&grace, 1, grace_at)
        ]
    );
}

async fn closing_the_last_socket_gives_last_seen(store: &ChatStore) {
    let ada = user("ada");
    let start = now() - Duration::minutes(10);
    let (laptop, phone) = (
        connection(&ada, "broker-a", start),
        connection(&ada, "broker-b", start),
    );
    open(store, &laptop).await;
    open(store, &phone).await;

    let first_close = start + Duration::minutes(1);
    let last_close = start + Duration::minutes(2);
    assert_eq!(
        store.close_connection(phone.id, first_close).await.unwrap(),
        Some(presence(&ada, 1, start))
    );
    assert_eq!(
        store.close_connection(laptop.id, last_close).await.unwrap(),
        Some(presence(&ada, 0, last_close))
    );
    assert_eq!(
        store.presence(&[ada.id]).await.unwrap(),
        vec![presence(&ada, 0, last_close)]
    );
    // Offline users are not in the online list, and a socket closes once.
    assert!(store.presence(&[]).await.unwrap().is_empty());
    assert_eq!(
        store.close_connection(laptop.id, now()).await.unwrap(),
        None
    );

    // Back online: since the new socket, not since the last visit.
    let back = connection(&ada, "broker-a", now());
    assert_eq!(open(store, &back).await, presence(&ada, 1, back.opened_at));
}

async fn resetting_a_broker_keeps_only_the_listed_sockets(store: &ChatStore) {
    let (ada, grace, linus) = (user("ada"), user("grace"), user("linus"));
    let start = now() - Duration::minutes(10);
    let ada_lost = connection(&ada, "broker-a", start);
    let ada_kept = connection(&ada, "broker-a", start + Duration::minutes(1));
    let ada_elsewhere = connection(&ada, "broker-b", start + Duration::minutes(2));
    let grace_lost = connection(&grace, "broker-a", start);
    let linus_kept = connection(&linus, "broker-a", start);
    for socket in [
        &ada_lost,
        &ada_kept,
        &ada_elsewhere,
        &grace_lost,
        &linus_kept,
    ] {
        open(store, socket).await;
    }

    let at = now();
    let mut changed = store
        .reset_broker("broker-a", &[ada_kept.id, linus_kept.id], at)
        .await
        .unwrap();
    changed.sort_by(|a, b| a.user.username.cmp(&b.user.username));
    assert_eq!(
        changed,
        vec![
            presence(&ada, 2, ada_kept.opened_at),
            presence(&grace, 0, at)
        ]
    );
    assert_eq!(
        store.presence(&[]).await.unwrap(),
        vec![
            presence(&ada, 2, ada_kept.opened_at),
            presence(&linus, 1, start)
        ]
    );

    // Nothing left to forget: nobody changed.
    assert!(
        store
            .reset_broker("broker-a", &[ada_kept.id, linus_kept.id], now())
            .await
            .unwrap()
            .is_empty()
    );
    // A broker gone for good keeps nothing; other brokers' sockets stay.
    let gone = store.reset_broker("broker-a", &[], now()).await.unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(
        store.presence(&[]).await.unwrap(),
        vec![presence(&ada, 1, ada_elsewhere.opened_at)]
    );
}

async fn presence_of_unknown_users_is_omitted(store: &ChatStore) {
    let ada = user("ada");
    open(store, &connection(&ada, "broker-a", now())).await;
    let unknown = Uuid::now_v7();
    let listed = store.presence(&[unknown, ada.id, ada.id]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user, ada);
    assert!(store.presence(&[unknown]).await.unwrap().is_empty());
}

async fn brokers_unseen_by_every_instance_are_found(store: &ChatStore) {
    let ada = user("ada");
    let start = now();
    open(store, &connection(&ada, "broker-a", start)).await;
    open(store, &connection(&ada, "broker-b", start)).await;
    open(store, &connection(&ada, "broker-c", start)).await;
    let earlier = start - chrono::Duration::seconds(120);
    store
        .touch_brokers(&["broker-a".into(), "broker-b".into()], earlier)
        .await
        .unwrap();
    // broker-b is seen again (by another instance, say); broker-c never was.
    store
        .touch_brokers(&["broker-b".into(), "broker-idle".into()], start)
        .await
        .unwrap();
    let since = start - chrono::Duration::seconds(60);
    let mut unseen = store.unseen_brokers(since).await.unwrap();
    unseen.sort();
    // Only brokers holding sockets count; broker-idle has none.
    assert_eq!(unseen, vec!["broker-a".to_owned(), "broker-c".to_owned()]);
    assert!(store.broker_seen_since("broker-b", since).await.unwrap());
    assert!(!store.broker_seen_since("broker-a", since).await.unwrap());
    assert!(!store.broker_seen_since("broker-c", since).await.unwrap());
    assert!(store.broker_seen_since("broker-a", earlier).await.unwrap());
    // Touching nothing is fine.
    store.touch_brokers(&[], start).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Deleting an account

async fn deleting_user_data_removes_directs_and_presence_but_keeps_rooms(store: &ChatStore) {
    let (ada, grace, linus) = (user("ada"), user("grace"), user("linus"));
    let general = create_room(store, "general", &grace).await;
    store.join(general.id, &ada, now()).await.unwrap();
    let said_in_room = post(store, &general, &ada, "hello room").await;
    let graces_reply = post(store, &general, &grace, "hello ada").await;
    let with_grace = open_direct(store, &ada, &grace).await;
    let private = post_many(store, &with_grace, &grace, 3).await;
    let with_linus = open_direct(store, &linus, &ada).await;
    post(store, &with_linus, &ada, "hi linus").await;
    let untouched = open_direct(store, &grace, &linus).await;
    let between_others = post(store, &untouched, &linus, "hi grace").await;
    let socket = connection(&ada, "broker-a", now());
    open(store, &socket).await;
    store.close_connection(socket.id, now()).await.unwrap();
    open(store, &connection(&ada, "broker-b", now())).await;
    open(store, &connection(&grace, "broker-a", now())).await;

    assert_eq!(store.delete_user_data(ada.id).await.unwrap(), 2);

    // Ada's direct conversations went, with every message and membership in them.
    for gone in [&with_grace, &with_linus] {
        assert_eq!(store.conversation(gone.id).await.unwrap(), None);
        assert!(store.members(gone.id).await.unwrap().is_empty());
        assert!(
            store
                .messages(gone.id, Page::Before(None), 50)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        !store
            .has_message(with_grace.id, private[0].id)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .direct_by_key(&direct_key(ada.id, grace.id))
            .await
            .unwrap(),
        None
    );
    assert!(store.membership_ids(ada.id).await.unwrap().is_empty());
    assert!(store.conversations_of(ada.id).await.unwrap().is_empty());
    assert!(store.presence(&[ada.id]).await.unwrap().is_empty());

    // The room stays, without ada as a member but with what ada said in it, now said
    // by "deleted user"; grace's messages keep her name.
    assert!(!store.is_member(general.id, ada.id).await.unwrap());
    assert_eq!(store.members(general.id).await.unwrap().len(), 1);
    let mut anonymous = said_in_room;
    chat::domain::DELETED_USER_NAME.clone_into(&mut anonymous.sender.username);
    assert_eq!(
        store
            .messages(general.id, Page::Before(None), 50)
            .await
            .unwrap(),
        vec![graces_reply, anonymous]
    );
    // Other users' conversations and presence are untouched.
    let mut graces: Vec<Uuid> = store.membership_ids(grace.id).await.unwrap();
    graces.sort();
    let mut expected = vec![general.id, untouched.id];
    expected.sort();
    assert_eq!(graces, expected);
    assert_eq!(
        store
            .messages(untouched.id, Page::Before(None), 50)
            .await
            .unwrap(),
        vec![between_others]
    );
    assert_eq!(store.presence(&[]).await.unwrap().len(), 1);
}

async fn deleting_user_data_twice_deletes_nothing_the_second_time(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let with_grace = open_direct(store, &ada, &grace).await;
    post(store, &with_grace, &ada, "bye").await;
    open(store, &connection(&ada, "broker-a", now())).await;

    assert_eq!(store.delete_user_data(ada.id).await.unwrap(), 1);
    assert_eq!(store.delete_user_data(ada.id).await.unwrap(), 0);
    assert_eq!(store.delete_user_data(Uuid::now_v7()).await.unwrap(), 0);
    // The pair may talk again later (were the account recreated): a new conversation.
    let again = open_direct(store, &grace, &ada).await;
    assert_ne!(again.id, with_grace.id);
}

// ---------------------------------------------------------------------------------------
// Storage

async fn timestamps_round_trip_to_the_microsecond(store: &ChatStore) {
    let at =
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap() + Duration::microseconds(123_456);
    let ada = user("ada");
    let leap = Conversation {
        created_at: at,
        ..room("leap")
    };
    store.create_room(&leap, &ada).await.unwrap();
    assert_eq!(
        store.conversation(leap.id).await.unwrap(),
        Some(leap.clone())
    );

    let posted = Message {
        created_at: at + Duration::microseconds(1),
        ..message(&leap, &ada, "on the day")
    };
    assert!(store.insert_message(&sent(&posted)).await.unwrap());
    assert_eq!(
        store
            .messages(leap.id, Page::Before(None), 1)
            .await
            .unwrap(),
        vec![posted]
    );

    let socket = connection(&ada, "broker-a", at + Duration::microseconds(2));
    assert_eq!(open(store, &socket).await.since, socket.opened_at);
    let left = at + Duration::microseconds(3);
    assert_eq!(
        store.close_connection(socket.id, left).await.unwrap(),
        Some(presence(&ada, 0, left))
    );
}

async fn migrating_again_keeps_the_data(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    store
        .migrate()
        .await
        .expect("migrations already applied are skipped");
    store.ping().await.expect("the database answers");
    assert_eq!(store.conversation(general.id).await.unwrap(), Some(general));
}

// ---------------------------------------------------------------------------------------
// Events commit with their state change, and only with it

async fn a_sent_message_writes_no_event_only_its_stored_mentions_do(store: &ChatStore) {
    let (ada, grace, mallory) = (user("ada"), user("grace"), user("mallory"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &grace, now()).await.unwrap();
    let batch = vec![
        sent(&message(&general, &ada, "one")),
        mentioning(
            &message(&general, &mallory, "@grace not a member"),
            &[&grace],
        ),
        mentioning(&message(&general, &ada, "two, @grace"), &[&grace]),
    ];
    let stored = store.insert_messages(&batch).await.unwrap();
    assert_eq!(stored, [true, false, true]);
    let intruding = sent(&message(&general, &mallory, "let me in"));
    assert!(!store.insert_message(&intruding).await.unwrap());

    // A message's row is its record: no `message.sent`. The stored message's mention has
    // its event; the refused one's does not.
    let written = outbox(store).await;
    assert_eq!(
        event_ids(&written),
        [batch[2].mentions[0].event.id],
        "only the stored mention's event: {written:?}"
    );
    assert_eq!(written[0].routing_key, "message.mentioned");
    assert_eq!(written[0].producer, "chat");
}

async fn a_batch_whose_event_cannot_be_written_stores_nothing(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &grace, now()).await.unwrap();
    let first = mentioning(&message(&general, &ada, "one @grace"), &[&grace]);
    // An event id written twice: the outbox refuses the second, and the batch goes whole.
    let mut second = mentioning(&message(&general, &ada, "two @grace"), &[&grace]);
    second.mentions[0].event.id = first.mentions[0].event.id;
    let refused = store.insert_messages(&[first, second]).await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "got {refused:?}"
    );
    assert!(
        store
            .messages(general.id, Page::Before(None), 50)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(outbox(store).await.is_empty());
}

async fn a_read_writes_no_event(store: &ChatStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &grace, now()).await.unwrap();
    let posted = post_many(store, &general, &ada, 3).await;
    for (up_to, marker_after) in [
        (posted[1].id, posted[1].id),
        (posted[0].id, posted[1].id),
        (posted[2].id, posted[2].id),
    ] {
        assert_eq!(
            mark_read(store, general.id, grace.id, up_to).await,
            Some(marker_after)
        );
    }
    // The marker is the record; the other members learn of it live.
    assert!(outbox(store).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Chat sessions

fn chat_session(user: &UserRef, started_at: DateTime<Utc>) -> ChatSession {
    ChatSession {
        session_id: Uuid::now_v7(),
        user: user.clone(),
        started_at,
        expires_at: Some(started_at + Duration::days(30)),
        ended_at: None,
        client_ip: "203.0.113.7".into(),
        user_agent: "store-test/1.0".into(),
    }
}

/// When a stored session ended: `None` when there is no row, `Some(None)` while open.
async fn ended_at(store: &TestStore, session_id: Uuid) -> Option<Option<DateTime<Utc>>> {
    const SQL: &str = "SELECT ended_at FROM chat_sessions WHERE session_id = $1";
    platform::on_pool!(&store.sql().await, |pool| {
        sqlx::query_scalar(SQL)
            .bind(session_id)
            .fetch_optional(pool)
            .await
    })
    .expect("chat_sessions is readable")
}

async fn a_chat_session_starts_once_and_ends_once(store: &TestStore) {
    let ada = user("ada");
    let session = chat_session(&ada, now());
    assert!(store.start_chat_session(&session).await.unwrap());
    // A redelivered start changes nothing, even with other details.
    let redelivered = ChatSession {
        client_ip: "198.51.100.1".into(),
        ..session.clone()
    };
    assert!(
        !store.start_chat_session(&redelivered).await.unwrap(),
        "started twice"
    );
    assert_eq!(
        store.open_chat_sessions(&[]).await.unwrap(),
        std::slice::from_ref(&session)
    );

    let end = now();
    assert!(
        store
            .end_chat_session(session.session_id, &ada, end)
            .await
            .unwrap()
    );
    assert!(
        !store
            .end_chat_session(session.session_id, &ada, end + Duration::minutes(1))
            .await
            .unwrap(),
        "ended twice"
    );
    assert_eq!(
        ended_at(store, session.session_id).await,
        Some(Some(end)),
        "the first end counts"
    );
    assert!(store.open_chat_sessions(&[]).await.unwrap().is_empty());
    assert!(
        !store.start_chat_session(&session).await.unwrap(),
        "an ended session does not reopen"
    );
    assert!(store.open_chat_sessions(&[]).await.unwrap().is_empty());
}

async fn an_end_that_overtakes_its_start_keeps_the_session_ended(store: &TestStore) {
    let ada = user("ada");
    let late = chat_session(&ada, now() - Duration::minutes(1));
    let end = now();
    assert!(
        store
            .end_chat_session(late.session_id, &ada, end)
            .await
            .unwrap()
    );
    assert_eq!(ended_at(store, late.session_id).await, Some(Some(end)));
    assert!(
        !store.start_chat_session(&late).await.unwrap(),
        "the start comes too late"
    );
    assert_eq!(ended_at(store, late.session_id).await, Some(Some(end)));
    assert!(store.open_chat_sessions(&[]).await.unwrap().is_empty());
    assert!(
        store
            .open_chat_sessions(&[ada.id])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .end_chat_session(late.session_id, &ada, now())
            .await
            .unwrap(),
        "ended twice"
    );
}

async fn open_chat_sessions_are_listed_by_user_without_ended_ones(store: &ChatStore) {
    let (ada, grace, linus) = (user("ada"), user("grace"), user("linus"));
    let start = now() - Duration::minutes(10);
    let first = chat_session(&ada, start);
    let ended = chat_session(&ada, start + Duration::minutes(1));
    let second = chat_session(&ada, start + Duration::minutes(2));
    let graces = chat_session(&grace, start + Duration::minutes(3));
    let linuses = chat_session(&linus, start + Duration::minutes(4));
    for session in [&first, &ended, &second, &graces, &linuses] {
        assert!(store.start_chat_session(session).await.unwrap());
    }
    assert!(
        store
            .end_chat_session(ended.session_id, &ada, now())
            .await
            .unwrap()
    );

    assert_eq!(
        store.open_chat_sessions(&[ada.id]).await.unwrap(),
        [first.clone(), second.clone()],
        "ada's open sessions, oldest first"
    );
    assert_eq!(
        store.open_chat_sessions(&[grace.id, ada.id]).await.unwrap(),
        [first.clone(), second.clone(), graces.clone()]
    );
    assert_eq!(
        store.open_chat_sessions(&[]).await.unwrap(),
        [first, second, graces, linuses],
        "everyone's"
    );
    assert!(
        store
            .open_chat_sessions(&[Uuid::now_v7()])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn forgetting_a_users_chat_sessions_keeps_everyone_elses(store: &TestStore) {
    let (ada, grace) = (user("ada"), user("grace"));
    let open = chat_session(&ada, now() - Duration::minutes(2));
    let ended = chat_session(&ada, now() - Duration::minutes(1));
    let graces = chat_session(&grace, now());
    for session in [&open, &ended, &graces] {
        assert!(store.start_chat_session(session).await.unwrap());
    }
    assert!(
        store
            .end_chat_session(ended.session_id, &ada, now())
            .await
            .unwrap()
    );

    assert_eq!(
        store.forget_chat_sessions(ada.id).await.unwrap(),
        2,
        "open and ended"
    );
    assert_eq!(ended_at(store, open.session_id).await, None);
    assert_eq!(ended_at(store, ended.session_id).await, None);
    assert_eq!(
        store.open_chat_sessions(&[]).await.unwrap(),
        std::slice::from_ref(&graces)
    );
    assert_eq!(ended_at(store, graces.session_id).await, Some(None));
    assert_eq!(store.forget_chat_sessions(ada.id).await.unwrap(), 0);
    assert_eq!(store.forget_chat_sessions(Uuid::now_v7()).await.unwrap(), 0);
}

/// Chat's SQLite database is made with small pages (`store::SQLITE_PAGE_SIZE`): each
/// message changes a page at its own place in the history index, and a commit writes
/// every changed page whole.
#[tokio::test]
async fn a_new_sqlite_chat_database_has_small_pages() {
    let store = TestStore::sqlite().await;
    let Pool::Sqlite(pool) = store.sql().await else {
        panic!("a sqlite:// URL opens SQLite");
    };
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool.pool())
        .await
        .expect("PRAGMA page_size answers");
    assert_eq!(size, i64::from(store::SQLITE_PAGE_SIZE));
}

// ---------------------------------------------------------------------------------------
// Edits, deletes, reactions

/// The `message.edited` event of `editor` editing `id`.
fn edited_event(conversation: Uuid, id: Uuid, editor: Uuid, body: &str) -> Event {
    Event::new(
        "chat",
        Payload::MessageEdited(events::MessageEdited {
            message_id: id.to_string(),
            conversation_id: conversation.to_string(),
            editor_id: editor.to_string(),
            body_chars: u32::try_from(body.chars().count()).unwrap(),
        }),
    )
}

/// Edits as chat does, with its event.
async fn edit(store: &ChatStore, conversation: Uuid, id: Uuid, editor: Uuid, body: &str) -> Edited {
    let event = edited_event(conversation, id, editor, body);
    store
        .edit_message(conversation, id, editor, body, now(), &event)
        .await
        .expect("the edit is written")
}

/// Deletes as chat does, with its event.
async fn delete(
    store: &ChatStore,
    conversation: Uuid,
    id: Uuid,
    actor: Uuid,
    moderator: bool,
) -> Deleted {
    let event = |message: &Message| {
        Event::new(
            "chat",
            Payload::MessageDeleted(events::MessageDeleted {
                message_id: message.id.to_string(),
                conversation_id: message.conversation_id.to_string(),
                sender_id: message.sender.id.to_string(),
                deleted_by: actor.to_string(),
                moderator: message.sender.id != actor,
            }),
        )
    };
    store
        .delete_message(conversation, id, actor, moderator, now(), &event)
        .await
        .expect("the deletion is written")
}

fn emoji(text: &str) -> ReactionEmoji {
    ReactionEmoji::parse(text).expect("a reaction emoji")
}

async fn react(
    store: &ChatStore,
    message: &Message,
    user: &UserRef,
    with: &str,
    add: bool,
) -> Reacted {
    store
        .set_reaction(
            message.conversation_id,
            message.id,
            user.id,
            emoji(with),
            add,
            now(),
        )
        .await
        .expect("the reaction is written")
}

async fn newest(store: &ChatStore, conversation: Uuid, limit: u32) -> Vec<Message> {
    store
        .messages(conversation, Page::Before(None), limit)
        .await
        .expect("history reads")
}

const THUMBS: &str = "\u{1f44d}";
const HEART: &str = "\u{2764}\u{fe0f}";

async fn only_the_sender_edits_and_each_edit_writes_its_event(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let other = create_room(store, "other", &ada).await;
    let said = post(store, &general, &ada, "helo").await;

    assert_eq!(
        edit(store, general.id, said.id, bob.id, "mine now").await,
        Edited::NotAuthor
    );
    assert_eq!(
        edit(store, other.id, said.id, ada.id, "wrong room").await,
        Edited::Missing,
        "a message is found only in its own conversation"
    );
    assert_eq!(
        edit(store, general.id, Uuid::now_v7(), ada.id, "nothing").await,
        Edited::Missing
    );
    let Edited::Done(edited) = edit(store, general.id, said.id, ada.id, "hello").await else {
        panic!("the sender edits");
    };
    assert_eq!(edited.body, "hello");
    assert_eq!((edited.id, edited.created_at), (said.id, said.created_at));
    let edited_at = edited.edited_at.expect("the edit time is kept");
    assert!(edited_at >= said.created_at);
    assert_eq!(edited.deleted_at, None);

    let history = newest(store, general.id, 10).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].body, "hello");
    assert_eq!(history[0].edited_at, Some(edited_at));

    let written = outbox_of(store, "message.edited").await;
    assert_eq!(written.len(), 1, "refused edits write nothing: {written:?}");
    assert_eq!(
        written[0].payload,
        Payload::MessageEdited(events::MessageEdited {
            message_id: said.id.to_string(),
            conversation_id: general.id.to_string(),
            editor_id: ada.id.to_string(),
            body_chars: 5,
        })
    );
}

async fn a_deleted_message_stays_in_its_place_as_a_tombstone(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let first = post(store, &general, &ada, "one").await;
    let second = post(store, &general, &ada, "two").await;
    let third = post(store, &general, &bob, "three").await;
    react(store, &second, &bob, THUMBS, true).await;

    let Deleted::Done(tombstone) = delete(store, general.id, second.id, ada.id, false).await else {
        panic!("the sender deletes");
    };
    assert_eq!(tombstone.body, "", "a tombstone keeps no body");
    assert!(tombstone.deleted_at.is_some());

    let history = newest(store, general.id, 10).await;
    let ids: Vec<Uuid> = history.iter().map(|m| m.id).collect();
    assert_eq!(ids, [third.id, second.id, first.id], "it keeps its place");
    assert_eq!(history[1].body, "");
    assert_eq!(history[1].deleted_at, tombstone.deleted_at);
    assert_eq!(
        store.reactions(&[second.id], bob.id).await.unwrap(),
        [],
        "its reactions went with it"
    );
    // Cursors through it keep working.
    let older = store
        .messages(general.id, Page::Before(Some(second.id)), 10)
        .await
        .unwrap();
    assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), [first.id]);

    // Twice is fine, and writes nothing more; a tombstone is not edited.
    assert!(matches!(
        delete(store, general.id, second.id, ada.id, false).await,
        Deleted::Already(ref message) if message.body.is_empty()
    ));
    assert_eq!(
        edit(store, general.id, second.id, ada.id, "back").await,
        Edited::Deleted
    );
    assert_eq!(outbox_of(store, "message.deleted").await.len(), 1);
    assert_eq!(outbox_of(store, "message.edited").await.len(), 0);
}

async fn only_the_sender_or_a_moderator_deletes_and_each_deletion_writes_its_event(
    store: &ChatStore,
) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let other = create_room(store, "other", &bob).await;
    let said = post(store, &general, &ada, "mine").await;
    let again = post(store, &general, &ada, "mine too").await;

    assert_eq!(
        delete(store, general.id, said.id, bob.id, false).await,
        Deleted::NotAuthor
    );
    assert_eq!(
        delete(store, other.id, said.id, bob.id, true).await,
        Deleted::Missing,
        "not even a moderator finds it under another conversation"
    );
    assert!(matches!(
        delete(store, general.id, said.id, bob.id, true).await,
        Deleted::Done(_)
    ));
    assert!(matches!(
        delete(store, general.id, again.id, ada.id, true).await,
        Deleted::Done(_)
    ));
    assert_eq!(newest(store, general.id, 10).await[0].body, "");

    let written = outbox_of(store, "message.deleted").await;
    let payloads: Vec<&Payload> = written.iter().map(|row| &row.payload).collect();
    assert_eq!(
        payloads,
        [
            &Payload::MessageDeleted(events::MessageDeleted {
                message_id: said.id.to_string(),
                conversation_id: general.id.to_string(),
                sender_id: ada.id.to_string(),
                deleted_by: bob.id.to_string(),
                moderator: true,
            }),
            &Payload::MessageDeleted(events::MessageDeleted {
                message_id: again.id.to_string(),
                conversation_id: general.id.to_string(),
                sender_id: ada.id.to_string(),
                deleted_by: ada.id.to_string(),
                moderator: false,
            }),
        ]
    );
}

async fn reactions_are_idempotent_and_counted_with_me_over_a_page(store: &ChatStore) {
    let (ada, bob, cy) = (user("ada"), user("bob"), user("cy"));
    let general = create_room(store, "general", &ada).await;
    for member in [&bob, &cy] {
        store.join(general.id, member, now()).await.unwrap();
    }
    let first = post(store, &general, &ada, "one").await;
    let second = post(store, &general, &bob, "two").await;
    let quiet = post(store, &general, &bob, "nobody reacts").await;

    assert_eq!(
        react(store, &first, &ada, THUMBS, true).await,
        Reacted::Done {
            changed: true,
            count: 1
        }
    );
    assert_eq!(
        react(store, &first, &ada, "\u{1f44d}\u{fe0f}", true).await,
        Reacted::Done {
            changed: false,
            count: 1
        },
        "adding twice (in either spelling) is one reaction"
    );
    assert_eq!(
        react(store, &first, &bob, THUMBS, true).await,
        Reacted::Done {
            changed: true,
            count: 2
        }
    );
    react(store, &first, &cy, HEART, true).await;
    react(store, &second, &cy, HEART, true).await;
    react(store, &second, &cy, THUMBS, true).await;
    assert_eq!(
        react(store, &second, &cy, THUMBS, false).await,
        Reacted::Done {
            changed: true,
            count: 0
        }
    );
    assert_eq!(
        react(store, &second, &cy, THUMBS, false).await,
        Reacted::Done {
            changed: false,
            count: 0
        },
        "removing twice is fine"
    );

    let page = [quiet.id, second.id, first.id];
    let seen = |emoji_text: &str, count: u32, me: bool| Reaction {
        emoji: emoji(emoji_text),
        count,
        me,
    };
    assert_eq!(
        store.reactions(&page, ada.id).await.unwrap(),
        [
            (first.id, seen(THUMBS, 2, true)),
            (first.id, seen(HEART, 1, false)),
            (second.id, seen(HEART, 1, false)),
        ],
        "per message, in the order first given"
    );
    assert_eq!(
        store.reactions(&page, cy.id).await.unwrap(),
        [
            (first.id, seen(THUMBS, 2, false)),
            (first.id, seen(HEART, 1, true)),
            (second.id, seen(HEART, 1, true)),
        ]
    );
    assert_eq!(store.reactions(&[], ada.id).await.unwrap(), []);

    // A deleted account's reactions go with it.
    store.delete_user_data(bob.id).await.unwrap();
    assert_eq!(
        store.reactions(&[first.id], ada.id).await.unwrap(),
        [
            (first.id, seen(THUMBS, 1, true)),
            (first.id, seen(HEART, 1, false))
        ]
    );
}

async fn no_reaction_on_a_tombstone_or_another_conversations_message(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let other = create_room(store, "other", &ada).await;
    let said = post(store, &general, &ada, "soon gone").await;
    let elsewhere = Message {
        conversation_id: other.id,
        ..said.clone()
    };
    assert_eq!(
        react(store, &elsewhere, &ada, THUMBS, true).await,
        Reacted::Missing
    );
    assert_eq!(
        react(store, &elsewhere, &ada, THUMBS, false).await,
        Reacted::Missing
    );
    delete(store, general.id, said.id, ada.id, false).await;
    assert_eq!(
        react(store, &said, &ada, THUMBS, true).await,
        Reacted::Deleted
    );
    assert_eq!(
        react(store, &said, &ada, THUMBS, false).await,
        Reacted::Deleted
    );
    assert_eq!(store.reactions(&[said.id], ada.id).await.unwrap(), []);
}

// Unread counts and notifications

async fn unread_of(store: &ChatStore, conversation: &Conversation, user: &UserRef) -> u32 {
    store
        .unread_count(conversation.id, user.id)
        .await
        .expect("the unread count is read")
}

async fn unread_counts_are_others_messages_after_the_marker(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    assert_eq!(unread_of(store, &general, &ada).await, 0);
    let from_bob = post_many(store, &general, &bob, 3).await;
    post(store, &general, &ada, "my own does not count").await;
    assert_eq!(unread_of(store, &general, &ada).await, 3);
    assert_eq!(
        unread_of(store, &general, &bob).await,
        1,
        "ada's one, none of his"
    );
    mark_read(store, general.id, ada.id, from_bob[1].id).await;
    assert_eq!(unread_of(store, &general, &ada).await, 1);
    mark_read(store, general.id, ada.id, from_bob[2].id).await;
    assert_eq!(unread_of(store, &general, &ada).await, 0);
    let stranger = user("eve");
    assert_eq!(
        unread_of(store, &general, &stranger).await,
        0,
        "a non-member has none"
    );
}

async fn unread_counts_stop_at_the_cap(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let many: Vec<Message> = (0..store::UNREAD_CAP + 20)
        .map(|n| message(&general, &bob, &format!("m{n}")))
        .collect();
    store.insert_messages(&all_sent(&many)).await.unwrap();
    assert_eq!(unread_of(store, &general, &ada).await, store::UNREAD_CAP);
    mark_read(store, general.id, ada.id, many[many.len() - 6].id).await;
    assert_eq!(unread_of(store, &general, &ada).await, 5);
}

async fn unread_counts_of_every_conversation_come_from_one_call(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    let quiet = create_room(store, "quiet", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let dm = open_direct(store, &ada, &bob).await;
    post_many(store, &general, &bob, 2).await;
    post_many(store, &dm, &bob, 4).await;
    let mut counts = store.unread_counts(ada.id).await.unwrap();
    counts.sort();
    let mut expected = vec![(general.id, 2), (quiet.id, 0), (dm.id, 4)];
    expected.sort();
    assert_eq!(counts, expected);
    assert!(
        store
            .unread_counts(user("eve").id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A message mentioning `mentioned`, with their notifications and events, as chat
/// makes it.
fn mentioning(message: &Message, mentioned: &[&UserRef]) -> NewMessage {
    let mentions = mentioned
        .iter()
        .map(|user| {
            let notification = Notification {
                id: Uuid::now_v7(),
                user_id: user.id,
                message_id: message.id,
                conversation_id: message.conversation_id,
                conversation_name: String::new(),
                sender: message.sender.clone(),
                snippet: String::new(),
                created_at: message.created_at,
                read_at: None,
            };
            NewMention {
                event: Event::new(
                    "chat",
                    Payload::MessageMentioned(events::MessageMentioned {
                        notification_id: notification.id.to_string(),
                        message_id: message.id.to_string(),
                        conversation_id: message.conversation_id.to_string(),
                        sender_id: message.sender.id.to_string(),
                        sender_name: message.sender.username.clone(),
                        user_id: user.id.to_string(),
                        username: user.username.clone(),
                    }),
                ),
                notification,
            }
        })
        .collect();
    NewMessage {
        mentions,
        ..sent(message)
    }
}

fn page(unread_only: bool, before: Option<Uuid>, limit: u32) -> NotificationPage {
    NotificationPage {
        unread_only,
        before,
        limit,
    }
}

async fn mentions_are_stored_with_their_message_and_events_in_one_transaction(store: &ChatStore) {
    let (ada, bob, cyd) = (user("ada"), user("bob"), user("cyd"));
    let general = create_room(store, "general", &ada).await;
    for member in [&bob, &cyd] {
        store.join(general.id, member, now()).await.unwrap();
    }
    let hello = message(&general, &ada, "hi @bob and @cyd");
    let stored = store
        .insert_messages_mentioning(&[mentioning(&hello, &[&bob, &cyd])])
        .await
        .unwrap();
    let Inserted::Stored {
        notifications: notified,
        ..
    } = &stored[0]
    else {
        panic!("a member's message is stored: {stored:?}");
    };
    assert_eq!(notified.len(), 2);
    let written = outbox_of(store, "message.mentioned").await;
    assert_eq!(
        event_ids(&written).len(),
        2,
        "one event per mention, with the message"
    );
    let listed = store
        .notifications(bob.id, page(false, None, 10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message_id, hello.id);
    assert_eq!(listed[0].sender, ada);
    assert_eq!(listed[0].snippet, "hi @bob and @cyd");
    assert_eq!(listed[0].conversation_name, "general");
    assert_eq!(listed[0].read_at, None);
    assert_eq!(store.unread_notifications(cyd.id).await.unwrap(), 1);
    assert_eq!(store.unread_notifications(ada.id).await.unwrap(), 0);

    // The batch fails whole (an event id written already): neither message nor mention is
    // kept.
    let again = message(&general, &ada, "@bob again");
    let mut broken = mentioning(&again, &[&bob]);
    broken.mentions[0].event.id = event_ids(&written)[0];
    assert!(store.insert_messages_mentioning(&[broken]).await.is_err());
    assert_eq!(store.unread_notifications(bob.id).await.unwrap(), 1);
    assert!(!store.has_message(general.id, again.id).await.unwrap());
}

async fn mentions_of_a_message_that_is_not_stored_are_not_stored(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    let intruder = message(&general, &bob, "@ada look");
    let stored = store
        .insert_messages_mentioning(&[mentioning(&intruder, &[&ada])])
        .await
        .unwrap();
    assert_eq!(stored, vec![Inserted::NotMember]);
    assert_eq!(store.unread_notifications(ada.id).await.unwrap(), 0);
    assert!(outbox_of(store, "message.mentioned").await.is_empty());
}

async fn members_are_found_by_name_only_in_their_conversation(store: &ChatStore) {
    let (ada, bob, eve) = (user("ada"), user("bob"), user("eve"));
    let general = create_room(store, "general", &ada).await;
    let other = create_room(store, "other", &eve).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let names = ["bob".to_owned(), "eve".to_owned(), "nobody".to_owned()];
    let found = store.members_named(general.id, &names).await.unwrap();
    assert_eq!(found, vec![bob.clone()], "eve is not a member here");
    let found = store.members_named(other.id, &names).await.unwrap();
    assert_eq!(found, vec![eve]);
    assert!(
        store
            .members_named(general.id, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn notifications_page_newest_first_and_hide_what_a_leaver_may_not_read(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let mut mentions = Vec::new();
    for n in 0..5 {
        let said = message(&general, &ada, &format!("@bob number {n}"));
        store
            .insert_messages_mentioning(&[mentioning(&said, &[&bob])])
            .await
            .unwrap();
        mentions.push(said.id);
    }
    let first = store
        .notifications(bob.id, page(false, None, 3))
        .await
        .unwrap();
    let second = store
        .notifications(bob.id, page(false, Some(first[2].id), 3))
        .await
        .unwrap();
    let seen: Vec<Uuid> = first.iter().chain(&second).map(|n| n.message_id).collect();
    let mut newest_first = mentions.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every notification once, newest first");
    assert!(
        store
            .notifications(ada.id, page(false, None, 10))
            .await
            .unwrap()
            .is_empty()
    );

    store.leave(general.id, bob.id).await.unwrap();
    let after = store
        .notifications(bob.id, page(false, None, 10))
        .await
        .unwrap();
    assert_eq!(after.len(), 5, "the list keeps them");
    assert!(
        after.iter().all(|n| n.snippet.is_empty()),
        "but not the text of a room he left"
    );
}

async fn marking_notifications_read_touches_only_ones_own(store: &ChatStore) {
    let (ada, bob, cyd) = (user("ada"), user("bob"), user("cyd"));
    let general = create_room(store, "general", &ada).await;
    for member in [&bob, &cyd] {
        store.join(general.id, member, now()).await.unwrap();
    }
    for n in 0..3 {
        let said = message(&general, &ada, &format!("@bob @cyd {n}"));
        store
            .insert_messages_mentioning(&[mentioning(&said, &[&bob, &cyd])])
            .await
            .unwrap();
    }
    let bobs = store
        .notifications(bob.id, page(false, None, 10))
        .await
        .unwrap();
    let cyds = store
        .notifications(cyd.id, page(false, None, 10))
        .await
        .unwrap();
    // Bob names one of his and one of Cyd's: only his moves.
    let marked = store
        .mark_notifications_read(bob.id, Some(&[bobs[0].id, cyds[0].id]), now())
        .await
        .unwrap();
    assert_eq!(marked, 1);
    assert_eq!(store.unread_notifications(bob.id).await.unwrap(), 2);
    assert_eq!(store.unread_notifications(cyd.id).await.unwrap(), 3);
    let unread = store
        .notifications(bob.id, page(true, None, 10))
        .await
        .unwrap();
    assert_eq!(unread.len(), 2);
    assert!(
        unread
            .iter()
            .all(|n| n.read_at.is_none() && n.id != bobs[0].id)
    );
    assert_eq!(
        store
            .mark_notifications_read(bob.id, None, now())
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.unread_notifications(bob.id).await.unwrap(), 0);
    assert_eq!(store.unread_notifications(cyd.id).await.unwrap(), 3);
    assert_eq!(
        store
            .mark_notifications_read(bob.id, None, now())
            .await
            .unwrap(),
        0,
        "twice marks nothing"
    );
}

// Full-text search

/// A first-page search by `user` over all their conversations.
fn search_query(user: &UserRef, text: &str) -> SearchQuery {
    SearchQuery {
        user: user.id,
        text: SearchText::parse(text).expect("a valid search text"),
        conversation: None,
        snapshot: Uuid::max(),
        offset: 0,
        limit: 50,
        window: 1000,
    }
}

async fn search(store: &ChatStore, user: &UserRef, text: &str) -> Vec<SearchHit> {
    store
        .search_messages(&search_query(user, text))
        .await
        .expect("a search answers")
}

fn hit_ids(hits: &[SearchHit]) -> Vec<Uuid> {
    hits.iter().map(|hit| hit.message.id).collect()
}

/// Changes a stored body with a plain UPDATE, as an edit or a deletion's tombstone does.
async fn set_body(store: &TestStore, id: Uuid, body: &str) {
    const SQL: &str = "UPDATE messages SET body = $1 WHERE id = $2";
    let updated = platform::on_pool!(&store.sql().await, |pool| {
        sqlx::query(SQL)
            .bind(body)
            .bind(id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    });
    assert_eq!(updated.expect("the UPDATE runs"), 1);
}

async fn search_ranks_better_matches_first_and_ties_newest_first(store: &ChatStore) {
    let ada = user("ada");
    let lobby = create_room(store, "lobby", &ada).await;
    let once = post(store, &lobby, &ada, "the harbor at dawn, boats and gulls").await;
    let thrice = post(store, &lobby, &ada, "harbor harbor harbor").await;
    let other = post(store, &lobby, &ada, "nothing to see here").await;
    let tie_old = post(store, &lobby, &ada, "harbor lights").await;
    let tie_new = post(store, &lobby, &ada, "harbor lights").await;
    let hits = search(store, &ada, "HARBOR").await;
    assert_eq!(
        hits.len(),
        4,
        "case does not matter; {other:?} does not match"
    );
    assert_eq!(
        hits[0].message.id, thrice.id,
        "the most mentions ranks first"
    );
    let position = |id| hits.iter().position(|hit| hit.message.id == id).unwrap();
    assert!(
        position(tie_new.id) < position(tie_old.id),
        "equal scores: newest first"
    );
    assert!(
        position(tie_old.id) < position(once.id),
        "a short match outranks a long one"
    );
    assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
    assert_eq!(hits[0].message, thrice, "the message comes back whole");
    assert_eq!(hits[0].conversation_kind, Kind::Room);
    assert_eq!(hits[0].conversation_name, "lobby");
    // Every word must match.
    assert_eq!(
        hit_ids(&search(store, &ada, "harbor gulls").await),
        [once.id]
    );
    assert!(search(store, &ada, "harbor zebra").await.is_empty());
}

async fn search_snippets_locate_the_matched_words(store: &ChatStore) {
    let ada = user("ada");
    let bob = user("bob");
    let direct = open_direct(store, &ada, &bob).await;
    let said = post(
        store,
        &direct,
        &bob,
        "Hello World, hello again — «bonjour» world",
    )
    .await;
    let hits = search(store, &ada, "hello").await;
    assert_eq!(hit_ids(&hits), [said.id]);
    assert_eq!(hits[0].conversation_kind, Kind::Direct);
    assert_eq!(hits[0].conversation_name, "");
    let snippet = &hits[0].snippet;
    assert_eq!(snippet.text, said.body, "a short body is its own snippet");
    assert_eq!(snippet.highlights, vec![0..5, 13..18]);
    let marked: Vec<String> = snippet
        .highlights
        .iter()
        .map(|range| {
            let chars: Vec<char> = snippet.text.chars().collect();
            chars[range.start as usize..range.end as usize]
                .iter()
                .collect()
        })
        .collect();
    assert_eq!(marked, ["Hello", "hello"]);
    // Offsets count characters, not bytes: past the « and — of this body.
    let hits = search(store, &ada, "world bonjour").await;
    assert_eq!(hits[0].snippet.highlights, vec![6..11, 28..35, 37..42]);
    // A long body is cut around the words found.
    let long = format!("{} needle {}", "hay ".repeat(200), "straw ".repeat(200));
    post(store, &direct, &ada, &long).await;
    let hits = search(store, &bob, "needle").await;
    let snippet = &hits[0].snippet;
    assert!(snippet.text.contains("needle") && snippet.text.chars().count() < 600);
    assert_eq!(snippet.highlights.len(), 1);
    let range = snippet.highlights[0].clone();
    let found: String = snippet
        .text
        .chars()
        .skip(range.start as usize)
        .take((range.end - range.start) as usize)
        .collect();
    assert_eq!(found, "needle");
}

async fn search_pages_cover_every_hit_once_despite_new_messages(store: &ChatStore) {
    let ada = user("ada");
    let lobby = create_room(store, "lobby", &ada).await;
    let mut expected = Vec::new();
    for n in 0..23 {
        // Three scores, many ties.
        let body = format!("{} {n}", "common ".repeat(1 + n % 3));
        expected.push(post(store, &lobby, &ada, &body).await.id);
    }
    let mut query = search_query(&ada, "common");
    query.limit = 5;
    query.snapshot = chat::search::snapshot_at(Utc::now());
    let mut seen = Vec::new();
    loop {
        let page = store.search_messages(&query).await.unwrap();
        // Sent meanwhile, after the snapshot: never part of this search.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        post(store, &lobby, &ada, "common and new").await;
        seen.extend(hit_ids(&page));
        if page.is_empty() {
            break;
        }
        query.offset += query.limit;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no hit twice");
    expected.sort();
    assert_eq!(
        sorted, expected,
        "every hit once, none sent after the first page"
    );
}

async fn search_never_shows_a_conversation_of_others(store: &ChatStore) {
    let ada = user("ada");
    let bob = user("bob");
    let eve = user("eve");
    let lobby = create_room(store, "lobby", &ada).await;
    let secret = create_room(store, "secret", &bob).await;
    let direct = open_direct(store, &bob, &eve).await;
    let mine = post(store, &lobby, &ada, "the password is swordfish").await;
    post(store, &secret, &bob, "the password is swordfish too").await;
    post(store, &direct, &eve, "swordfish between us").await;
    assert_eq!(hit_ids(&search(store, &ada, "swordfish").await), [mine.id]);
    // Narrowed to a conversation that is not theirs: nothing, even though words match.
    let mut query = search_query(&ada, "swordfish");
    query.conversation = Some(secret.id);
    assert!(store.search_messages(&query).await.unwrap().is_empty());
    query.conversation = Some(direct.id);
    assert!(store.search_messages(&query).await.unwrap().is_empty());
    // A stranger finds nothing at all; whoever leaves a room stops finding its messages.
    assert!(
        search(store, &user("mallory"), "swordfish")
            .await
            .is_empty()
    );
    assert_eq!(search(store, &bob, "swordfish").await.len(), 2);
    assert!(store.leave(secret.id, bob.id).await.unwrap());
    assert_eq!(search(store, &bob, "swordfish").await.len(), 1);
    // Narrowed to one of theirs: only that one.
    assert!(store.join(lobby.id, &eve, now()).await.unwrap());
    let mut query = search_query(&eve, "swordfish");
    query.conversation = Some(lobby.id);
    let hits = store.search_messages(&query).await.unwrap();
    assert_eq!(hit_ids(&hits), [mine.id]);
}

async fn search_treats_query_syntax_as_text(store: &ChatStore) {
    let ada = user("ada");
    let lobby = create_room(store, "lobby", &ada).await;
    let near = post(store, &lobby, &ada, "meet me near the gate").await;
    let star = post(store, &lobby, &ada, "pointer a*b deref").await;
    let quoted = post(store, &lobby, &ada, r#"she said "bye" loudly"#).await;
    post(store, &lobby, &ada, "unrelated words").await;
    for text in [
        "*",
        "\"",
        "\"\"",
        "(((",
        ")",
        "NEAR(",
        "NEAR(a b, 2)",
        "AND OR NOT",
        "^",
        ":",
        "-",
        "body:x",
        "col : x",
        "{body}",
        "a OR",
        "NOT unrelated",
        "'",
        "'; DROP TABLE messages; --",
        "&",
        "|",
        "!",
        "<->",
        "\\",
    ] {
        // Answers (no syntax error), and finds only messages holding its words as text.
        let found = search(store, &ada, text).await;
        assert!(found.len() <= 1, "{text:?} found {found:?}");
    }
    assert_eq!(
        hit_ids(&search(store, &ada, "NEAR").await),
        [near.id],
        "a word"
    );
    assert_eq!(hit_ids(&search(store, &ada, "near(").await), [near.id]);
    assert_eq!(hit_ids(&search(store, &ada, "a*b").await), [star.id]);
    assert_eq!(hit_ids(&search(store, &ada, r#""bye""#).await), [quoted.id]);
    assert!(
        search(store, &ada, "a*")
            .await
            .iter()
            .all(|hit| hit.message.id == star.id)
    );
    assert!(
        search(store, &ada, "poin*").await.is_empty(),
        "no prefix operator"
    );
    assert!(
        search(store, &ada, "NOT unrelated").await.is_empty(),
        "NOT is a word"
    );
    assert!(search(store, &ada, "(((").await.is_empty());
    assert!(search(store, &ada, "AND OR NOT").await.is_empty());
    assert_eq!(search(store, &ada, "unrelated").await.len(), 1);
}

async fn search_follows_edits_tombstones_and_deletions(store: &TestStore) {
    let ada = user("ada");
    let bob = user("bob");
    let lobby = create_room(store, "lobby", &ada).await;
    let edited = post(store, &lobby, &ada, "first draft with typo").await;
    let gone = post(store, &lobby, &ada, "regrettable draft").await;
    assert_eq!(search(store, &ada, "draft").await.len(), 2);
    set_body(store, edited.id, "final version, corrected").await;
    assert!(
        search(store, &ada, "typo").await.is_empty(),
        "old words forgotten"
    );
    let hits = search(store, &ada, "corrected").await;
    assert_eq!(hit_ids(&hits), [edited.id], "new words found");
    assert_eq!(hits[0].message.body, "final version, corrected");
    // A tombstone's body is empty: found by none of its words.
    set_body(store, gone.id, "").await;
    assert!(search(store, &ada, "regrettable").await.is_empty());
    assert!(search(store, &ada, "draft").await.is_empty());
    // Messages deleted with their conversation leave the index too (SQLite may hand
    // their rowids to new messages).
    let direct = open_direct(store, &ada, &bob).await;
    post(store, &direct, &bob, "ephemeral whisper").await;
    assert_eq!(search(store, &ada, "whisper").await.len(), 1);
    store.delete_user_data(bob.id).await.unwrap();
    let later = post(store, &lobby, &ada, "something else entirely").await;
    assert!(search(store, &ada, "whisper").await.is_empty());
    assert_eq!(hit_ids(&search(store, &ada, "entirely").await), [later.id]);
}

async fn search_ranks_only_the_newest_window_of_matches(store: &TestStore) {
    let ada = user("ada");
    let lobby = create_room(store, "lobby", &ada).await;
    // The oldest is the best match, but it is outside a window of three.
    let best_but_old = post(store, &lobby, &ada, "echo echo echo").await;
    let mut newest = Vec::new();
    for n in 0..4 {
        newest.push(
            post(store, &lobby, &ada, &format!("echo number {n}"))
                .await
                .id,
        );
    }
    // Before and after the planner's statistics say "echo" is in every message (PostgreSQL
    // then walks the newest messages instead of using the word's bitmap): the same hits.
    for analyzed in [false, true] {
        if analyzed {
            let pool = store.sql().await;
            let analyze = match pool.backend() {
                Backend::Postgres => "ANALYZE messages",
                Backend::Sqlite => "ANALYZE",
            };
            platform::on_pool!(&pool, |pool| sqlx::query(analyze)
                .execute(pool)
                .await
                .map(drop))
            .expect("ANALYZE runs");
        }
        let mut query = search_query(&ada, "echo");
        query.window = 3;
        let mut found = hit_ids(&store.search_messages(&query).await.unwrap());
        found.sort();
        assert_eq!(found, newest[1..], "analyzed: {analyzed}");
        query.window = 1000;
        let all = store.search_messages(&query).await.unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].message.id, best_but_old.id);
        query.conversation = Some(lobby.id);
        assert_eq!(store.search_messages(&query).await.unwrap().len(), 5);
    }
}

/// A property over generated texts rather than a list: whatever the parser takes as a
/// search text, the backend answers it (never a query-syntax error, which the broker
/// would have to answer 500) and finds only messages holding every word. The texts mix
/// the characters FTS5 and tsquery treat as syntax with words, operators, non-Latin
/// letters and emoji; a fixed seed keeps a failure repeatable.
async fn search_answers_every_text_the_parser_takes(store: &ChatStore) {
    const PIECES: &[&str] = &[
        "\"", "'", "*", "(", ")", ":", "^", "-", "+", "{", "}", "[", "]", "|", "&", "!", "<", ">",
        "~", ",", ";", "\\", "/", "%", "_", "@", "#", "NEAR", "NEAR/2", "AND", "OR", "NOT", "body",
        "col", "é", "ß", "日本", "😀", "0", "x", "gate", "meet", " ", " ", " ", "\t",
    ];
    let ada = user("ada");
    let lobby = create_room(store, "lobby", &ada).await;
    post(store, &lobby, &ada, "meet me near the gate").await;
    post(
        store,
        &lobby,
        &ada,
        "x AND y OR z: body(col) \"quoted\" 日本 😀",
    )
    .await;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: usize| {
        // xorshift64*: a fixed, dependency-free sequence.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        usize::try_from(state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33).unwrap() % bound
    };
    let mut searched = 0;
    for _ in 0..400 {
        let text: String = (0..1 + next(12))
            .map(|_| PIECES[next(PIECES.len())])
            .collect();
        if SearchText::parse(&text).is_err() {
            continue; // refused as input: the client gets a 400
        }
        searched += 1;
        let hits = store
            .search_messages(&search_query(&ada, &text))
            .await
            .unwrap_or_else(|error| panic!("{text:?} failed: {error}"));
        assert!(hits.len() <= 2, "{text:?} found {} hits", hits.len());
    }
    assert!(
        searched > 200,
        "only {searched} of 400 texts were searchable"
    );
}

// ---------------------------------------------------------------------------------------
// Attachments

/// A quota no test reaches.
const BIG_QUOTA: u64 = 1 << 40;

/// An upload's row as chat writes it before the bytes come.
fn upload(conversation: &Conversation, uploader: &UserRef, name: &str) -> NewUpload {
    NewUpload {
        attachment: Attachment {
            id: Uuid::now_v7(),
            conversation_id: conversation.id,
            uploader_id: uploader.id,
            name: name.to_owned(),
            size: 0,
            content_type: "application/pdf".to_owned(),
            dimensions: None,
            created_at: now(),
        },
        quota: BIG_QUOTA,
    }
}

/// Starts and finishes an upload of `size` bytes; the attachment stored.
async fn uploaded(
    store: &ChatStore,
    conversation: &Conversation,
    uploader: &UserRef,
    size: u64,
) -> Attachment {
    let new = upload(conversation, uploader, "report.pdf");
    let started = store.start_upload(&new, size).await.unwrap();
    assert!(
        matches!(started, Upload::Done(ref row) if !row.ready),
        "{started:?}"
    );
    match store
        .finish_upload(new.attachment.id, uploader.id, size, BIG_QUOTA)
        .await
        .unwrap()
    {
        Upload::Done(row) => {
            assert!(row.ready);
            row.attachment
        }
        other => panic!("a finished upload is ready: {other:?}"),
    }
}

/// A message claiming `attachments`, as chat stores it.
fn with_attachments(message: &Message, attachments: &[&Attachment]) -> NewMessage {
    NewMessage {
        attachments: attachments.iter().map(|attachment| attachment.id).collect(),
        ..sent(message)
    }
}

/// Stores one message claiming `attachments`; what became of it.
async fn post_with(store: &ChatStore, message: &Message, attachments: &[&Attachment]) -> Inserted {
    store
        .insert_messages_mentioning(&[with_attachments(message, attachments)])
        .await
        .unwrap()
        .remove(0)
}

/// The `attachment.removed` events written so far: (ids, reason) each.
async fn removals(store: &ChatStore) -> Vec<(Vec<Uuid>, String)> {
    outbox_of(store, "attachment.removed")
        .await
        .into_iter()
        .map(|row| match row.payload {
            Payload::AttachmentRemoved(removed) => (
                removed
                    .attachment_ids
                    .iter()
                    .map(|id| Uuid::parse_str(id).unwrap())
                    .collect(),
                removed.reason,
            ),
            other => panic!("an attachment.removed row holds its payload: {other:?}"),
        })
        .collect()
}

async fn an_upload_is_ready_once_finished_and_claimed_by_one_message(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let new = upload(&general, &ada, "notes.txt");
    store.start_upload(&new, 0).await.unwrap();
    let row = store.attachment(new.attachment.id).await.unwrap().unwrap();
    assert!(!row.ready, "not ready while its bytes are stored");
    let file = uploaded(store, &general, &ada, 1234).await;
    assert_eq!(file.size, 1234);

    let said = message(&general, &ada, "see attached");
    let Inserted::Stored { attachments, .. } = post_with(store, &said, &[&file]).await else {
        panic!("the uploader sends their file");
    };
    assert_eq!(attachments, vec![file.clone()]);
    let stored = store.attachment(file.id).await.unwrap().unwrap();
    assert_eq!(stored.message_id, Some(said.id));
    assert_eq!(
        store.attachments_of(&[said.id]).await.unwrap(),
        vec![(said.id, file.clone())]
    );

    let again = message(&general, &ada, "again");
    assert_eq!(
        post_with(store, &again, &[&file]).await,
        Inserted::AttachmentsRefused,
        "one message carries a file"
    );
    assert!(
        !store.has_message(general.id, again.id).await.unwrap(),
        "a refused message is not stored"
    );
}

async fn only_the_uploaders_own_unclaimed_uploads_to_the_conversation_are_claimed(
    store: &ChatStore,
) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let other = create_room(store, "other", &ada).await;
    let adas = uploaded(store, &general, &ada, 10).await;
    let elsewhere = uploaded(store, &other, &ada, 10).await;
    let unfinished = upload(&general, &ada, "half.bin");
    store.start_upload(&unfinished, 0).await.unwrap();

    for (sender, attachment, why) in [
        (&bob, &adas, "someone else's upload"),
        (&ada, &elsewhere, "an upload to another conversation"),
        (&ada, &unfinished.attachment, "an upload not finished"),
    ] {
        let said = message(&general, sender, "mine now");
        assert_eq!(
            post_with(store, &said, &[attachment]).await,
            Inserted::AttachmentsRefused,
            "{why} is not claimed"
        );
        assert!(!store.has_message(general.id, said.id).await.unwrap());
    }
    // A batch: the refused message is refused alone.
    let fine = message(&general, &ada, "fine");
    let refused = message(&general, &bob, "not fine");
    let outcomes = store
        .insert_messages_mentioning(&[
            with_attachments(&fine, &[&adas]),
            with_attachments(&refused, &[&elsewhere]),
        ])
        .await
        .unwrap();
    assert!(outcomes[0].is_stored());
    assert_eq!(outcomes[1], Inserted::AttachmentsRefused);
}

async fn a_refused_claim_undoes_the_claims_before_it(store: &ChatStore) {
    let (ada, bob) = (user("ada"), user("bob"));
    let general = create_room(store, "general", &ada).await;
    store.join(general.id, &bob, now()).await.unwrap();
    let first = uploaded(store, &general, &ada, 10).await;
    let bobs = uploaded(store, &general, &bob, 10).await;
    let said = message(&general, &ada, "two files");
    assert_eq!(
        post_with(store, &said, &[&first, &bobs]).await,
        Inserted::AttachmentsRefused
    );
    let row = store.attachment(first.id).await.unwrap().unwrap();
    assert_eq!(row.message_id, None, "the first claim was taken back");
    let retried = message(&general, &ada, "one file");
    assert!(post_with(store, &retried, &[&first]).await.is_stored());
}

async fn a_non_member_cannot_upload(store: &ChatStore) {
    let (ada, eve) = (user("ada"), user("eve"));
    let general = create_room(store, "general", &ada).await;
    let new = upload(&general, &eve, "x.bin");
    assert_eq!(
        store.start_upload(&new, 0).await.unwrap(),
        Upload::NotMember
    );
    assert_eq!(store.attachment(new.attachment.id).await.unwrap(), None);
}

async fn uploads_count_against_the_quota(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let quota = 100;
    let mut first = upload(&general, &ada, "a.bin");
    first.quota = quota;
    assert!(matches!(
        store.start_upload(&first, 60).await.unwrap(),
        Upload::Done(_)
    ));
    assert!(matches!(
        store
            .finish_upload(first.attachment.id, ada.id, 60, quota)
            .await
            .unwrap(),
        Upload::Done(_)
    ));
    assert_eq!(store.quota_used(ada.id).await.unwrap(), 60);

    let mut second = upload(&general, &ada, "b.bin");
    second.quota = quota;
    assert_eq!(
        store.start_upload(&second, 50).await.unwrap(),
        Upload::OverQuota,
        "an announced size over what is left is refused before the bytes"
    );
    assert!(matches!(
        store.start_upload(&second, 0).await.unwrap(),
        Upload::Done(_)
    ));
    assert_eq!(
        store
            .finish_upload(second.attachment.id, ada.id, 50, quota)
            .await
            .unwrap(),
        Upload::OverQuota,
        "and so are the bytes"
    );
    assert!(matches!(
        store
            .finish_upload(second.attachment.id, ada.id, 40, quota)
            .await
            .unwrap(),
        Upload::Done(_)
    ));
    assert_eq!(store.quota_used(ada.id).await.unwrap(), 100);
}

async fn deleting_a_message_removes_its_attachments_with_their_event(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let (a, b) = (
        uploaded(store, &general, &ada, 10).await,
        uploaded(store, &general, &ada, 20).await,
    );
    let said = message(&general, &ada, "two files");
    assert!(post_with(store, &said, &[&a, &b]).await.is_stored());
    assert_eq!(
        store.attachments_of(&[said.id]).await.unwrap(),
        vec![(said.id, a.clone()), (said.id, b.clone())],
        "in the order sent"
    );
    assert!(matches!(
        delete(store, general.id, said.id, ada.id, false).await,
        Deleted::Done(_)
    ));
    assert_eq!(store.attachment(a.id).await.unwrap(), None);
    assert_eq!(store.attachment(b.id).await.unwrap(), None);
    let mut removed = removals(store).await;
    assert_eq!(removed.len(), 1, "one event for the message's files");
    let (mut ids, reason) = removed.remove(0);
    ids.sort();
    assert_eq!(ids, vec![a.id, b.id]);
    assert_eq!(reason, "message_deleted");
    assert!(matches!(
        delete(store, general.id, said.id, ada.id, false).await,
        Deleted::Already(_)
    ));
    assert_eq!(
        removals(store).await.len(),
        1,
        "a tombstone has nothing left to remove"
    );
}

async fn unclaimed_uploads_expire_with_their_event(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let claimed = uploaded(store, &general, &ada, 10).await;
    assert!(
        post_with(store, &message(&general, &ada, "sent"), &[&claimed])
            .await
            .is_stored()
    );
    let forgotten = uploaded(store, &general, &ada, 10).await;
    let cut_short = upload(&general, &ada, "cut.bin");
    store.start_upload(&cut_short, 0).await.unwrap();

    assert!(
        store
            .expire_unclaimed(now() - Duration::hours(1), 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing is an hour old"
    );
    let mut expired = store
        .expire_unclaimed(now() + Duration::seconds(1), 100)
        .await
        .unwrap();
    expired.sort();
    let mut expected = vec![forgotten.id, cut_short.attachment.id];
    expected.sort();
    assert_eq!(
        expired, expected,
        "unclaimed and unfinished uploads expire, sent ones stay"
    );
    assert!(store.attachment(claimed.id).await.unwrap().is_some());
    let removed = removals(store).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].1, "unclaimed");
}

async fn deleting_user_data_removes_their_uploads_and_those_of_their_directs(store: &ChatStore) {
    let (ada, grace, bob) = (user("ada"), user("grace"), user("bob"));
    let general = create_room(store, "general", &bob).await;
    store.join(general.id, &ada, now()).await.unwrap();
    let adas = uploaded(store, &general, &ada, 10).await;
    assert!(
        post_with(store, &message(&general, &ada, "mine"), &[&adas])
            .await
            .is_stored()
    );
    let bobs = uploaded(store, &general, &bob, 10).await;
    let with_grace = open_direct(store, &ada, &grace).await;
    let graces = uploaded(store, &with_grace, &grace, 10).await;

    store.delete_user_data(ada.id).await.unwrap();

    assert_eq!(
        store.attachment(adas.id).await.unwrap(),
        None,
        "ada's own files go"
    );
    assert_eq!(
        store.attachment(graces.id).await.unwrap(),
        None,
        "so do the files of her direct conversations"
    );
    assert!(
        store.attachment(bobs.id).await.unwrap().is_some(),
        "others' room files stay"
    );
    let mut removed: Vec<Uuid> = removals(store)
        .await
        .into_iter()
        .flat_map(|(ids, _)| ids)
        .collect();
    removed.sort();
    let mut expected = vec![adas.id, graces.id];
    expected.sort();
    assert_eq!(removed, expected, "every removed row has its event");
}

async fn a_thumbnail_is_recorded_only_while_its_attachment_exists(store: &ChatStore) {
    let ada = user("ada");
    let general = create_room(store, "general", &ada).await;
    let file = uploaded(store, &general, &ada, 10).await;
    assert!(store.set_thumbnail(file.id, "image/png", 99).await.unwrap());
    let row = store.attachment(file.id).await.unwrap().unwrap();
    assert_eq!(row.thumbnail, Some(("image/png".to_owned(), 99)));
    store
        .remove_attachments(&[file.id], "unclaimed")
        .await
        .unwrap();
    assert!(
        !store.set_thumbnail(file.id, "image/png", 99).await.unwrap(),
        "a thumbnail made after its attachment went is reported, so it is deleted"
    );
}
