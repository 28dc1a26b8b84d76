//! Attacks on passwords, sessions and email verification, against the all-in-one as a
//! client sees it: the old password guarded, other sessions ended (their sockets too),
//! reset links that work once, for a while, for one account, without telling anyone
//! whether an address has an account; and mail only to addresses proven to be their
//! owner's. Mails are read from the all-in-one's mail files.

mod common;

use common::{
    TestApp, User, expect_error,
    links::{RESET_PAGE, VERIFY_PAGE},
    ws,
};
use reqwest::{Client, Response, StatusCode, header};
use serde_json::{Value, json};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "staple battery horse";

fn email(username: &str) -> String {
    format!("{username}@example.com")
}

/// A client with a User-Agent, as a browser on some device.
fn device(name: &str) -> Client {
    Client::builder()
        .user_agent(name)
        .build()
        .expect("a client builds")
}

/// Registers `username`, verifies its address through the registration mail's link, and
/// signs in.
async fn verified_user(app: &TestApp, username: &str) -> User {
    let user = User::sign_up(&app.base, username).await;
    app.verify_address(&email(username)).await;
    user
}

async fn post(app: &TestApp, path: &str, body: &Value) -> Response {
    Client::new()
        .post(app.url(path))
        .json(body)
        .send()
        .await
        .expect("the broker answers")
}

async fn login_status(app: &TestApp, username: &str, password: &str) -> StatusCode {
    app.login(&Client::new(), username, password).await.status()
}

async fn me_status(user: &User) -> StatusCode {
    user.get("/api/auth/me").await.status()
}

