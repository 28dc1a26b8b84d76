//! Rooms, direct conversations, messages, history and read receipts over REST, as a user
//! sees them through the broker; the compatibility routes; and chat being away.

mod common;

use common::{Db, Services, TestApp, User, eventually, expect_error};
use proto::chat::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

fn messages_path(conversation: &str) -> String {
    format!("/api/conversations/{conversation}/messages")
}

fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["id"].as_str().expect("a message id").to_owned())
        .collect()
}

fn bodies(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["body"].as_str().expect("a message body"))
        .collect()
}

fn room<'a>(rooms: &'a Value, name: &str) -> &'a Value {
    rooms["rooms"]
        .as_array()
        .expect("a list of rooms")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("room {name} listed in {rooms}"))
}

async fn create_room(user: &User, name: &str) -> Value {
    user.post_expecting("/api/rooms", &json!({ "name": name }), StatusCode::CREATED)
        .await
}

#[tokio::test]
async fn creating_a_room_folds_its_name_and_refuses_duplicates_and_bad_names() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let room = create_room(&ada, "#Rust-Lang").await;
    assert_eq!(room["name"], "rust-lang", "folded, leading # dropped");
    assert_eq!(room["kind"], "room");
    assert_eq!(room["joined"], true, "the creator is in it");
    assert_eq!(room["member_count"], 1);

    let duplicate = ada
        .post("/api/rooms", &json!({ "name": "RUST-lang" }))
        .await;
    assert_eq!(
        expect_error(duplicate, StatusCode::CONFLICT).await,
        "conflict"
    );
    let too_long = "x".repeat(33);
    for bad in [
        "",
        "a",
        "#",
        "with space",
        "caf\u{e9}",
        "semi;colon",
        &too_long,
    ] {
        let refused = ada.post("/api/rooms", &json!({ "name": bad })).await;
        assert_eq!(
            expect_error(refused, StatusCode::BAD_REQUEST).await,
            "invalid_argument",
            "name {bad:?}"
        );
    }
    let long_topic = "t".repeat(201);
    for topic in ["two\nlines", long_topic.as_str()] {
        let refused = ada
            .post("/api/rooms", &json!({ "name": "topical", "topic": topic }))
            .await;
        expect_error(refused, StatusCode::BAD_REQUEST).await;
    }
    let rooms = ada.get_ok("/api/rooms").await;
    assert_eq!(
        rooms["rooms"].as_array().unwrap().len(),
        1,
        "refused rooms were not created: {rooms}"
    );
    let shortest = create_room(&ada, "ab").await;
    assert_eq!(shortest["name"], "ab");
    let longest = create_room(&ada, &format!("#{}", "Z".repeat(32))).await;
    assert_eq!(longest["name"], "z".repeat(32));
    let topical = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "topical", "topic": "All about topics" }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(topical["topic"], "All about topics");
    app.stop().await;
}

#[tokio::test]
async fn room_list_shows_joined_flags_and_member_counts_and_join_and_leave_are_idempotent() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let general = create_room(&ada, "general").await;
    create_room(&bob, "random").await;
    let id = general["id"].as_str().unwrap();

    let rooms = bob.get_ok("/api/rooms").await;
    assert_eq!(room(&rooms, "general")["joined"], false);
    assert_eq!(room(&rooms, "general")["member_count"], 1);
    assert_eq!(room(&rooms, "random")["joined"], true);

    for _ in 0..2 {
        let joined = bob
            .post_expecting(&format!("/api/rooms/{id}/join"), &json!({}), StatusCode::OK)
            .await;
        assert_eq!(joined["joined"], true);
        assert_eq!(joined["member_count"], 2, "joining twice counts once");
    }
    let rooms = bob.get_ok("/api/rooms").await;
    assert_eq!(room(&rooms, "general")["joined"], true);
    assert_eq!(room(&rooms, "general")["member_count"], 2);
    let rooms = ada.get_ok("/api/rooms").await;
    assert_eq!(room(&rooms, "random")["joined"], false, "per caller");
    assert!(bob.conversation_ids().await.contains(&id.to_owned()));

    for _ in 0..2 {
        let left = bob
            .post(&format!("/api/rooms/{id}/leave"), &json!({}))
            .await;
        assert_eq!(
            left.status(),
            StatusCode::NO_CONTENT,
            "leaving twice is fine"
        );
    }
    let rooms = bob.get_ok("/api/rooms").await;
    assert_eq!(room(&rooms, "general")["joined"], false);
    assert_eq!(room(&rooms, "general")["member_count"], 1);
    assert!(!bob.conversation_ids().await.contains(&id.to_owned()));
    let history = bob.get(&messages_path(id)).await;
    assert_eq!(
        expect_error(history, StatusCode::FORBIDDEN).await,
        "forbidden",
        "a room's history is for its members"
    );
    app.stop().await;
}

