//! Deleting an account: the user's private conversations go, then the account; rooms and
//! other users stay; a failure between the steps, or at the last one, is finished later by
//! the broker's sweep.

mod common;

use chat::store::Page;
use common::{
    DatabaseUrls, Db, Services, TestApp, User, UserSocket, auth_gate::COMPLETE_ACCOUNT_DELETION,
    embedded_database_urls, eventually, expect_error,
};
use futures::{SinkExt, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

async fn login(client: &Client, base: &str, username: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": username, "password": "correct horse battery" }))
        .send()
        .await
        .expect("the broker answers")
}

async fn usernames(viewer: &User) -> Vec<String> {
    let listed = viewer.get_ok("/api/users?limit=100").await;
    listed["users"]
        .as_array()
        .expect("a list of users")
        .iter()
        .map(|user| user["username"].as_str().expect("a username").to_owned())
        .collect()
}

/// The whole deletion as the deleted user and the people they talked to see it, on `db`.
async fn deleting_an_account(db: Db) {
    let Some(app) = TestApp::start_on(db, &[]).await else {
        return;
    };
    let (ada, bob, carol) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let direct = ada.open_direct(&bob).await;
    ada.send(&direct, "hi bob").await;
    bob.send(&direct, "hi ada").await;
    let room = carol
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "lobby" }),
            StatusCode::CREATED,
        )
        .await;
    let room_id = room["id"].as_str().unwrap();
    ada.post_expecting(
        &format!("/api/rooms/{room_id}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let said = ada.send(room_id, "bye everyone").await;
    let other_session = User::sign_in(&app.base, "ada").await;
    let mut ada_socket = other_session.open_socket().await;
    let mut bob_socket = bob.open_socket().await;
    live(&mut ada_socket).await;
    live(&mut bob_socket).await;
    assert_eq!(carol.online_usernames().await, ["ada", "bob"]);

    let deleted = ada.delete_account().await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    expect_error(ada.get("/api/auth/me").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        closed_with(&mut ada_socket).await,
        Some(4001),
        "the deleted user's socket is closed: session ended"
    );
    let gone = frame_of_type(&mut bob_socket, "conversation_deleted").await;
    assert_eq!(gone["conversation_id"], direct.as_str());
    eventually("every other session of ada ends too", || async {
        other_session.get("/api/auth/me").await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    expect_error(
        login(&app.client(), &app.base, "ada").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    assert!(
        !bob.conversation_ids().await.contains(&direct),
        "the private conversation is gone"
    );
    let history = bob
        .get(&format!("/api/conversations/{direct}/messages"))
        .await;
    expect_error(history, StatusCode::FORBIDDEN).await;
    let reopened = bob
        .post("/api/conversations", &json!({ "user_id": ada.id }))
        .await;
    expect_error(reopened, StatusCode::NOT_FOUND).await;

    let rooms = carol.get_ok("/api/rooms").await;
    let lobby = &rooms["rooms"][0];
    assert_eq!(lobby["id"], room_id, "the room stays: {rooms}");
    assert_eq!(lobby["member_count"], 1, "ada left it: {rooms}");
    let room_history = carol
        .get_ok(&format!("/api/conversations/{room_id}/messages"))
        .await;
    assert_eq!(
        room_history["messages"][0]["id"], said["id"],
        "what was said in a room stays in its history"
    );
    assert_eq!(
        room_history["messages"][0]["sender_name"], "deleted user",
        "but no longer under the deleted account's name"
    );
    assert_eq!(carol.conversation_ids().await, [room_id]);

    assert_eq!(usernames(&bob).await, ["bob", "carol"]);
    eventually("only bob is online", || async {
        carol.online_usernames().await == ["bob"]
    })
    .await;
    nothing_stored_of(&app.database_urls(), &ada.id, &direct).await;
    app.stop().await;
}

/// Looks into both services' databases: neither the account, nor its private
/// conversations, memberships or presence remain.
async fn nothing_stored_of(databases: &DatabaseUrls, user: &str, direct: &str) {
    let (user, direct) = (
        Uuid::parse_str(user).unwrap(),
        Uuid::parse_str(direct).unwrap(),
    );
    let chat = chat::store::connect(&databases.chat).await.unwrap();
    assert_eq!(chat.conversation(direct).await.unwrap(), None);
    let messages = chat
        .messages(direct, Page::Before(None), 100)
        .await
        .unwrap();
    assert!(messages.is_empty(), "{messages:?}");
    assert!(chat.membership_ids(user).await.unwrap().is_empty());
    assert!(chat.members(direct).await.unwrap().is_empty());
    assert!(chat.presence(&[user]).await.unwrap().is_empty());
    let auth = auth::store::connect(&databases.auth).await.unwrap();
    assert_eq!(auth.user(user).await.unwrap(), None);
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        auth.pending_deletions(in_an_hour, 100)
            .await
            .unwrap()
            .is_empty(),
        "no account is left half deleted"
    );
}

/// The close code the server ends `socket` with, reading past any other frames.
async fn closed_with(socket: &mut UserSocket) -> Option<u16> {
    let closing = async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the socket closes within ten seconds")
}

/// Waits until `socket` is registered for live events: it answers a ping.
async fn live(socket: &mut UserSocket) {
    let ping = json!({ "type": "ping", "id": 1 }).to_string();
    socket.send(Message::Text(ping.into())).await.unwrap();
    frame_of_type(socket, "pong").await;
}

/// The next JSON frame of `kind`, skipping others.
async fn frame_of_type(socket: &mut UserSocket, kind: &str) -> Value {
    let wanted = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.expect("the socket stays open") {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if frame["type"] == kind {
                    return frame;
                }
            }
        }
        panic!("the socket closed before a {kind} frame");
    };
    tokio::time::timeout(Duration::from_secs(10), wanted)
        .await
        .unwrap_or_else(|_| panic!("a {kind} frame within ten seconds"))
}

#[tokio::test]
async fn deleted_users_private_conversations_are_gone_and_no_orphan_remains() {
    deleting_an_account(Db::Sqlite).await;
}

#[tokio::test]
async fn deleted_users_private_conversations_are_gone_and_no_orphan_remains_on_postgres() {
    deleting_an_account(Db::Postgres).await;
}

#[tokio::test]
async fn deleting_twice_or_without_a_token_is_unauthorized() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let anonymous = app
        .client()
        .delete(app.url("/api/users/me"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        ada.get("/api/auth/me").await.status(),
        StatusCode::OK,
        "nothing was deleted"
    );

    assert_eq!(ada.delete_account().await.status(), StatusCode::NO_CONTENT);
    expect_error(ada.delete_account().await, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test]
async fn a_failure_between_the_steps_is_finished_by_the_sweep() {
    let mut services = Services::start(&["--broker-deletion-sweep=500ms"]).await;
    let base = services.base.clone();
    let (ada, bob) = (
        User::sign_up(&base, "ada").await,
        User::sign_up(&base, "bob").await,
    );
    let direct = ada.open_direct(&bob).await;
    ada.send(&direct, "hi bob").await;

    services.stop_chat().await;
    let deleted = ada.delete_account().await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let body: Value = deleted.json().await.unwrap();
    assert_eq!(body["status"], "pending", "{body}");
    expect_error(
        login(&bob.client, &base, "ada").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect_error(ada.get("/api/auth/me").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        usernames(&bob).await,
        ["bob"],
        "an account being deleted is hidden at once"
    );

    services.start_chat().await;
    eventually("the sweep deletes the private conversation", || async {
        let listed = bob.get("/api/conversations").await;
        listed.status() == StatusCode::OK && !bob.conversation_ids().await.contains(&direct)
    })
    .await;
    let history = bob
        .get(&format!("/api/conversations/{direct}/messages"))
        .await;
    expect_error(history, StatusCode::FORBIDDEN).await;
    expect_error(
        login(&bob.client, &base, "ada").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let registered = || {
        bob.client
            .post(format!("{base}/api/auth/register"))
            .json(&json!({ "username": "ada.again", "email": "ada@example.com", "password": "correct horse battery" }))
            .send()
    };
    eventually(
        "the sweep deletes the account, freeing the email address (never the name)",
        || async { registered().await.unwrap().status() == StatusCode::CREATED },
    )
    .await;
    let again = User::sign_in(&base, "ada.again").await;
    assert_ne!(again.id, ada.id, "a new account, not the old one");
    assert!(
        again.conversation_ids().await.is_empty(),
        "nothing of the old account is attached to the new one"
    );
    assert_eq!(usernames(&bob).await, ["ada.again", "bob"]);
    expect_error(ada.get("/api/auth/me").await, StatusCode::UNAUTHORIZED).await;
    nothing_stored_of(&embedded_database_urls(&services.dir), &ada.id, &direct).await;
    services.stop().await;
}

#[tokio::test]
async fn auth_failing_after_chats_step_is_finished_by_the_sweep() {
    let services = Services::start_behind_auth_gate(&["--broker-deletion-sweep=500ms"]).await;
    let (base, gate) = (services.base.clone(), services.auth_gate());
    let databases = embedded_database_urls(&services.dir);
    let (ada, bob) = (
        User::sign_up(&base, "ada").await,
        User::sign_up(&base, "bob").await,
    );
    let direct = ada.open_direct(&bob).await;
    ada.send(&direct, "hi bob").await;

    // Step 3 fails: auth cannot be reached for it, though it was for steps 1 and 2.
    gate.refuse(COMPLETE_ACCOUNT_DELETION);
    let deleted = ada.delete_account().await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let body: Value = deleted.json().await.unwrap();
    assert_eq!(body["status"], "pending", "{body}");
    let refused = gate.refused(COMPLETE_ACCOUNT_DELETION);
    assert!(
        refused > 1,
        "step 3 was tried and retried: {refused} attempts"
    );
    assert_eq!(gate.forwarded(COMPLETE_ACCOUNT_DELETION), 0);

    // Chat's step is done: the private conversation is gone already.
    assert!(!bob.conversation_ids().await.contains(&direct));
    let history = bob
        .get(&format!("/api/conversations/{direct}/messages"))
        .await;
    expect_error(history, StatusCode::FORBIDDEN).await;
    let chat = chat::store::connect(&databases.chat).await.unwrap();
    let direct_id = Uuid::parse_str(&direct).unwrap();
    assert_eq!(chat.conversation(direct_id).await.unwrap(), None);
    // The account is no orphan: marked, unusable, hidden and left for the sweep.
    expect_error(
        login(&bob.client, &base, "ada").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect_error(ada.get("/api/auth/me").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(usernames(&bob).await, ["bob"]);
    let auth = auth::store::connect(&databases.auth).await.unwrap();
    let pending = || async {
        let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
        auth.pending_deletions(in_an_hour, 100).await.unwrap()
    };
    let ada_id = Uuid::parse_str(&ada.id).unwrap();
    assert_eq!(pending().await, [ada_id]);
    eventually("the sweep tries step 3 again while auth fails", || async {
        gate.refused(COMPLETE_ACCOUNT_DELETION) > refused
    })
    .await;
    assert_eq!(pending().await, [ada_id], "still marked, not lost");

    // auth answers again: the sweep completes the deletion, chat's step again included.
    gate.admit(COMPLETE_ACCOUNT_DELETION);
    eventually("the sweep deletes the account", || async {
        pending().await.is_empty()
    })
    .await;
    assert!(gate.forwarded(COMPLETE_ACCOUNT_DELETION) >= 1);
    let register = |username: &'static str| {
        bob.client
            .post(format!("{base}/api/auth/register"))
            .json(&json!({ "username": username, "email": "ada@example.com", "password": "correct horse battery" }))
            .send()
    };
    assert_eq!(
        register("ada").await.unwrap().status(),
        StatusCode::CONFLICT,
        "the name stays taken for good"
    );
    assert_eq!(
        register("ada.again").await.unwrap().status(),
        StatusCode::CREATED,
        "the email address is free again"
    );
    nothing_stored_of(&databases, &ada.id, &direct).await;
    services.stop().await;
}
