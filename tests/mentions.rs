//! Unread counts, @mentions and notifications as users see them through the broker: the
//! counts in the conversation list and in read receipts, the notification list and
//! marking it read, the live `notification` frame (to the mentioned user's sockets only),
//! the reader's unread count reaching their other tabs, and the listener's digest mail
//! to mentioned users who are offline.

mod common;

use common::{
    TestApp, User, eventually,
    rabbit::TestRabbit,
    ws::{Socket, next_of_type, nothing_of_type, ready},
};
use platform::events::{Event, rabbit};
use proto::events::v1::{MessageMentioned, envelope::Payload};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn room_with(owner: &User, name: &str, members: &[&User]) -> String {
    let room = owner
        .post_expecting("/api/rooms", &json!({ "name": name }), StatusCode::CREATED)
        .await;
    let id = room["id"].as_str().expect("a room id").to_owned();
    for member in members {
        member
            .post_expecting(&format!("/api/rooms/{id}/join"), &json!({}), StatusCode::OK)
            .await;
    }
    id
}

/// The caller's unread count in `conversation`, from the conversation list.
async fn unread_in(user: &User, conversation: &str) -> u64 {
    let listed = user.get_ok("/api/conversations").await;
    listed["conversations"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["id"] == conversation)
        .unwrap_or_else(|| panic!("{conversation} in {listed}"))["unread_count"]
        .as_u64()
        .expect("an unread count")
}

async fn mark_read(user: &User, conversation: &str, up_to: &Value) -> Value {
    user.post_expecting(
        &format!("/api/conversations/{conversation}/read"),
        &json!({ "up_to": up_to }),
        StatusCode::OK,
    )
    .await
}

async fn notifications(user: &User, query: &str) -> Value {
    user.get_ok(&format!("/api/notifications{query}")).await
}

fn listed(page: &Value) -> &Vec<Value> {
    page["notifications"].as_array().expect("a list")
}

async fn socket(user: &User) -> Socket {
    let mut socket = user.open_socket().await;
    ready(&mut socket).await;
    socket
}

