//! The auth flow as a client sees it, through the broker, on SQLite and on PostgreSQL.

mod common;

use common::{Db, TestApp, expect_error};
use reqwest::StatusCode;
use serde_json::Value;

async fn bearer_flow(db: Db) {
    let Some(app) = TestApp::start_on(db, &[]).await else {
        return;
    };
    let client = app.client();
    let registered = app.register(&client, "Ada", "correct horse battery").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let user: Value = registered.json().await.unwrap();
    assert_eq!(
        user["user"]["username"], "ada",
        "usernames are folded to lowercase"
    );
    assert_eq!(user["user"]["email"], "ada@example.com");

    let login: Value = app
        .login(&client, "ada@example.com", "correct horse battery")
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let me = app.me(&client, Some(token)).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["id"], user["user"]["id"]);
    assert_eq!(me["user"]["username"], "ada");

    let logout = client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    expect_error(app.me(&client, Some(token)).await, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test]
async fn register_login_me_logout_with_a_bearer_token_on_sqlite() {
    bearer_flow(Db::Sqlite).await;
}

#[tokio::test]
async fn register_login_me_logout_with_a_bearer_token_on_postgres() {
    bearer_flow(Db::Postgres).await;
}

#[tokio::test]
async fn browser_session_works_by_cookie_and_writes_need_the_csrf_token() {
    let app = TestApp::start(&[]).await;
    let browser = app.browser();
    let login = app.signed_up(&browser, "grace").await;
    let csrf = login["csrf_token"].as_str().unwrap();

    let me = app.me(&browser, None).await;
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "the HttpOnly cookie authenticates"
    );
    let me: Value = me.json().await.unwrap();
    assert_eq!(
        me["csrf_token"], csrf,
        "cookie callers learn their CSRF token from /me"
    );

    let forged = browser
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(forged, StatusCode::FORBIDDEN).await, "csrf");
    let wrong = browser
        .post(app.url("/api/auth/logout"))
        .header("x-csrf-token", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(wrong, StatusCode::FORBIDDEN).await, "csrf");
    assert_eq!(
        app.me(&browser, None).await.status(),
        StatusCode::OK,
        "refused writes changed nothing"
    );

    let logout = browser
        .post(app.url("/api/auth/logout"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    expect_error(app.me(&browser, None).await, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test]
async fn revoked_token_is_rejected_immediately_even_by_cookie() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let login = app.signed_up(&client, "linus").await;
    let token = login["token"].as_str().unwrap();
    assert_eq!(app.me(&client, Some(token)).await.status(), StatusCode::OK);
    let logout = client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    // No pause: the very next request must be refused, by header and by cookie.
    expect_error(app.me(&client, Some(token)).await, StatusCode::UNAUTHORIZED).await;
    let by_cookie = client
        .get(app.url("/api/auth/me"))
        .header("cookie", format!("microchat_session={token}"))
        .send()
        .await
        .unwrap();
    expect_error(by_cookie, StatusCode::UNAUTHORIZED).await;
    let again = client
        .post(app.url("/api/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_error(again, StatusCode::UNAUTHORIZED).await;
    app.stop().await;
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let login = app.signed_up(&client, "barbara").await;
    let first = login["refresh_token"].as_str().unwrap();
    let refresh = |token: &str| {
        client
            .post(app.url("/api/auth/refresh"))
            .json(&serde_json::json!({ "refresh_token": token }))
            .send()
    };
    let refreshed = refresh(first).await.unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(
        refreshed["session"]["id"], login["session"]["id"],
        "same session"
    );
    assert_eq!(
        app.me(&client, refreshed["token"].as_str()).await.status(),
        StatusCode::OK
    );
    expect_error(refresh(first).await.unwrap(), StatusCode::UNAUTHORIZED).await;

    let browser = app.browser();
    app.login(&browser, "barbara", "correct horse battery")
        .await;
    let by_cookie = browser
        .post(app.url("/api/auth/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_cookie.status(),
        StatusCode::OK,
        "the refresh cookie is enough"
    );
    app.stop().await;
}

#[tokio::test]
async fn duplicate_username_or_email_is_a_conflict() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    assert_eq!(
        app.register(&client, "margaret", "correct horse battery")
            .await
            .status(),
        StatusCode::CREATED
    );
    let same_name = app.register(&client, "MARGARET", "another password").await;
    assert_eq!(
        expect_error(same_name, StatusCode::CONFLICT).await,
        "conflict"
    );
    let same_email = client
        .post(app.url("/api/auth/register"))
        .json(&serde_json::json!({ "username": "maggie", "email": "Margaret@Example.com", "password": "correct horse" }))
        .send()
        .await
        .unwrap();
    expect_error(same_email, StatusCode::CONFLICT).await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    app.register(&client, "alan", "correct horse battery").await;
    let wrong = app.login(&client, "alan", "wrong password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown = app.login(&client, "nobody", "wrong password").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    app.stop().await;
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_per_account() {
    let app = TestApp::start(&["--auth-max-failures-per-account=3"]).await;
    let client = app.client();
    app.register(&client, "hedy", "correct horse battery").await;
    for _ in 0..3 {
        assert_eq!(
            app.login(&client, "hedy", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = app.login(&client, "hedy", "correct horse battery").await;
    assert!(locked.headers().contains_key("retry-after"));
    expect_error(locked, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}

#[tokio::test]
async fn users_are_listed_a_page_at_a_time_without_emails() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let login = app.signed_up(&client, "user_c").await;
    let token = login["token"].as_str().unwrap();
    for name in ["user_a", "user_b", "user_d"] {
        app.register(&client, name, "correct horse battery").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url("/api/users?limit=3");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for user in page["users"].as_array().unwrap() {
            assert!(
                user.get("email").is_none(),
                "other users' emails are private"
            );
            seen.push(user["username"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["user_a", "user_b", "user_c", "user_d"]);
    expect_error(
        client.get(app.url("/api/users")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let bad_limit = client
        .get(app.url("/api/users?limit=1000"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_error(bad_limit, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

/// What a browser relies on: foreign origins refused on the credential routes, CORS only
/// for the configured origins, cookies HttpOnly and `SameSite=Strict` (the refresh
/// cookie only for `/api/auth`, `Secure` when configured), and a client that cannot pick
/// its own rate-limit key with `X-Forwarded-For`.
#[tokio::test]
async fn browser_facing_headers_are_strict() {
    let app = TestApp::start(&["--broker-rate-limit-auth=4/1m", "--broker-cookie-secure"]).await;
    let client = app.client();
    let registered = app
        .register(&client, "heidi", "correct horse battery")
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let credentials = serde_json::json!({ "login": "heidi", "password": "correct horse battery" });

    // A foreign page cannot log in (or register, or refresh) on the user's behalf.
    let new_account = serde_json::json!({ "username": "mallory", "email": "mallory@example.com", "password": "correct horse battery" });
    let refresh = serde_json::json!({ "refresh_token": "a-stolen-one" });
    for (path, body) in [
        ("/api/auth/login", &credentials),
        ("/api/auth/register", &new_account),
        ("/api/auth/refresh", &refresh),
    ] {
        let foreign = client
            .post(app.url(path))
            .header("origin", "https://evil.example")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_error(foreign, StatusCode::FORBIDDEN).await,
            "origin",
            "{path} from a foreign origin"
        );
    }

    // CORS: the configured origin gets credentials, a foreign one nothing.
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, app.url("/api/auth/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("http://localhost:8081").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:8081"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let foreign = preflight("https://evil.example").await.unwrap();
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin"),
        "a foreign origin is not allowed: {:?}",
        foreign.headers()
    );

    // The login's cookies.
    let login = client
        .post(app.url("/api/auth/login"))
        .header("origin", "http://localhost:8081")
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let cookie = |name: &str| {
        cookies
            .iter()
            .find(|cookie| cookie.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
            .to_ascii_lowercase()
    };
    for (name, path) in [
        ("microchat_session", "path=/"),
        ("microchat_refresh", "path=/api/auth"),
    ] {
        let cookie = cookie(name);
        for attribute in ["httponly", "samesite=strict", "secure", "max-age="] {
            assert!(
                cookie.contains(attribute),
                "{name} lacks {attribute}: {cookie}"
            );
        }
        assert!(
            cookie.split(';').any(|part| part.trim() == path),
            "{name} is not limited to {path}: {cookie}"
        );
    }

    // Spend the login budget; then another address in X-Forwarded-For does not buy more
    // (the header is not trusted unless BROKER_TRUST_FORWARDED_FOR says so).
    let mut spent = false;
    for _ in 0..5 {
        let again = client
            .post(app.url("/api/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        if again.status() == StatusCode::TOO_MANY_REQUESTS {
            spent = true;
            break;
        }
    }
    assert!(spent, "4 logins a minute are allowed, not more");
    let spoofed = client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(spoofed, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_when_trusted_and_handle_checks_the_origin() {
    // Behind a proxy the operator runs, the first X-Forwarded-For address is the client:
    // each address has its own login budget.
    let app = TestApp::start(&[
        "--broker-rate-limit-auth=3/1m",
        "--broker-trust-forwarded-for",
    ])
    .await;
    let client = app.client();
    let registered = client
        .post(app.url("/api/auth/register"))
        .header("x-forwarded-for", "198.51.100.1")
        .json(&serde_json::json!({ "username": "ivan", "email": "ivan@example.com", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login_from = |address: &'static str| {
        client
            .post(app.url("/api/auth/login"))
            .header("x-forwarded-for", format!("{address}, 10.0.0.1"))
            .json(&serde_json::json!({ "login": "ivan", "password": "correct horse battery" }))
            .send()
    };
    let mut spent = false;
    for _ in 0..4 {
        if login_from("203.0.113.1").await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            spent = true;
            break;
        }
    }
    assert!(spent, "3 logins a minute per client address");
    let other = login_from("203.0.113.2").await.unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another client behind the proxy has its own budget"
    );

    // The older single-endpoint API refuses a foreign page too, before reading the body.
    let foreign = client
        .post(app.url("/handle"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({ "action": "auth", "auth": { "email": "ivan@example.com", "password": "correct horse battery" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = foreign.json().await.expect("a JSON answer");
    assert!(body.to_string().contains("origin"), "{body}");
    app.stop().await;
}