/// Asks for a reset link for `address` and returns its token once it is mailed.
async fn reset_token(app: &TestApp, address: &str) -> String {
    let seen = app.link_tokens(address, RESET_PAGE);
    let asked = post(
        app,
        "/api/auth/password/forgot",
        &json!({ "email": address }),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    app.new_link_token(address, RESET_PAGE, &seen).await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Response {
    post(
        app,
        "/api/auth/password/reset",
        &json!({ "token": token, "new_password": password }),
    )
    .await
}

/// Subjects of the mails to `address`.
fn subjects(app: &TestApp, address: &str) -> Vec<String> {
    app.mails_to(address)
        .into_iter()
        .map(|mail| mail.subject)
        .collect()
}

/// Waits until a mail to `address` has a subject containing `part`.
async fn mail_arrives(app: &TestApp, address: &str, part: &str) -> frontend::mailbox::Mail {
    for _ in 0..200 {
        if let Some(mail) = app
            .mails_to(address)
            .into_iter()
            .find(|mail| mail.subject.contains(part))
        {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no mail {part:?} to {address}: {:?}",
        subjects(app, address)
    );
}

// ---- change password ----------------------------------------------------------------

#[tokio::test]
async fn password_change_needs_the_old_password() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let wrong = ada
        .post(
            "/api/auth/password",
            &json!({ "old_password": "not my password", "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(
        expect_error(wrong, StatusCode::UNAUTHORIZED).await,
        "unauthenticated"
    );
    assert_eq!(login_status(&app, "ada", PASSWORD).await, StatusCode::OK);
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    let anonymous = post(
        &app,
        "/api/auth/password",
        &json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD }),
    )
    .await;
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
    let too_short = ada
        .post(
            "/api/auth/password",
            &json!({ "old_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    expect_error(too_short, StatusCode::BAD_REQUEST).await;
    assert_eq!(login_status(&app, "ada", PASSWORD).await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn wrong_old_passwords_count_as_failed_logins() {
    // Guesses from one address at one account: the per-source limit of the login throttle.
    let app = TestApp::start(&["--auth-max-failures-per-source=3"]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let guess = json!({ "old_password": "a wrong guess", "new_password": NEW_PASSWORD });
    for _ in 0..3 {
        let refused = ada.post("/api/auth/password", &guess).await;
        expect_error(refused, StatusCode::UNAUTHORIZED).await;
    }
    let throttled = ada.post("/api/auth/password", &guess).await;
    assert!(throttled.headers().contains_key(header::RETRY_AFTER));
    expect_error(throttled, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test]
async fn password_change_ends_other_sessions_and_keeps_this_one() {
    let app = TestApp::start(&[]).await;
    let here = User::sign_up(&app.base, "ada").await;
    let elsewhere = User::sign_in(&app.base, "ada").await;
    let mut socket = ws::open(&app.base, &elsewhere.token)
        .await
        .expect("the socket opens");
    ws::ready(&mut socket).await;
    let changed = here
        .post_expecting(
            "/api/auth/password",
            &json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(changed["sessions_ended"], 1);
    assert_eq!(
        ws::close_code(&mut socket, Duration::from_secs(5)).await,
        Some(4001),
        "the other session's socket closes at once"
    );
    assert_eq!(me_status(&elsewhere).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&here).await, StatusCode::OK);
    assert_eq!(
        login_status(&app, "ada", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::OK
    );
    app.stop().await;
}

// ---- reset by mail ----------------------------------------------------------------------

#[tokio::test]
async fn reset_answers_the_same_for_unknown_emails() {
    let app = TestApp::start(&[]).await;
    verified_user(&app, "ada").await;
    let ask = |address: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let answer = post(
                app,
                "/api/auth/password/forgot",
                &json!({ "email": address }),
            )
            .await;
            let status = answer.status();
            let body: Value = answer.json().await.expect("JSON");
            (status, body, started.elapsed())
        }
    };
    let (known_status, known_body, known_time) = ask("ada@example.com").await;
    let (unknown_status, unknown_body, unknown_time) = ask("nobody@example.com").await;
    assert_eq!(known_status, StatusCode::ACCEPTED);
    assert_eq!(unknown_status, StatusCode::ACCEPTED);
    assert_eq!(known_body, unknown_body, "the same words for both");
    let gap = known_time.abs_diff(unknown_time);
    assert!(
        gap < Duration::from_millis(250),
        "similar time: {known_time:?} and {unknown_time:?}"
    );
    mail_arrives(&app, "ada@example.com", "Reset your microchat password").await;
    assert!(app.mails_to("nobody@example.com").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn reset_link_works_once() {
    let app = TestApp::start(&[]).await;
    let ada = verified_user(&app, "ada").await;
    let token = reset_token(&app, "ada@example.com").await;
    let done = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::OK);
    let done: Value = done.json().await.expect("JSON");
    assert_eq!(done["sessions_ended"], 1, "every session ends");
    assert_eq!(me_status(&ada).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::OK
    );
    assert_eq!(
        login_status(&app, "ada", PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    let again = reset(&app, &token, "a third password").await;
    expect_error(again, StatusCode::NOT_FOUND).await;
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::OK
    );
    mail_arrives(&app, "ada@example.com", "password was changed").await;
    app.stop().await;
}

#[tokio::test]
async fn expired_reset_link_is_refused() {
    let app = TestApp::start(&["--auth-reset-link-ttl=1s"]).await;
    verified_user(&app, "ada").await;
    let token = reset_token(&app, "ada@example.com").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = reset(&app, &token, NEW_PASSWORD).await;
    expect_error(late, StatusCode::NOT_FOUND).await;
    assert_eq!(login_status(&app, "ada", PASSWORD).await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn another_users_reset_token_does_not_work_for_me() {
    let app = TestApp::start(&[]).await;
    let ada = verified_user(&app, "ada").await;
    verified_user(&app, "bob").await;
    let bobs = reset_token(&app, "bob@example.com").await;
    // Ada, signed in, presents Bob's token: only the token's account can change, never
    // the caller's.
    let response = ada
        .post(
            "/api/auth/password/reset",
            &json!({ "token": bobs, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(login_status(&app, "ada", PASSWORD).await, StatusCode::OK);
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    // A verification token is no reset token, even for its own account.
    let verify = app
        .link_tokens("ada@example.com", VERIFY_PAGE)
        .into_iter()
        .next()
        .expect("ada's verification link");
    let misused = reset(&app, &verify, NEW_PASSWORD).await;
    expect_error(misused, StatusCode::NOT_FOUND).await;
    assert_eq!(login_status(&app, "ada", PASSWORD).await, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_password_change_makes_an_unused_reset_link_useless() {
    let app = TestApp::start(&[]).await;
    let ada = verified_user(&app, "ada").await;
    let token = reset_token(&app, "ada@example.com").await;
    ada.post_expecting(
        "/api/auth/password",
        &json!({ "old_password": PASSWORD, "new_password": NEW_PASSWORD }),
        StatusCode::OK,
    )
    .await;
    let stale = reset(&app, &token, "an attacker's pick").await;
    expect_error(stale, StatusCode::NOT_FOUND).await;
    assert_eq!(
        login_status(&app, "ada", NEW_PASSWORD).await,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_reset_and_verification_tokens_get_a_clear_4xx() {
    let app = TestApp::start(&[]).await;
    verified_user(&app, "ada").await;
    let used = reset_token(&app, "ada@example.com").await;
    assert_eq!(
        reset(&app, &used, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    let wrong = "A".repeat(43);
    let huge = "A".repeat(100_000);
    let mut messages = BTreeSet::new();
    for token in [
        wrong.as_str(),
        used.as_str(),
        "",
        "short",
        "../../etc/passwd",
        "A\u{0}B",
        "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ=",
        huge.as_str(),
    ] {
        for path in ["/api/auth/password/reset", "/api/auth/email/verify"] {
            let answer = post(
                &app,
                path,
                &json!({ "token": token, "new_password": "a fine new password" }),
            )
            .await;
            let status = answer.status();
            assert!(status.is_client_error(), "{path} {token:.20}: {status}");
            let body: Value = answer.json().await.expect("errors are JSON");
            if status == StatusCode::NOT_FOUND && path.ends_with("reset") {
                messages.insert(body["error"]["message"].to_string());
            }
        }
    }
    assert_eq!(
        messages.len(),
        1,
        "wrong, used and malformed tokens read the same: {messages:?}"
    );
    for body in [
        json!({ "token": 42 }),
        json!({}),
        json!([]),
        json!({ "token": null, "new_password": PASSWORD }),
    ] {
        for path in ["/api/auth/password/reset", "/api/auth/email/verify"] {
            let status = post(&app, path, &body).await.status();
            assert!(status.is_client_error(), "{path} {body}: {status}");
        }
    }
    app.stop().await;
}

// ---- sessions ---------------------------------------------------------------------------

#[tokio::test]
async fn my_sessions_show_device_address_and_last_use() {
    let app = TestApp::start(&[]).await;
    User::sign_up(&app.base, "ada").await;
    let phone = device("PhoneChat/2.0");
    let login: Value = app
        .login(&phone, "ada", PASSWORD)
        .await
        .json()
        .await
        .expect("JSON");
    let token = login["token"].as_str().expect("a token");
    let listed: Value = phone
        .get(app.url("/api/auth/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the broker answers")
        .json()
        .await
        .expect("JSON");
    let sessions = listed["sessions"].as_array().expect("a list");
    assert_eq!(sessions.len(), 2, "{listed}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], login["session"]["id"]);
    assert_eq!(current[0]["user_agent"], "PhoneChat/2.0");
    assert_eq!(current[0]["ip"], "127.0.0.1");
    assert!(current[0]["last_used_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn ending_a_session_closes_its_sockets() {
    let app = TestApp::start(&[]).await;
    let here = User::sign_up(&app.base, "ada").await;
    let stolen = User::sign_in(&app.base, "ada").await;
    let mut socket = ws::open(&app.base, &stolen.token)
        .await
        .expect("the socket opens");
    ws::ready(&mut socket).await;
    let listed = here.get_ok("/api/auth/sessions").await;
    let other = listed["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["current"] == false)
        .expect("the other session")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let ended = here.delete(&format!("/api/auth/sessions/{other}")).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        ws::close_code(&mut socket, Duration::from_secs(5)).await,
        Some(4001)
    );
    assert_eq!(me_status(&stolen).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&here).await, StatusCode::OK);
    // Gone, unknown, or not mine: 404; not an id: 400.
    let again = here.delete(&format!("/api/auth/sessions/{other}")).await;
    expect_error(again, StatusCode::NOT_FOUND).await;
    let bob = User::sign_up(&app.base, "bob").await;
    let bobs = bob.get_ok("/api/auth/sessions").await["sessions"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let not_mine = here.delete(&format!("/api/auth/sessions/{bobs}")).await;
    expect_error(not_mine, StatusCode::NOT_FOUND).await;
    assert_eq!(me_status(&bob).await, StatusCode::OK);
    let garbage = here.delete("/api/auth/sessions/not-a-uuid").await;
    expect_error(garbage, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_this_session() {
    let app = TestApp::start(&[]).await;
    let here = User::sign_up(&app.base, "ada").await;
    let laptop = User::sign_in(&app.base, "ada").await;
    let phone = User::sign_in(&app.base, "ada").await;
    let ended = here
        .post_expecting("/api/auth/sessions/end-others", &json!({}), StatusCode::OK)
        .await;
    assert_eq!(ended["sessions_ended"], 2);
    assert_eq!(me_status(&laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&here).await, StatusCode::OK);
    let left = here.get_ok("/api/auth/sessions").await;
    assert_eq!(left["sessions"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

// ---- email verification -----------------------------------------------------------------

#[tokio::test]
async fn unverified_address_gets_no_mail_but_the_verification() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let logout = ada.post("/api/auth/logout", &json!({})).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let asked = post(
        &app,
        "/api/auth/password/forgot",
        &json!({ "email": "ada@example.com" }),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    // The reset request of an unverified address mails a verification link instead.
    mail_arrives(&app, "ada@example.com", "Confirm your email address").await;
    // Give a logout or reset mail, if one were due, the time to be written.
    let sentinel = verified_user(&app, "sentinel").await;
    sentinel.post("/api/auth/logout", &json!({})).await;
    mail_arrives(&app, "sentinel@example.com", "signed out").await;
    let subjects = subjects(&app, "ada@example.com");
    assert!(
        subjects
            .iter()
            .all(|s| s.starts_with("Welcome") || s.starts_with("Confirm")),
        "only verification mail: {subjects:?}"
    );
    assert!(app.link_tokens("ada@example.com", RESET_PAGE).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn verification_link_marks_the_email_verified() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let me = ada.get_ok("/api/auth/me").await;
    assert_eq!(me["user"]["email_verified"], false);
    let token = app
        .new_link_token("ada@example.com", VERIFY_PAGE, &BTreeSet::new())
        .await;
    let verified = post(&app, "/api/auth/email/verify", &json!({ "token": token })).await;
    assert_eq!(verified.status(), StatusCode::OK);
    let verified: Value = verified.json().await.expect("JSON");
    assert_eq!(verified["email"], "ada@example.com");
    let me = ada.get_ok("/api/auth/me").await;
    assert_eq!(me["user"]["email_verified"], true);
    let again = post(&app, "/api/auth/email/verify", &json!({ "token": token })).await;
    expect_error(again, StatusCode::NOT_FOUND).await;
    let resend = ada.post("/api/auth/email/resend", &json!({})).await;
    expect_error(resend, StatusCode::CONFLICT).await;
    // Verified: the sign-out notice now arrives, pointing at the password page.
    ada.post("/api/auth/logout", &json!({})).await;
    let notice = mail_arrives(&app, "ada@example.com", "signed out").await;
    assert!(
        notice.text.contains("/account/password"),
        "the notice links the password page: {}",
        notice.text
    );
    app.stop().await;
}

#[tokio::test]
async fn verification_mails_cannot_be_sent_at_will() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    for _ in 0..3 {
        let sent = ada.post("/api/auth/email/resend", &json!({})).await;
        assert_eq!(sent.status(), StatusCode::ACCEPTED);
    }
    let refused = ada.post("/api/auth/email/resend", &json!({})).await;
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test]
async fn addresses_mail_cannot_reach_are_refused() {
    let app = TestApp::start(&[]).await;
    for address in [
        "x@[127.0.0.1]",
        "x@127.0.0.1",
        "x@localhost",
        "x@[ipv6:::1]",
    ] {
        let registered = Client::new()
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": "mallory", "email": address, "password": PASSWORD }))
            .send()
            .await
            .expect("the broker answers");
        expect_error(registered, StatusCode::BAD_REQUEST).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn answers_about_passwords_and_sessions_are_not_cached() {
    let app = TestApp::start(&[]).await;
    let ada = verified_user(&app, "ada").await;
    let token = reset_token(&app, "ada@example.com").await;
    let answers = [
        post(
            &app,
            "/api/auth/password/forgot",
            &json!({ "email": "ada@example.com" }),
        )
        .await,
        ada.get("/api/auth/sessions").await,
        reset(&app, &token, NEW_PASSWORD).await,
    ];
    for answer in answers {
        assert_eq!(
            answer
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{}",
            answer.url()
        );
    }
    app.stop().await;
}