#[tokio::test]
async fn unread_counts_are_others_messages_after_the_read_marker() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let general = room_with(&ada, "general", &[&bob]).await;
    assert_eq!(unread_in(&ada, &general).await, 0);
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(bob.send(&general, &format!("from bob {n}")).await);
    }
    ada.send(&general, "my own message does not count").await;
    assert_eq!(unread_in(&ada, &general).await, 3);
    assert_eq!(unread_in(&bob, &general).await, 1);
    let receipt = mark_read(&ada, &general, &sent[1]["id"]).await;
    assert_eq!(receipt["unread_count"], 1, "{receipt}");
    assert_eq!(unread_in(&ada, &general).await, 1);
    let receipt = mark_read(&ada, &general, &sent[2]["id"]).await;
    assert_eq!(receipt["unread_count"], 0);
    assert_eq!(unread_in(&ada, &general).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn mentions_of_members_notify_them_and_nobody_else() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, cyd) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
    );
    let general = room_with(&ada, "general", &[&bob]).await;
    // cyd is not a member; ada is the sender; nobody is unknown.
    let said = ada
        .send(
            &general,
            "hi @Bob, @cyd and @ada and @nobody, mail bob@example.com",
        )
        .await;
    let page = notifications(&bob, "").await;
    assert_eq!(page["unread_count"], 1, "{page}");
    let mention = &listed(&page)[0];
    assert_eq!(mention["message_id"], said["id"]);
    assert_eq!(mention["conversation_id"], general.as_str());
    assert_eq!(mention["conversation_name"], "general");
    assert_eq!(mention["sender_name"], "ada");
    assert_eq!(mention["snippet"], said["body"]);
    assert!(mention.get("read_at").is_none(), "unread: {mention}");
    for nobody in [&cyd, &ada] {
        let page = notifications(nobody, "").await;
        assert_eq!(page["unread_count"], 0, "{}: {page}", nobody.username);
        assert!(listed(&page).is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn notifications_page_newest_first_and_only_ones_own_are_marked_read() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, cyd) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
    );
    let general = room_with(&ada, "general", &[&bob, &cyd]).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(ada.send(&general, &format!("@bob @cyd number {n}")).await);
    }
    let first = notifications(&bob, "?limit=2").await;
    assert_eq!(first["has_more"], true);
    let last = listed(&first)[1]["id"].as_str().unwrap().to_owned();
    let rest = notifications(&bob, &format!("?limit=10&before={last}")).await;
    assert_eq!(rest["has_more"], false);
    let order: Vec<&Value> = listed(&first)
        .iter()
        .chain(listed(&rest))
        .map(|n| &n["message_id"])
        .collect();
    let newest_first: Vec<&Value> = sent.iter().rev().map(|m| &m["id"]).collect();
    assert_eq!(order, newest_first);

    // cyd names one of bob's notifications: ignored, never marked.
    let bobs_newest = listed(&first)[0]["id"].clone();
    let theirs = cyd
        .post_expecting(
            "/api/notifications/read",
            &json!({ "ids": [bobs_newest] }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(theirs["marked"], 0);
    assert_eq!(theirs["unread_count"], 5);
    assert_eq!(notifications(&bob, "").await["unread_count"], 5);

    let mine = bob
        .post_expecting(
            "/api/notifications/read",
            &json!({ "ids": [bobs_newest] }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(mine["marked"], 1);
    assert_eq!(mine["unread_count"], 4);
    let unread = notifications(&bob, "?unread_only=true").await;
    assert_eq!(listed(&unread).len(), 4);
    assert!(listed(&unread).iter().all(|n| n["id"] != bobs_newest));
    let all = bob
        .post_expecting(
            "/api/notifications/read",
            &json!({ "all": true }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(all["marked"], 4);
    assert_eq!(all["unread_count"], 0);
    assert_eq!(
        notifications(&cyd, "").await["unread_count"],
        5,
        "cyd's stay"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_left_room_keeps_its_notifications_but_not_their_text() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let general = room_with(&ada, "general", &[&bob]).await;
    ada.send(&general, "@bob the secret plan").await;
    let left = bob
        .post(&format!("/api/rooms/{general}/leave"), &json!({}))
        .await;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    let page = notifications(&bob, "").await;
    assert_eq!(listed(&page).len(), 1);
    assert_eq!(listed(&page)[0]["snippet"], "", "{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_notification_frame_reaches_only_the_mentioned_users_sockets() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, cyd) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
    );
    let general = room_with(&ada, "general", &[&bob, &cyd]).await;
    let (mut bob_tab, mut bob_phone, mut cyds, mut adas) = (
        socket(&bob).await,
        socket(&bob).await,
        socket(&cyd).await,
        socket(&ada).await,
    );
    let said = ada.send(&general, "lunch, @bob?").await;
    for tab in [&mut bob_tab, &mut bob_phone] {
        let frame = next_of_type(tab, "notification").await;
        assert_eq!(frame["notification"]["message_id"], said["id"], "{frame}");
        assert_eq!(frame["notification"]["sender_name"], "ada");
        assert_eq!(frame["notification"]["snippet"], "lunch, @bob?");
    }
    nothing_of_type(&mut cyds, "notification").await;
    nothing_of_type(&mut adas, "notification").await;
    app.stop().await;
}

#[tokio::test]
async fn the_readers_unread_count_reaches_their_other_tab_and_nobody_elses() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let general = room_with(&ada, "general", &[&bob]).await;
    let (mut bob_tab, mut adas) = (socket(&bob).await, socket(&ada).await);
    let first = ada.send(&general, "one").await;
    ada.send(&general, "two").await;
    mark_read(&bob, &general, &first["id"]).await;
    let own = next_of_type(&mut bob_tab, "read").await;
    assert_eq!(own["user_id"], bob.id.as_str());
    assert_eq!(own["unread_count"], 1, "{own}");
    let others = next_of_type(&mut adas, "read").await;
    assert_eq!(others["up_to"], first["id"]);
    assert!(others.get("unread_count").is_none(), "{others}");
    app.stop().await;
}

/// The digest mails to `address` so far.
fn digests_to(app: &TestApp, address: &str) -> Vec<frontend::mailbox::Mail> {
    app.mails_to(address)
        .into_iter()
        .filter(|mail| mail.subject.contains("mention"))
        .collect()
}

#[tokio::test]
async fn offline_users_get_one_digest_of_their_unread_mentions_per_period() {
    let app = TestApp::start(&["--listener-mention-digest-period=2s"]).await;
    let (ada, bob, cyd, dan, eve) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("cyd").await,
        app.user("dan").await,
        app.user("eve").await,
    );
    for user in ["bob", "cyd", "dan"] {
        app.verify_address(&format!("{user}@example.com")).await;
    }
    let general = room_with(&ada, "general", &[&bob, &cyd, &dan, &eve]).await;
    // dan is online: he sees his notifications live, and gets no mail.
    let _dans = socket(&dan).await;
    for n in 0..3 {
        ada.send(&general, &format!("@bob @dan @eve ping {n}"))
            .await;
    }
    // cyd reads one of her two mentions in the app before the period ends.
    ada.send(&general, "@cyd first").await;
    ada.send(&general, "@cyd second").await;
    let cyds = notifications(&cyd, "").await;
    let read_one = listed(&cyds)[1]["id"].clone();
    cyd.post_expecting(
        "/api/notifications/read",
        &json!({ "ids": [read_one] }),
        StatusCode::OK,
    )
    .await;

    eventually("bob's and cyd's digests are mailed", || async {
        !digests_to(&app, "bob@example.com").is_empty()
            && !digests_to(&app, "cyd@example.com").is_empty()
    })
    .await;
    // Two more periods: no second digest without new mentions.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let bobs = digests_to(&app, "bob@example.com");
    assert_eq!(bobs.len(), 1, "one digest for three mentions");
    assert_eq!(bobs[0].subject, "3 new mentions on microchat");
    for n in 0..3 {
        assert!(
            bobs[0]
                .text
                .contains(&format!("ada in #general: @bob @dan @eve ping {n}")),
            "{}",
            bobs[0].text
        );
    }
    let cyds = digests_to(&app, "cyd@example.com");
    assert_eq!(cyds.len(), 1);
    assert_eq!(cyds[0].subject, "1 new mention on microchat");
    assert!(cyds[0].text.contains("@cyd second"), "{}", cyds[0].text);
    assert!(
        !cyds[0].text.contains("@cyd first"),
        "read in the app: {}",
        cyds[0].text
    );
    assert!(
        digests_to(&app, "dan@example.com").is_empty(),
        "dan was online"
    );
    assert!(
        digests_to(&app, "eve@example.com").is_empty(),
        "eve's address is unverified"
    );

    // A new mention later starts the next digest.
    ada.send(&general, "@bob again").await;
    eventually("bob's second digest is mailed", || async {
        digests_to(&app, "bob@example.com").len() == 2
    })
    .await;
    app.stop().await;
}

/// Publishes an event to the test's exchange, as a relay that crashed after publishing
/// (before deleting its outbox row) would: the listener sees it again.
async fn publish(test_rabbit: &TestRabbit, event: &Event) {
    let connection = rabbit::connect(&test_rabbit.url, "test publisher")
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let published = platform::events::Published {
        event_id: event.id,
        routing_key: event.routing_key.to_owned(),
        payload: event.payload.clone(),
    };
    let confirm = channel
        .basic_publish(
            test_rabbit.exchange.as_str().into(),
            event.routing_key.into(),
            Default::default(),
            &event.payload,
            rabbit::properties(&published),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(confirm.is_ack());
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_mention_event_delivered_again_makes_no_second_digest() {
    let Some(test_rabbit) = TestRabbit::create(8, std::time::Duration::from_secs(1)).await else {
        return;
    };
    let mut extra = test_rabbit.args(&test_rabbit.url);
    extra.push("--listener-mention-digest-period=2s".to_owned());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let app = TestApp::start(&extra).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    app.verify_address("bob@example.com").await;
    let general = room_with(&ada, "general", &[&bob]).await;
    let said = ada.send(&general, "@bob are you there?").await;
    let notification = listed(&notifications(&bob, "").await)[0]["id"].clone();
    // chat's own event reaches the listener; then the same event again, twice (a relay
    // that crashed after publishing): the digest still holds one mention, mailed once.
    let again = Event::new(
        "chat",
        Payload::MessageMentioned(MessageMentioned {
            notification_id: notification.as_str().unwrap().to_owned(),
            message_id: said["id"].as_str().unwrap().to_owned(),
            conversation_id: general.clone(),
            sender_id: ada.id.clone(),
            sender_name: "ada".into(),
            user_id: bob.id.clone(),
            username: "bob".into(),
        }),
    );
    publish(&test_rabbit, &again).await;
    publish(&test_rabbit, &again).await;
    eventually("bob's digest is mailed", || async {
        !digests_to(&app, "bob@example.com").is_empty()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mails = digests_to(&app, "bob@example.com");
    assert_eq!(mails.len(), 1, "one digest");
    assert_eq!(mails[0].subject, "1 new mention on microchat");
    app.stop().await;
}
