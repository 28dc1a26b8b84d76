//! Attacks on accounts and trust, black-box against the all-in-one: one test per threat
//! of issue 28's "roles, names, re-authentication" part. Roles are stored by user id (the
//! first account owns the install), names are never reused, losing a right or being
//! deactivated ends every session at once, and deleting an account needs the password.

mod common;

use common::{TestApp, User, eventually, expect_error, ws};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

async fn role_of(user: &User) -> String {
    user.get_ok("/api/auth/me").await["role"]
        .as_str()
        .expect("me carries a role")
        .to_owned()
}

async fn set_role(owner: &User, user: &User, role: &str) -> reqwest::Response {
    owner
        .put(
            &format!("/api/admin/users/{}/role", user.id),
            &json!({ "role": role }),
        )
        .await
}

async fn register(app: &TestApp, username: &str, email: &str) -> reqwest::Response {
    app.client()
        .post(app.url("/api/auth/register"))
        .json(&json!({ "username": username, "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("the broker answers")
}

#[tokio::test]
async fn first_account_is_owner_and_the_next_is_member() {
    let app = TestApp::start(&[]).await;
    let founder = app.user("founder").await;
    let second = app.user("second").await;
    assert_eq!(role_of(&founder).await, "owner");
    assert_eq!(role_of(&second).await, "member");
    // The owner reads the logs; the member does not.
    assert_eq!(founder.get("/api/logs").await.status(), StatusCode::OK);
    expect_error(second.get("/api/logs").await, StatusCode::FORBIDDEN).await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_first_registrations_make_one_owner() {
    let app = TestApp::start(&[]).await;
    let names = ["racer0", "racer1", "racer2", "racer3", "racer4"];
    let users = futures::future::join_all(names.map(|name| User::sign_up(&app.base, name))).await;
    let mut owners = 0;
    for user in &users {
        if role_of(user).await == "owner" {
            owners += 1;
        }
    }
    assert_eq!(
        owners, 1,
        "exactly one of the racing first accounts owns the install"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_promotion_counts_on_the_next_request_without_signing_in_again() {
    let app = TestApp::start(&[]).await;
    let owner = app.user("owner").await;
    let ada = app.user("ada").await;
    // The broker has asked auth about ada's session (and remembers the answer).
    assert_eq!(role_of(&ada).await, "member");
    expect_error(ada.get("/api/logs").await, StatusCode::FORBIDDEN).await;
    assert_eq!(
        set_role(&owner, &ada, "admin").await.status(),
        StatusCode::OK
    );
    // Same token, next request: an administrator.
    assert_eq!(ada.get("/api/logs").await.status(), StatusCode::OK);
    assert_eq!(role_of(&ada).await, "admin");
    app.stop().await;
}

#[tokio::test]
async fn member_cannot_reach_admin_api() {
    let app = TestApp::start(&[]).await;
    let _owner = app.user("owner").await;
    let mallory = app.user("mallory").await;
    let victim = app.user("victim").await;
    let code = expect_error(mallory.get("/api/admin/users").await, StatusCode::FORBIDDEN).await;
    assert_eq!(code, "admins_only");
    expect_error(
        set_role(&mallory, &mallory, "owner").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let deactivate = format!("/api/admin/users/{}/deactivate", victim.id);
    expect_error(
        mallory.post(&deactivate, &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect_error(mallory.get("/api/logs").await, StatusCode::FORBIDDEN).await;
    assert_eq!(role_of(&mallory).await, "member", "nothing changed");
    assert_eq!(victim.get("/api/auth/me").await.status(), StatusCode::OK);
    let anonymous = app
        .client()
        .get(app.url("/api/admin/users"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test]
async fn an_admin_cannot_make_admins_and_the_last_owner_stays() {
    let app = TestApp::start(&[]).await;
    let owner = app.user("owner").await;
    let helper = app.user("helper").await;
    let friend = app.user("friend").await;
    assert_eq!(
        set_role(&owner, &helper, "admin").await.status(),
        StatusCode::OK
    );
    let helper = User::sign_in(&app.base, "helper").await;
    assert_eq!(
        role_of(&helper).await,
        "admin",
        "a gained role comes with the next token"
    );
    // An admin manages members but makes no admins, and cannot touch the owner.
    let code = expect_error(
        set_role(&helper, &friend, "admin").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(code, "forbidden");
    let on_owner = format!("/api/admin/users/{}/deactivate", owner.id);
    expect_error(
        helper.post(&on_owner, &json!({})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // The last owner cannot step down or be deactivated.
    let code = expect_error(
        set_role(&owner, &owner, "member").await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(code, "failed_precondition");
    expect_error(
        owner.post(&on_owner, &json!({})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(role_of(&owner).await, "owner");
    // Bad input is a clear 4xx.
    expect_error(
        set_role(&owner, &friend, "root").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = owner
        .put(
            &format!("/api/admin/users/{}/role", uuid::Uuid::now_v7()),
            &json!({ "role": "admin" }),
        )
        .await;
    expect_error(unknown, StatusCode::NOT_FOUND).await;
    let not_an_id = owner
        .put("/api/admin/users/nobody/role", &json!({ "role": "admin" }))
        .await;
    expect_error(not_an_id, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

#[tokio::test]
async fn a_demoted_admin_loses_the_admin_api_at_once() {
    let app = TestApp::start(&[]).await;
    let owner = app.user("owner").await;
    let helper = app.user("helper").await;
    set_role(&owner, &helper, "admin").await;
    let helper = User::sign_in(&app.base, "helper").await;
    let mut socket = helper.open_socket().await;
    ws::ready(&mut socket).await;
    assert_eq!(helper.get("/api/logs").await.status(), StatusCode::OK);

    let demoted: Value = set_role(&owner, &helper, "member")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(demoted["role"], "member");
    // Not at the token's expiry: the very next request.
    expect_error(helper.get("/api/logs").await, StatusCode::UNAUTHORIZED).await;
    expect_error(
        helper.get("/api/admin/users").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(
        ws::close_code(&mut socket, Duration::from_secs(10))
            .await
            .is_some(),
        "socket closed"
    );
    let again = User::sign_in(&app.base, "helper").await;
    expect_error(again.get("/api/logs").await, StatusCode::FORBIDDEN).await;
    app.stop().await;
}

#[tokio::test]
async fn deactivated_user_is_signed_out_at_once_and_cannot_log_in() {
    let app = TestApp::start(&[]).await;
    let owner = app.user("owner").await;
    let bob = app.user("bob").await;
    let bobs_phone = User::sign_in(&app.base, "bob").await;
    let mut socket = bob.open_socket().await;
    ws::ready(&mut socket).await;

    let deactivated: Value = owner
        .post_expecting(
            &format!("/api/admin/users/{}/deactivate", bob.id),
            &json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(deactivated["active"], false);
    assert!(deactivated["deactivated_at"].is_string());
    for session in [&bob, &bobs_phone] {
        expect_error(session.get("/api/auth/me").await, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(
        ws::close_code(&mut socket, Duration::from_secs(10)).await,
        Some(4001)
    );
    // The right password is told the account is deactivated; a wrong one learns nothing.
    let right = app.login(&app.client(), "bob", PASSWORD).await;
    assert_eq!(
        expect_error(right, StatusCode::FORBIDDEN).await,
        "account_deactivated"
    );
    let wrong = app.login(&app.client(), "bob", "not the password").await;
    expect_error(wrong, StatusCode::UNAUTHORIZED).await;
    // The name stays bob's.
    expect_error(
        register(&app, "bob", "other@example.com").await,
        StatusCode::CONFLICT,
    )
    .await;
    let listed = owner.get_ok("/api/admin/users").await;
    let entry = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == bob.id.as_str())
        .expect("bob is still listed")
        .clone();
    assert_eq!(
        (entry["username"].clone(), entry["active"].clone()),
        (json!("bob"), json!(false))
    );

    owner
        .post_expecting(
            &format!("/api/admin/users/{}/reactivate", bob.id),
            &json!({}),
            StatusCode::OK,
        )
        .await;
    let back = User::sign_in(&app.base, "bob").await;
    assert_eq!(back.id, bob.id, "the same account, with its data");
    app.stop().await;
}

#[tokio::test]
async fn deleted_users_name_cannot_be_registered_again() {
    let app = TestApp::start(&[]).await;
    let _owner = app.user("owner").await;
    let ada = app.user("ada").await;
    let live = register(&app, "owner", "x@example.com").await;
    let taken_code = expect_error(live, StatusCode::CONFLICT).await;
    assert_eq!(ada.delete_account().await.status(), StatusCode::NO_CONTENT);
    for name in ["ada", "ADA", " Ada "] {
        let again = register(&app, name, "newcomer@example.com").await;
        let code = expect_error(again, StatusCode::CONFLICT).await;
        assert_eq!(code, taken_code, "the same answer as for a name in use");
    }
    // The address is free: the same person may come back under another name.
    assert_eq!(
        register(&app, "ada.returns", "ada@example.com")
            .await
            .status(),
        StatusCode::CREATED
    );
    app.stop().await;
}

#[tokio::test]
async fn a_newcomer_with_a_deleted_admins_name_gets_nothing_of_theirs() {
    let app = TestApp::start(&[]).await;
    let owner = app.user("owner").await;
    let boss = app.user("boss").await;
    set_role(&owner, &boss, "admin").await;
    let boss = User::sign_in(&app.base, "boss").await;
    assert_eq!(boss.get("/api/logs").await.status(), StatusCode::OK);
    assert_eq!(boss.delete_account().await.status(), StatusCode::NO_CONTENT);

    expect_error(
        register(&app, "boss", "impostor@example.com").await,
        StatusCode::CONFLICT,
    )
    .await;
    let impostor = app.user("b0ss").await;
    assert_eq!(role_of(&impostor).await, "member");
    expect_error(impostor.get("/api/logs").await, StatusCode::FORBIDDEN).await;
    expect_error(
        impostor.get("/api/admin/users").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn deleted_users_messages_show_deleted_user() {
    let app = TestApp::start(&[]).await;
    let grace = app.user("grace").await;
    let ada = app.user("ada").await;
    let room = grace
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "general" }),
            StatusCode::CREATED,
        )
        .await;
    let room = room["id"].as_str().unwrap();
    ada.post_expecting(
        &format!("/api/rooms/{room}/join"),
        &json!({}),
        StatusCode::OK,
    )
    .await;
    let said = ada.send(room, "I was here").await;
    grace.send(room, "so was I").await;
    assert_eq!(ada.delete_account().await.status(), StatusCode::NO_CONTENT);

    let history = grace
        .get_ok(&format!("/api/conversations/{room}/messages"))
        .await;
    let messages = history["messages"].as_array().unwrap();
    let adas = messages
        .iter()
        .find(|m| m["id"] == said["id"])
        .expect("kept in the room");
    assert_eq!(adas["sender_name"], "deleted user");
    assert_eq!(adas["body"], "I was here");
    assert!(
        messages.iter().any(|m| m["sender_name"] == "grace"),
        "others keep their names: {history}"
    );
    app.stop().await;
}

#[tokio::test]
async fn account_deletion_without_the_password_is_refused() {
    let app = TestApp::start(&[]).await;
    let _owner = app.user("owner").await;
    let ada = app.user("ada").await;
    let no_body = ada.delete("/api/users/me").await;
    assert_eq!(
        expect_error(no_body, StatusCode::BAD_REQUEST).await,
        "password_required"
    );
    let empty = ada.delete_account_with(&json!({ "password": "" })).await;
    expect_error(empty, StatusCode::BAD_REQUEST).await;
    let wrong = ada
        .delete_account_with(&json!({ "password": "a stolen session" }))
        .await;
    assert_eq!(
        expect_error(wrong, StatusCode::UNAUTHORIZED).await,
        "wrong_password"
    );
    assert_eq!(
        ada.get("/api/auth/me").await.status(),
        StatusCode::OK,
        "still signed in, not deleted"
    );
    assert_eq!(ada.delete_account().await.status(), StatusCode::NO_CONTENT);
    app.stop().await;
}

#[tokio::test]
async fn guessing_the_password_to_delete_an_account_is_throttled_like_logins() {
    let app = TestApp::start(&[]).await;
    let _owner = app.user("owner").await;
    let ada = app.user("ada").await;
    let mut throttled = None;
    for attempt in 0..8 {
        let guess = ada
            .delete_account_with(&json!({ "password": format!("guess number {attempt}") }))
            .await;
        if guess.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(attempt);
            assert!(guess.headers().contains_key("retry-after"));
            break;
        }
        expect_error(guess, StatusCode::UNAUTHORIZED).await;
    }
    assert!(
        throttled.is_some_and(|n| n <= 5),
        "throttled after the account's failures: {throttled:?}"
    );
    // The same count guards the login.
    let login = app.login(&app.client(), "ada", PASSWORD).await;
    expect_error(login, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test]
async fn admin_grant_command_makes_an_admin() {
    let app = TestApp::start(&[]).await;
    let _owner = app.user("owner").await;
    let bob = app.user("bob").await;
    let grant = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_microchat"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg(format!("--data-dir={}", app.data_dir.display()))
            .args(["admin", "grant"])
            .args(args)
            .output()
            .expect("the microchat binary runs")
    };
    let granted = grant(&["bob"]);
    assert!(granted.status.success(), "{granted:?}");
    let said = String::from_utf8_lossy(&granted.stdout);
    assert!(
        said.contains("bob") && said.contains("is now admin (was member)"),
        "{said}"
    );
    let bob_again = User::sign_in(&app.base, "bob").await;
    assert_eq!(role_of(&bob_again).await, "admin");
    assert_eq!(
        bob_again.get("/api/admin/users").await.status(),
        StatusCode::OK
    );

    // Taken back by id: every session of bob ends, though the command ran outside.
    let revoked = grant(&[&bob.id, "--role", "member"]);
    assert!(revoked.status.success(), "{revoked:?}");
    eventually("bob's admin session ends", || async {
        bob_again.get("/api/auth/me").await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let unknown = grant(&["nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account"));
    let last_owner = grant(&["owner", "--role", "member"]);
    assert!(!last_owner.status.success(), "the last owner stays");
    let _ = bob;
    app.stop().await;
}
