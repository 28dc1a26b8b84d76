//! Editing and deleting messages, and reacting to them, as users see it through the
//! broker: only the sender edits, the sender or an administrator deletes (a tombstone
//! stays in history), reactions are idempotent with counts and "me" in history, every
//! change reaches the other members' sockets live, and edits and deletes are audited.

mod common;

use common::{
    TestApp, User, eventually, expect_error,
    ws::{next_of_type, ready, send},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const THUMBS: &str = "\u{1f44d}";
const HEART: &str = "\u{2764}\u{fe0f}";

fn message_path(conversation: &str, message: &str) -> String {
    format!("/api/conversations/{conversation}/messages/{message}")
}

fn reaction_path(conversation: &str, message: &str, emoji: &str) -> String {
    format!("{}/reactions/{emoji}", message_path(conversation, message))
}

async fn patch(user: &User, path: &str, body: &Value) -> Response {
    user.client
        .patch(format!("{}{path}", user.base))
        .bearer_auth(&user.token)
        .json(body)
        .send()
        .await
        .expect("the broker answers")
}

async fn edit(user: &User, conversation: &str, message: &str, body: &str) -> Response {
    patch(
        user,
        &message_path(conversation, message),
        &json!({ "body": body }),
    )
    .await
}

async fn put(user: &User, path: &str) -> Response {
    user.client
        .put(format!("{}{path}", user.base))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("the broker answers")
}

async fn room(user: &User, name: &str) -> String {
    let room = user
        .post_expecting("/api/rooms", &json!({ "name": name }), StatusCode::CREATED)
        .await;
    room["id"].as_str().expect("a room id").to_owned()
}

async fn join(user: &User, room: &str) {
    let joined = user
        .post(&format!("/api/rooms/{room}/join"), &json!({}))
        .await;
    assert_eq!(joined.status(), StatusCode::OK);
}

/// The newest messages of a conversation, newest first.
async fn history(user: &User, conversation: &str) -> Vec<Value> {
    let page = user
        .get_ok(&format!("/api/conversations/{conversation}/messages"))
        .await;
    page["messages"].as_array().expect("a list").clone()
}

fn id(message: &Value) -> &str {
    message["id"].as_str().expect("a message id")
}

#[tokio::test]
async fn only_the_sender_edits_and_everyone_sees_the_edit_in_history() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, mallory) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("mallory").await,
    );
    let general = room(&ada, "general").await;
    join(&bob, &general).await;
    let elsewhere = room(&mallory, "elsewhere").await;
    let said = ada.send(&general, "helo wrld").await;
    let said = id(&said);

    let code = expect_error(
        edit(&bob, &general, said, "bob's now").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "forbidden");
    for (who, conversation, message) in [
        (&mallory, general.as_str(), said),
        // Another room's message under a room of the caller's.
        (&mallory, elsewhere.as_str(), said),
        (
            &ada,
            general.as_str(),
            "0192f0c1-0000-7000-8000-000000000000",
        ),
    ] {
        expect_error(
            edit(who, conversation, message, "guess").await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    for bad in [String::new(), "   ".to_owned(), "x".repeat(4_001)] {
        expect_error(
            edit(&ada, &general, said, &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    let edited = edit(&ada, &general, said, "hello world").await;
    assert_eq!(edited.status(), StatusCode::OK);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["body"], "hello world");
    assert!(edited["edited_at"].is_string(), "{edited}");
    assert!(edited.get("deleted_at").is_none());

    let seen = history(&bob, &general).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["body"], "hello world");
    assert_eq!(seen[0]["edited_at"], edited["edited_at"]);
    assert_eq!(seen[0]["created_at"], edited["created_at"]);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_message_is_a_tombstone_and_administrators_may_delete_any() {
    let app = TestApp::start(&[]).await;
    // The first account owns the install: an administrator.
    let root = app.user("root").await;
    let (ada, bob, mallory) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("mallory").await,
    );
    let general = room(&ada, "general").await;
    join(&bob, &general).await;
    let first = ada.send(&general, "first").await;
    let doomed = ada.send(&general, "regrettable").await;
    let bobs = bob.send(&general, "spam").await;
    let (first, doomed, bobs) = (id(&first), id(&doomed), id(&bobs));
    assert_eq!(
        put(&bob, &reaction_path(&general, doomed, THUMBS))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    expect_error(
        bob.delete(&message_path(&general, doomed)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect_error(
        mallory.delete(&message_path(&general, doomed)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for _ in 0..2 {
        let deleted = ada.delete(&message_path(&general, doomed)).await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT, "idempotent");
    }
    let seen = history(&bob, &general).await;
    let ids: Vec<&str> = seen.iter().map(id).collect();
    assert_eq!(ids, [bobs, doomed, first], "the tombstone keeps its place");
    let tombstone = &seen[1];
    assert_eq!(tombstone["body"], "");
    assert!(tombstone["deleted_at"].is_string(), "{tombstone}");
    assert!(
        tombstone.get("reactions").is_none(),
        "its reactions went: {tombstone}"
    );
    let older = bob
        .get_ok(&format!(
            "/api/conversations/{general}/messages?before={doomed}"
        ))
        .await;
    assert_eq!(older["messages"][0]["id"], first, "cursors keep working");

    expect_error(
        edit(&ada, &general, doomed, "undo").await,
        StatusCode::CONFLICT,
    )
    .await;
    expect_error(
        put(&ada, &reaction_path(&general, doomed, HEART)).await,
        StatusCode::CONFLICT,
    )
    .await;

    // An administrator deletes anyone's message, in a conversation they are in.
    expect_error(
        root.delete(&message_path(&general, bobs)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    join(&root, &general).await;
    assert_eq!(
        root.delete(&message_path(&general, bobs)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(history(&ada, &general).await[0]["body"], "");
    app.stop().await;
}

#[tokio::test]
async fn reactions_are_idempotent_and_history_counts_them_with_me() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, mallory) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("mallory").await,
    );
    let general = room(&ada, "general").await;
    join(&bob, &general).await;
    let said = ada.send(&general, "ship it?").await;
    let said = id(&said);
    let thumbs = reaction_path(&general, said, THUMBS);

    let offered = ada.get_ok("/api/reactions").await;
    let offered = offered["emoji"].as_array().expect("a list");
    assert!(offered.contains(&json!(THUMBS)) && offered.contains(&json!(HEART)));
    assert!((40..=60).contains(&offered.len()));

    for _ in 0..2 {
        assert_eq!(put(&ada, &thumbs).await.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(put(&bob, &thumbs).await.status(), StatusCode::NO_CONTENT);
    // The heart without its variation selector is the same heart.
    let bare_heart = reaction_path(&general, said, "\u{2764}");
    assert_eq!(
        put(&bob, &bare_heart).await.status(),
        StatusCode::NO_CONTENT
    );

    let seen = history(&ada, &general).await;
    assert_eq!(
        seen[0]["reactions"],
        json!([
            { "emoji": THUMBS, "count": 2, "me": true },
            { "emoji": HEART, "count": 1, "me": false },
        ])
    );
    let seen = history(&bob, &general).await;
    assert_eq!(
        seen[0]["reactions"][1],
        json!({ "emoji": HEART, "count": 1, "me": true })
    );

    for _ in 0..2 {
        assert_eq!(ada.delete(&thumbs).await.status(), StatusCode::NO_CONTENT);
    }
    let seen = history(&ada, &general).await;
    assert_eq!(
        seen[0]["reactions"][0],
        json!({ "emoji": THUMBS, "count": 1, "me": false })
    );

    expect_error(put(&mallory, &thumbs).await, StatusCode::NOT_FOUND).await;
    let code = expect_error(
        put(&ada, &reaction_path(&general, said, "\u{1f9a9}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_argument");
    app.stop().await;
}

#[tokio::test]
async fn edits_deletes_and_reactions_reach_the_other_members_sockets() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let direct = ada.open_direct(&bob).await;
    let said = ada.send(&direct, "typo").await;
    let said = id(&said).to_owned();
    let mut socket = bob.open_socket().await;
    ready(&mut socket).await;

    assert_eq!(
        edit(&ada, &direct, &said, "fixed").await.status(),
        StatusCode::OK
    );
    let frame = next_of_type(&mut socket, "message_edited").await;
    assert_eq!(frame["message"]["id"], said);
    assert_eq!(frame["message"]["body"], "fixed");
    assert!(frame["message"]["edited_at"].is_string());

    let thumbs = reaction_path(&direct, &said, THUMBS);
    assert_eq!(put(&ada, &thumbs).await.status(), StatusCode::NO_CONTENT);
    let frame = next_of_type(&mut socket, "reaction").await;
    assert_eq!(
        frame,
        json!({
            "type": "reaction", "conversation_id": direct, "message_id": said,
            "emoji": THUMBS, "count": 1, "user_id": ada.id, "added": true
        })
    );
    assert_eq!(ada.delete(&thumbs).await.status(), StatusCode::NO_CONTENT);
    let frame = next_of_type(&mut socket, "reaction").await;
    assert_eq!(
        (frame["count"].clone(), frame["added"].clone()),
        (json!(0), json!(false))
    );

    assert_eq!(
        ada.delete(&message_path(&direct, &said)).await.status(),
        StatusCode::NO_CONTENT
    );
    let frame = next_of_type(&mut socket, "message_deleted").await;
    assert_eq!(frame["message"]["id"], said);
    assert_eq!(frame["message"]["body"], "");
    assert!(frame["message"]["deleted_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn edits_and_deletes_are_audited_with_who_acted_but_never_a_body() {
    let app = TestApp::start(&[]).await;
    let root = app.user("root").await;
    let ada = app.user("ada").await;
    let general = room(&ada, "general").await;
    join(&root, &general).await;
    let said = ada.send(&general, "secret plans").await;
    let said = id(&said).to_owned();
    assert_eq!(
        edit(&ada, &general, &said, "public plans").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        root.delete(&message_path(&general, &said)).await.status(),
        StatusCode::NO_CONTENT
    );
    let audits = |user: String| {
        let root = root.clone();
        async move {
            let page = root
                .get_ok(&format!("/api/logs?service=listener&user={user}"))
                .await;
            page["logs"].as_array().expect("a list of logs").clone()
        }
    };
    let named =
        |entries: &[Value], name: &str| entries.iter().find(|entry| entry["name"] == name).cloned();
    eventually("the edit and the deletion are audited", || {
        let (ada, root) = (audits(ada.id.clone()), audits(root.id.clone()));
        async move {
            named(&ada.await, "audit message.edited").is_some()
                && named(&root.await, "audit message.deleted").is_some()
        }
    })
    .await;
    let edited = named(&audits(ada.id.clone()).await, "audit message.edited").unwrap();
    assert_eq!(
        edited["data"]["details"],
        json!({ "message_id": said, "conversation_id": general, "body_chars": 12 })
    );
    let deleted = named(&audits(root.id.clone()).await, "audit message.deleted").unwrap();
    assert_eq!(
        deleted["data"]["details"],
        json!({
            "message_id": said, "conversation_id": general,
            "sender_id": ada.id, "moderator": true
        })
    );
    for entry in [&edited, &deleted] {
        assert!(!entry.to_string().contains("plans"), "no body: {entry}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_socket_edits_its_users_own_messages_and_is_refused_others() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let direct = ada.open_direct(&bob).await;
    let adas = ada.send(&direct, "helo").await;
    let bobs = bob.send(&direct, "mine").await;
    let (adas, bobs) = (id(&adas).to_owned(), id(&bobs).to_owned());
    let mut ada_socket = ada.open_socket().await;
    let mut bob_socket = bob.open_socket().await;
    ready(&mut ada_socket).await;
    ready(&mut bob_socket).await;

    let edit = |message: &str, body: &str| json!({ "type": "edit", "conversation_id": direct, "message_id": message, "body": body });
    send(&mut ada_socket, edit(&adas, "hello")).await;
    let frame = next_of_type(&mut bob_socket, "message_edited").await;
    assert_eq!(
        (
            frame["message"]["id"].as_str(),
            frame["message"]["body"].as_str()
        ),
        (Some(adas.as_str()), Some("hello"))
    );
    let own = next_of_type(&mut ada_socket, "message_edited").await;
    assert_eq!(
        own["message"]["body"], "hello",
        "the editor's sockets hear it too"
    );

    send(&mut ada_socket, edit(&bobs, "ada was here")).await;
    let refused = next_of_type(&mut ada_socket, "error").await;
    assert_eq!(refused["code"], "forbidden");
    send(&mut ada_socket, edit(&adas, &"x".repeat(4_001))).await;
    let refused = next_of_type(&mut ada_socket, "error").await;
    assert_eq!(refused["code"], "invalid_argument");
    assert_eq!(history(&bob, &direct).await[0]["body"], "mine");
    app.stop().await;
}