#[tokio::test]
async fn joining_or_leaving_an_unknown_room_is_not_found() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let unknown = Uuid::now_v7();
    for action in ["join", "leave"] {
        let response = ada
            .post(&format!("/api/rooms/{unknown}/{action}"), &json!({}))
            .await;
        assert_eq!(
            expect_error(response, StatusCode::NOT_FOUND).await,
            "not_found"
        );
        let malformed = ada
            .post(&format!("/api/rooms/not-a-uuid/{action}"), &json!({}))
            .await;
        expect_error(malformed, StatusCode::BAD_REQUEST).await;
    }
    app.stop().await;
}

/// Both users open their conversation ten times at once, on `db`.
async fn opening_a_direct_conversation_concurrently(db: Db) {
    let Some(app) = TestApp::start_on(db, &[]).await else {
        return;
    };
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let opened: Vec<String> = futures::future::join_all((0..10).map(|i| {
        let (ada, bob) = (ada.clone(), bob.clone());
        async move {
            if i % 2 == 0 {
                ada.open_direct(&bob).await
            } else {
                bob.open_direct(&ada).await
            }
        }
    }))
    .await;
    assert!(
        opened.iter().all(|id| *id == opened[0]),
        "one conversation for both, however often opened: {opened:?}"
    );
    assert_eq!(ada.open_direct(&bob).await, opened[0]);

    let listed = ada.get_ok("/api/conversations").await;
    let conversations = listed["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1, "{listed}");
    let direct = &conversations[0];
    assert_eq!(direct["kind"], "direct");
    assert_eq!(direct["member_count"], 2);
    let mut members: Vec<&str> = direct["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["ada", "bob"]);
    assert_eq!(bob.conversation_ids().await, [opened[0].as_str()]);
    app.stop().await;
}

#[tokio::test]
async fn opening_a_direct_conversation_twice_even_concurrently_gives_the_same_one() {
    opening_a_direct_conversation_concurrently(Db::Sqlite).await;
}

#[tokio::test]
async fn opening_a_direct_conversation_twice_even_concurrently_gives_the_same_one_on_postgres() {
    opening_a_direct_conversation_concurrently(Db::Postgres).await;
}

#[tokio::test]
async fn a_direct_conversation_needs_another_existing_user() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    // A well-formed request the caller's own identity makes impossible: 409, not 400.
    let with_self = ada
        .post("/api/conversations", &json!({ "user_id": ada.id }))
        .await;
    assert_eq!(
        expect_error(with_self, StatusCode::CONFLICT).await,
        "failed_precondition"
    );
    let unknown = ada
        .post("/api/conversations", &json!({ "user_id": Uuid::new_v4() }))
        .await;
    assert_eq!(
        expect_error(unknown, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    // A body that does not fit the schema is refused like every mistyped body.
    for malformed in [
        json!({ "user_id": "bob" }),
        json!({ "user_id": 7 }),
        json!({ "user_id": null }),
        json!({}),
    ] {
        let refused = ada.post("/api/conversations", &malformed).await;
        assert_eq!(
            expect_error(refused, StatusCode::BAD_REQUEST).await,
            "invalid_body",
            "{malformed}"
        );
    }
    assert!(ada.conversation_ids().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn non_member_cannot_read_post_or_mark_read_by_guessing_ids() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, carol) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let private = ada.open_direct(&bob).await;
    let secret = ada.send(&private, "just between us").await;
    let secret_id = secret["id"].as_str().unwrap();
    let own = carol.open_direct(&ada).await;
    let own_message = carol.send(&own, "hi ada").await;
    let own_message_id = own_message["id"].as_str().unwrap();

    // Someone else's conversation and one that does not exist look the same.
    for target in [private.clone(), Uuid::now_v7().to_string()] {
        let refused = [
            carol.get(&messages_path(&target)).await,
            carol
                .get(&format!("{}?after={secret_id}", messages_path(&target)))
                .await,
            carol
                .post(&messages_path(&target), &json!({ "body": "let me in" }))
                .await,
            carol
                .post(
                    &format!("/api/conversations/{target}/read"),
                    &json!({ "up_to": secret_id }),
                )
                .await,
            carol
                .post(
                    &format!("/api/conversations/{target}/read"),
                    &json!({ "up_to": own_message_id }),
                )
                .await,
            carol.get(&format!("/apiv2/usersession/{target}")).await,
            carol
                .post(
                    &format!("/apiv2/usersession/{target}/message"),
                    &json!({ "message": "let me in" }),
                )
                .await,
        ];
        for response in refused {
            let route = response.url().path().to_owned();
            assert_eq!(
                expect_error(response, StatusCode::FORBIDDEN).await,
                "forbidden",
                "{route}"
            );
        }
        // A direct conversation is not a room: joining it is refused like a missing room.
        for action in ["join", "leave"] {
            let response = carol
                .post(&format!("/api/rooms/{target}/{action}"), &json!({}))
                .await;
            assert_eq!(
                expect_error(response, StatusCode::NOT_FOUND).await,
                "not_found"
            );
        }
    }
    // A message id of another conversation is no receipt in one's own.
    let elsewhere = carol
        .post(
            &format!("/api/conversations/{own}/read"),
            &json!({ "up_to": secret_id }),
        )
        .await;
    expect_error(elsewhere, StatusCode::NOT_FOUND).await;

    let malformed = [
        (
            carol.get(&messages_path("not-a-uuid")).await,
            "invalid_path",
        ),
        (
            carol
                .post(&messages_path("not-a-uuid"), &json!({ "body": "x" }))
                .await,
            "invalid_path",
        ),
        (
            carol
                .post(
                    "/api/conversations/not-a-uuid/read",
                    &json!({ "up_to": secret_id }),
                )
                .await,
            "invalid_path",
        ),
        (
            carol.get("/apiv2/usersession/not-a-uuid").await,
            "invalid_path",
        ),
        (
            carol
                .post(
                    "/apiv2/usersession/not-a-uuid/message",
                    &json!({ "message": "x" }),
                )
                .await,
            "invalid_path",
        ),
        (
            carol
                .get(&format!("{}?before=nope", messages_path(&private)))
                .await,
            "invalid_query",
        ),
        (
            carol
                .get(&format!("{}?after=1", messages_path(&private)))
                .await,
            "invalid_query",
        ),
    ];
    for (response, code) in malformed {
        let route = response.url().to_string();
        assert_eq!(
            expect_error(response, StatusCode::BAD_REQUEST).await,
            code,
            "{route}"
        );
    }
    let mistyped = carol
        .post(
            &format!("/api/conversations/{own}/read"),
            &json!({ "up_to": "nope" }),
        )
        .await;
    assert_eq!(
        expect_error(mistyped, StatusCode::BAD_REQUEST).await,
        "invalid_body"
    );

    assert_eq!(carol.conversation_ids().await, [own.as_str()]);
    let history = bob.get_ok(&messages_path(&private)).await;
    assert_eq!(ids(&history), [secret_id], "nothing got in from outside");
    let listed = ada.get_ok("/api/conversations").await;
    let private_view = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == private.as_str())
        .expect("listed");
    assert!(
        private_view["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("last_read_id").is_none()),
        "no receipt got in from outside: {private_view}"
    );
    app.stop().await;
}

#[tokio::test]
async fn message_bodies_must_be_1_to_4000_characters_of_text() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let path = messages_path(&conversation);
    let too_long = "x".repeat(4_001);
    for bad in [
        "",
        "   ",
        " \n\t ",
        &too_long,
        "bell\u{7}",
        "nul\u{0}",
        "esc\u{1b}[2J",
    ] {
        let refused = ada.post(&path, &json!({ "body": bad })).await;
        assert_eq!(
            expect_error(refused, StatusCode::BAD_REQUEST).await,
            "invalid_argument",
            "{:?}",
            &bad[..bad.len().min(20)]
        );
    }
    let longest = "é".repeat(4_000);
    let sent = ada.send(&conversation, &longest).await;
    assert_eq!(sent["body"], longest.as_str(), "kept as sent");
    assert_eq!(sent["sender_name"], "ada");
    let lines = ada.send(&conversation, "two\nlines\tand a tab").await;
    assert_eq!(lines["body"], "two\nlines\tand a tab");

    let history = bob.get_ok(&path).await;
    assert_eq!(
        ids(&history),
        [lines["id"].as_str().unwrap(), sent["id"].as_str().unwrap()],
        "only the valid ones were stored"
    );
    app.stop().await;
}

/// Scrolls back through 25 messages while more arrive, on `db`.
async fn paging_back_while_new_messages_arrive(db: Db) {
    let Some(app) = TestApp::start_on(db, &[]).await else {
        return;
    };
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let path = messages_path(&conversation);
    let mut first = Vec::new();
    for i in 0..25 {
        let sender = if i % 3 == 0 { &bob } else { &ada };
        let sent = sender.send(&conversation, &format!("old {i}")).await;
        first.push(sent["id"].as_str().unwrap().to_owned());
    }

    let newest_page = ada.get_ok(&format!("{path}?limit=7")).await;
    let mut collected = ids(&newest_page);
    assert!(newest_page["has_more"].as_bool().unwrap());

    // Bob keeps talking while Ada scrolls back.
    let talker = {
        let (bob, conversation) = (bob.clone(), conversation.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..12 {
                let message = bob.send(&conversation, &format!("new {i}")).await;
                sent.push(message["id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    let mut has_more = true;
    let mut pages = 1;
    while has_more {
        let cursor = collected.last().unwrap();
        let page = ada.get_ok(&format!("{path}?limit=7&before={cursor}")).await;
        let page_ids = ids(&page);
        has_more = page["has_more"].as_bool().unwrap();
        assert!(
            page_ids.len() == 7 || !has_more,
            "only the last page is short: {page}"
        );
        collected.extend(page_ids);
        pages += 1;
        assert!(pages <= 5, "25 messages take 4 pages of 7");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pages, 4);
    collected.reverse();
    assert_eq!(
        collected, first,
        "every old message once, in the order sent, none of the new ones"
    );
    let page = ada
        .get_ok(&format!("{path}?limit=2&before={}", first[2]))
        .await;
    assert_eq!(bodies(&page), ["old 1", "old 0"], "newest first");

    let newer = talker.await.unwrap();
    let newest_old = first.last().unwrap();
    let caught_up = bob
        .get_ok(&format!("{path}?after={newest_old}&limit=100"))
        .await;
    assert_eq!(ids(&caught_up), newer, "the newer ones, oldest first");
    assert_eq!(caught_up["has_more"], false);
    let partial = bob
        .get_ok(&format!("{path}?after={newest_old}&limit=5"))
        .await;
    assert_eq!(ids(&partial), newer[..5]);
    assert_eq!(partial["has_more"], true);
    let latest = bob
        .get_ok(&format!("{path}?after={}", newer.last().unwrap()))
        .await;
    assert_eq!(ids(&latest), Vec::<String>::new());
    assert_eq!(latest["has_more"], false);
    let oldest = bob.get_ok(&format!("{path}?before={}", first[0])).await;
    assert_eq!(ids(&oldest), Vec::<String>::new());
    assert_eq!(oldest["has_more"], false);
    let exactly_a_page = bob
        .get_ok(&format!("{path}?before={}&limit=7", first[7]))
        .await;
    let mut expected: Vec<String> = first[..7].to_vec();
    expected.reverse();
    assert_eq!(ids(&exactly_a_page), expected);
    assert_eq!(
        exactly_a_page["has_more"], false,
        "nothing lies beyond a page that ends at the first message"
    );

    for bad in [
        "?limit=0".to_owned(),
        "?limit=101".to_owned(),
        "?limit=-1".to_owned(),
        "?limit=many".to_owned(),
        "?limit=5.0".to_owned(),
    ] {
        let refused = ada.get(&format!("{path}{bad}")).await;
        expect_error(refused, StatusCode::BAD_REQUEST).await;
    }
    // Both cursors: the gap between two known messages, oldest first.
    let gap = bob
        .get_ok(&format!("{path}?after={}&before={}", first[1], first[4]))
        .await;
    assert_eq!(ids(&gap), first[2..4].to_vec());
    let crossed = bob
        .get_ok(&format!("{path}?after={}&before={}", first[4], first[1]))
        .await;
    assert_eq!(ids(&crossed), Vec::<String>::new());
    let all = ada.get_ok(&format!("{path}?limit=100")).await;
    assert_eq!(ids(&all).len(), 37, "exactly what was sent");
    app.stop().await;
}

#[tokio::test]
async fn pagination_returns_every_message_exactly_once_in_order_even_while_new_ones_arrive() {
    paging_back_while_new_messages_arrive(Db::Sqlite).await;
}

#[tokio::test]
async fn pagination_returns_every_message_exactly_once_in_order_even_while_new_ones_arrive_on_postgres()
 {
    paging_back_while_new_messages_arrive(Db::Postgres).await;
}

#[tokio::test]
async fn read_marker_only_moves_forward_and_only_to_messages_of_that_conversation() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let conversation = ada.open_direct(&bob).await;
    let lobby = create_room(&ada, "lobby").await;
    let room_id = lobby["id"].as_str().unwrap();
    let in_room = ada.send(room_id, "in the lobby").await;
    let older = ada.send(&conversation, "one").await;
    let newer = ada.send(&conversation, "two").await;
    let (older, newer) = (older["id"].as_str().unwrap(), newer["id"].as_str().unwrap());
    let read = format!("/api/conversations/{conversation}/read");

    let elsewhere = bob.post(&read, &json!({ "up_to": in_room["id"] })).await;
    assert_eq!(
        expect_error(elsewhere, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    let unknown = bob.post(&read, &json!({ "up_to": Uuid::now_v7() })).await;
    expect_error(unknown, StatusCode::NOT_FOUND).await;

    let receipt = bob
        .post_expecting(&read, &json!({ "up_to": newer }), StatusCode::OK)
        .await;
    assert_eq!(receipt["up_to"], newer);
    assert_eq!(receipt["user_id"], bob.id.as_str());
    assert_eq!(receipt["conversation_id"], conversation.as_str());
    let receipt = bob
        .post_expecting(&read, &json!({ "up_to": older }), StatusCode::OK)
        .await;
    assert_eq!(receipt["up_to"], newer, "the marker never moves back");

    let marker_of = |listed: &Value, user: &str| -> Option<String> {
        let listed = listed["conversations"].as_array().unwrap();
        let direct = listed.iter().find(|c| c["kind"] == "direct").unwrap();
        let member = direct["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user)
            .unwrap();
        member["last_read_id"].as_str().map(str::to_owned)
    };
    let seen_by_ada = ada.get_ok("/api/conversations").await;
    assert_eq!(marker_of(&seen_by_ada, &bob.id).as_deref(), Some(newer));
    assert_eq!(marker_of(&seen_by_ada, &ada.id), None, "ada read nothing");
    app.stop().await;
}

async fn listed(viewer: &User, query: &str, username: &str) -> Option<Value> {
    let users = viewer.get_ok(&format!("/api/users{query}")).await;
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .cloned()
}

#[tokio::test]
async fn online_users_are_exactly_those_with_an_open_socket() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    assert!(bob.online_usernames().await.is_empty());

    let mut socket = ada.open_socket().await;
    eventually("ada shows as online once her socket is open", || async {
        bob.online_usernames().await == ["ada"]
    })
    .await;
    let online = listed(&bob, "?online=true", "ada").await.unwrap();
    assert_eq!(online["id"], ada.id.as_str());
    assert_eq!(online["online"], true);
    assert!(online["since"].is_string(), "online since: {online}");
    let everyone = listed(&bob, "", "ada").await.unwrap();
    assert_eq!(everyone["online"], true, "{everyone}");
    assert_eq!(listed(&bob, "", "bob").await.unwrap()["online"], false);

    socket.close(None).await.unwrap();
    drop(socket);
    eventually(
        "ada is gone from the online list once her socket closed",
        || async { bob.online_usernames().await.is_empty() },
    )
    .await;
    let everyone = listed(&bob, "", "ada").await.unwrap();
    assert_eq!(everyone["online"], false, "{everyone}");
    assert!(everyone["since"].is_string(), "last seen: {everyone}");
    app.stop().await;
}

#[tokio::test]
async fn compatibility_usersession_routes_list_show_and_send() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, carol) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let conversation = ada.open_direct(&bob).await;
    let first = ada.send(&conversation, "first").await;
    let second = bob.send(&conversation, "second").await;

    let sessions = ada.get_ok("/apiv2/usersession/").await;
    let sessions = sessions["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["session_id"], conversation.as_str());
    assert_eq!(sessions[0]["participant_count"], 2);
    let mut participants: Vec<&str> = sessions[0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["username"].as_str().unwrap())
        .collect();
    participants.sort_unstable();
    assert_eq!(participants, ["ada", "bob"]);
    assert!(
        carol.get_ok("/apiv2/usersession/").await["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let shown = ada
        .get_ok(&format!("/apiv2/usersession/{conversation}"))
        .await;
    assert_eq!(shown["session"]["session_id"], conversation.as_str());
    assert_eq!(
        ids(&shown),
        [
            first["id"].as_str().unwrap(),
            second["id"].as_str().unwrap()
        ],
        "oldest first"
    );

    let sent = ada
        .post_expecting(
            &format!("/apiv2/usersession/{conversation}/message"),
            &json!({ "message": "from the old client" }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(sent["message"]["body"], "from the old client");
    let history = bob.get_ok(&messages_path(&conversation)).await;
    assert_eq!(history["messages"][0]["body"], "from the old client");
    assert_eq!(history["messages"][0]["sender_id"], ada.id.as_str());

    let empty = ada
        .post(
            &format!("/apiv2/usersession/{conversation}/message"),
            &json!({ "message": " " }),
        )
        .await;
    expect_error(empty, StatusCode::BAD_REQUEST).await;
    let outsider = [
        carol
            .get(&format!("/apiv2/usersession/{conversation}"))
            .await,
        carol
            .post(
                &format!("/apiv2/usersession/{conversation}/message"),
                &json!({ "message": "hello?" }),
            )
            .await,
    ];
    for response in outsider {
        expect_error(response, StatusCode::FORBIDDEN).await;
    }
    app.stop().await;
}

/// Rooms, a direct conversation, messages and history paging, end to end on `db`.
async fn core_flow(db: Db) {
    let Some(app) = TestApp::start_on(db, &[]).await else {
        return;
    };
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let general = create_room(&ada, "#General").await;
    let room_id = general["id"].as_str().unwrap();
    assert_eq!(general["name"], "general");
    let duplicate = bob.post("/api/rooms", &json!({ "name": "general" })).await;
    expect_error(duplicate, StatusCode::CONFLICT).await;
    bob.post_expecting(
        &format!("/api/rooms/{room_id}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let rooms = bob.get_ok("/api/rooms").await;
    assert_eq!(room(&rooms, "general")["member_count"], 2);
    let hello = bob.send(room_id, "hello room").await;
    let in_room = ada.get_ok(&messages_path(room_id)).await;
    assert_eq!(ids(&in_room), [hello["id"].as_str().unwrap()]);

    let direct = ada.open_direct(&bob).await;
    assert_eq!(bob.open_direct(&ada).await, direct);
    let mut sent = Vec::new();
    for i in 0..12 {
        let message = ada.send(&direct, &format!("message {i}")).await;
        sent.push(message["id"].as_str().unwrap().to_owned());
    }
    let mut collected = Vec::new();
    let mut cursor = String::new();
    loop {
        let query = if cursor.is_empty() {
            "?limit=5".to_owned()
        } else {
            format!("?limit=5&before={cursor}")
        };
        let page = bob
            .get_ok(&format!("{}{query}", messages_path(&direct)))
            .await;
        collected.extend(ids(&page));
        cursor = collected.last().unwrap().clone();
        if page["has_more"] == false {
            break;
        }
    }
    collected.reverse();
    assert_eq!(collected, sent);
    let after = bob
        .get_ok(&format!(
            "{}?after={}&limit=3",
            messages_path(&direct),
            sent[8]
        ))
        .await;
    assert_eq!(ids(&after), sent[9..]);
    assert_eq!(after["has_more"], false);

    let receipt = bob
        .post_expecting(
            &format!("/api/conversations/{direct}/read"),
            &json!({ "up_to": sent[11] }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(receipt["up_to"], sent[11].as_str());
    let mut conversations = bob.conversation_ids().await;
    conversations.sort();
    let mut expected = vec![direct.clone(), room_id.to_owned()];
    expected.sort();
    assert_eq!(conversations, expected);
    app.stop().await;
}

#[tokio::test]
async fn rooms_direct_conversations_and_history_on_sqlite() {
    core_flow(Db::Sqlite).await;
}

#[tokio::test]
async fn rooms_direct_conversations_and_history_on_postgres() {
    core_flow(Db::Postgres).await;
}

#[tokio::test]
async fn chat_down_means_503_for_chat_routes_while_auth_keeps_working() {
    let mut services = Services::start(&[]).await;
    let base = services.base.clone();
    let (ada, bob) = (
        User::sign_up(&base, "ada").await,
        User::sign_up(&base, "bob").await,
    );
    let conversation = ada.open_direct(&bob).await;
    ada.send(&conversation, "before the outage").await;

    services.stop_chat().await;

    let path = messages_path(&conversation);
    let refused = [
        ada.get("/api/rooms").await,
        ada.post("/api/rooms", &json!({ "name": "outage" })).await,
        ada.get("/api/conversations").await,
        ada.post("/api/conversations", &json!({ "user_id": bob.id }))
            .await,
        ada.get(&path).await,
        ada.post(&path, &json!({ "body": "anyone?" })).await,
        ada.get("/api/users?online=true").await,
        ada.get("/apiv2/usersession/").await,
    ];
    for response in refused {
        let route = response.url().path().to_owned();
        let status = response.status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable", "{route}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("chat"),
            "{route}: the message names the service: {body}"
        );
    }

    let login = ada
        .client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": "ada", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK, "login needs only auth");
    assert_eq!(ada.get("/api/auth/me").await.status(), StatusCode::OK);
    let users = ada.get_ok("/api/users").await;
    assert_eq!(
        users["users"].as_array().unwrap().len(),
        2,
        "the user list answers without presence: {users}"
    );
    User::sign_up(&base, "carol").await;

    services.start_chat().await;
    eventually("chat routes answer again once chat is back", || async {
        ada.get(&path).await.status() == StatusCode::OK
    })
    .await;
    let history = bob.get_ok(&path).await;
    assert_eq!(history["messages"][0]["body"], "before the outage");

    services.stop().await;
}

/// One `SendMessages` call as chat sees it: each send decided alone, in order.
fn batched(user: &User, conversation: &str, body: &str) -> pb::BatchedSend {
    pb::BatchedSend {
        message: Some(pb::SendMessageRequest {
            caller: Some(pb::Caller {
                user_id: user.id.clone(),
                username: user.username.clone(),
            }),
            conversation_id: conversation.to_owned(),
            body: body.to_owned(),
            attachment_ids: Vec::new(),
        }),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    }
}

#[tokio::test]
async fn a_batch_of_sends_refuses_each_bad_one_alone_and_stores_the_rest_in_order() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, eve) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let conversation = ada.open_direct(&bob).await;
    let mut chat = pb::chat_client::ChatClient::new(app.chat_as_broker());
    let sends = vec![
        batched(&ada, &conversation, "first"),
        batched(&eve, &conversation, "eve is no member"),
        batched(&bob, &conversation, ""),
        batched(&bob, &Uuid::nil().to_string(), "no such conversation"),
        batched(&bob, "not-a-uuid", "bad id"),
        batched(&bob, &conversation, "second"),
    ];
    let outcomes = chat
        .send_messages(pb::SendMessagesRequest { sends })
        .await
        .expect("the batch is answered")
        .into_inner()
        .outcomes;
    let outcomes: Vec<Result<String, tonic::Code>> = outcomes
        .into_iter()
        .map(
            |outcome| match outcome.outcome.expect("every send has an outcome") {
                pb::send_outcome::Outcome::Sent(message) => Ok(message.body),
                pb::send_outcome::Outcome::Refused(refusal) => Err(tonic::Code::from(refusal.code)),
            },
        )
        .collect();
    assert_eq!(
        outcomes,
        [
            Ok("first".to_owned()),
            Err(tonic::Code::PermissionDenied),
            Err(tonic::Code::InvalidArgument),
            Err(tonic::Code::PermissionDenied),
            Err(tonic::Code::InvalidArgument),
            Ok("second".to_owned()),
        ]
    );
    let history = bob.get_ok(&messages_path(&conversation)).await;
    assert_eq!(
        bodies(&history),
        ["second", "first"],
        "newest first, only the two sent"
    );

    let too_many = vec![batched(&ada, &conversation, "one too many"); pb::MAX_SENDS_PER_CALL + 1];
    let refused = chat
        .send_messages(pb::SendMessagesRequest { sends: too_many })
        .await
        .expect_err("a batch over the limit is refused whole");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let history = bob.get_ok(&messages_path(&conversation)).await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2));
    app.stop().await;
}

#[tokio::test]
async fn concurrent_sends_through_the_broker_each_get_their_own_answer() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, eve) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let conversation = ada.open_direct(&bob).await;
    let path = messages_path(&conversation);
    // Sent at once, so the broker batches them: members' and an outsider's sends mixed.
    let answers = futures::future::join_all((0..60).map(|n| {
        let (sender, path) = ([&ada, &bob, &eve][n % 3].clone(), path.clone());
        async move {
            let response = sender
                .post(&path, &json!({ "body": format!("m{n}") }))
                .await;
            (n, response.status())
        }
    }))
    .await;
    for (n, status) in answers {
        let expected = if n % 3 == 2 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::CREATED
        };
        assert_eq!(status, expected, "send {n}");
    }
    let history = ada.get_ok(&format!("{path}?limit=100")).await;
    let mut stored = bodies(&history);
    stored.sort_unstable();
    let mut expected: Vec<String> = (0..60)
        .filter(|n| n % 3 != 2)
        .map(|n| format!("m{n}"))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        stored, expected,
        "every member's send stored once, no outsider's"
    );
    app.stop().await;
}
