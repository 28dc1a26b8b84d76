//! Hostile and malformed input: each gets a 4xx with a JSON error, and the service keeps
//! serving everyone.

mod common;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{TestApp, expect_error};
use jsonwebtoken::{EncodingKey, Header};
use platform::token::{AUDIENCE, Claims, ISSUER};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client()
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the broker answers")
}

async fn still_serving(app: &TestApp) {
    let name = format!("ok_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.signed_up(&app.client(), &name).await;
}

#[tokio::test]
async fn malformed_bodies_get_json_4xx_errors() {
    let app = TestApp::start(&[]).await;
    let register = "/api/auth/register";
    let json_type = "application/json";
    let cases: Vec<(&str, reqwest::Response, StatusCode)> = vec![
        (
            "malformed JSON",
            post_raw(&app, register, json_type, "{\"username\": ").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "not an object",
            post_raw(&app, register, json_type, "[1,2,3]").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong content type",
            post_raw(&app, register, "text/plain", "{}").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no content type",
            app.client()
                .post(app.url(register))
                .body("{}")
                .send()
                .await
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "2 MB body",
            post_raw(&app, register, json_type, vec![b' '; 2 * 1024 * 1024]).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "missing fields",
            post_raw(&app, register, json_type, r#"{"username":"ada"}"#).await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong types",
            post_raw(
                &app,
                register,
                json_type,
                r#"{"username":1,"email":[],"password":null}"#,
            )
            .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "invalid UTF-8",
            post_raw(&app, register, json_type, vec![b'"', 0xff, 0xfe, b'"']).await,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (case, response, status) in cases {
        assert_eq!(response.status(), status, "{case}");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|_| panic!("{case}: the error body is JSON"));
        assert!(body["error"]["code"].is_string(), "{case}: {body}");
    }
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_usernames_emails_and_passwords_are_refused() {
    let app = TestApp::start(&[]).await;
    let huge = "a".repeat(10_000);
    let usernames = [
        huge.as_str(),
        "ab",
        "has space",
        "semi;colon",
        "\u{0430}dmin",  // Cyrillic a
        "\u{212A}elvin", // Kelvin sign, lowercases to k
        "ad\u{200B}min", // zero-width space
        "admin\u{202E}", // right-to-left override
        "\u{FF41}dmin",  // full-width a
        "a\u{0000}dmin", // NUL
        "👩‍💻coder",
    ];
    for username in usernames {
        let response = app
            .client()
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": username, "email": "x@example.com", "password": "correct horse" }))
            .send()
            .await
            .unwrap();
        let code = expect_error(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_argument", "{username:?}");
    }
    for (email, password) in [
        ("not-an-email", "correct horse"),
        ("x@example.com", "short"),
        ("x@example.com", huge.as_str()),
    ] {
        let response = app
            .client()
            .post(app.url("/api/auth/register"))
            .json(&json!({ "username": "valid_name", "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST).await;
    }
    let huge_login = app.login(&app.client(), &huge, &huge).await;
    expect_error(huge_login, StatusCode::UNAUTHORIZED).await;
    still_serving(&app).await;
    app.stop().await;
}

fn claims(sub: &str, sid: &str, exp: i64) -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: sub.parse().unwrap(),
        sid: sid.parse().unwrap(),
        name: "mallory".into(),
        email: "mallory@example.com".into(),
        iat: exp - 900,
        exp,
        csrf: "x".into(),
        role: platform::role::Role::Member,
    }
}

#[tokio::test]
async fn forged_expired_and_wrong_algorithm_tokens_are_refused() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let login = app.signed_up(&client, "victim").await;
    let token = login["token"].as_str().unwrap();
    let (sub, sid) = (
        login["user"]["id"].as_str().unwrap(),
        login["session"]["id"].as_str().unwrap(),
    );
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();

    let real_key = std::fs::read_to_string(app.data_dir.join("auth-signing-key.pem")).unwrap();
    let real_key = auth::keys::SigningKey::from_pem(&real_key).unwrap();
    let expired = real_key.sign(&claims(sub, sid, now - 60));

    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["name"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );

    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string());
    let alg_none = format!("{none_header}.{}.", parts[1]);

    // Algorithm confusion: HMAC keyed with the (public) verification key.
    let public_x = real_key.public_x().to_owned();
    let mut hs_header = Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.to_owned());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims(sub, sid, now + 600),
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();

    let other_key =
        auth::keys::SigningKey::from_pem(&auth::keys::SigningKey::generate_pem()).unwrap();
    let other_signed = other_key.sign(&claims(sub, sid, now + 600));
    let other_with_our_kid = {
        let signed: Vec<String> = other_signed.split('.').map(str::to_owned).collect();
        format!("{}.{}.{}", parts[0], signed[1], signed[2])
    };

    let garbage = "not.a.jwt".to_owned();
    let oversized = "a".repeat(8_000);
    for (case, bad) in [
        ("expired", &expired),
        ("tampered payload", &tampered),
        ("alg none", &alg_none),
        ("HS256 with the public key", &hs256),
        ("another key", &other_signed),
        ("another key under our kid", &other_with_our_kid),
        ("garbage", &garbage),
        ("oversized", &oversized),
    ] {
        let response = app.me(&client, Some(bad)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{case}");
    }
    assert_eq!(
        app.me(&client, Some(token)).await.status(),
        StatusCode::OK,
        "the real token still works"
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    expect_error(
        client.get(app.url("/api/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let wrong_method = client.get(app.url("/api/auth/login")).send().await.unwrap();
    expect_error(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let bad_query = client
        .get(app.url("/api/users?limit=many"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert!(bad_query.status().is_client_error());
    app.stop().await;
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let app = TestApp::start(&[]).await;
    let client = app.client();
    let health: Value = client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    app.signed_up(&client, "metered").await;
    let metrics = client
        .get(app.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/api/auth/login""#));
    let openapi: Value = client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} documented");
    }
    let traced = client
        .get(app.url("/healthz"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        traced.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace id is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_edits_and_reaction_emoji_get_json_400s() {
    let app = TestApp::start(&[]).await;
    let ada = common::User::sign_up(&app.base, "ada").await;
    let room = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "general" }),
            StatusCode::CREATED,
        )
        .await;
    let room = room["id"].as_str().unwrap().to_owned();
    let said = ada.send(&room, "hello").await;
    let message = format!(
        "/api/conversations/{room}/messages/{}",
        said["id"].as_str().unwrap()
    );
    let patch = |body: reqwest::Body, content_type: &'static str| {
        ada.client
            .patch(app.url(&message))
            .bearer_auth(&ada.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json_type = "application/json";
    for (case, body, status) in [
        (
            "over-long edit",
            json!({ "body": "x".repeat(4_001) }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "huge edit",
            json!({ "body": "é".repeat(20_000) }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "blank edit",
            json!({ "body": " \n\t" }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "control characters",
            json!({ "body": "a\u{0}b" }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no body field",
            json!({ "text": "hi" }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "body not a string",
            r#"{"body": 7}"#.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "malformed JSON",
            r#"{"body": "#.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let response = patch(body.into(), json_type).await.unwrap();
        assert_eq!(response.status(), status, "{case}");
        expect_error(response, status).await;
    }
    let not_json = patch(r#"{"body":"hi"}"#.into(), "text/plain")
        .await
        .unwrap();
    expect_error(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Path segments as a client may send them, already percent-encoded.
    let long = "%F0%9F%91%8D".repeat(250);
    for emoji in [
        "%F0%9F%A6%A9",                      // flamingo: an emoji, not in the set
        "%F0%9F%91%8D%F0%9F%8F%BD",          // thumbs up with a skin tone
        "%F0%9F%91%8D%E2%80%8D%F0%9F%91%8D", // two joined by a ZWJ
        "%F0%9F%91%8D%EF%B8%8F%EF%B8%8F",    // two variation selectors
        "%E2%9D%A4%EF%B8%8E",                // heart, text style
        "%F0%9F%91%8D%F0%9F%91%8D",          // two thumbs
        "%EF%B8%8F",                         // the selector alone
        "%FF%FE",                            // not UTF-8
        "%00",
        "%3Cscript%3E",
        "%25F0%259F%2591%258D", // encoded twice
        "thumbsup",
        long.as_str(),
    ] {
        let path = format!("{message}/reactions/{emoji}");
        for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
            let response = ada
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(&ada.token)
                .send()
                .await
                .unwrap();
            expect_error(response, StatusCode::BAD_REQUEST).await;
        }
    }
    let unchanged = ada
        .get_ok(&format!("/api/conversations/{room}/messages"))
        .await;
    assert_eq!(unchanged["messages"][0]["body"], "hello");
    assert!(unchanged["messages"][0].get("reactions").is_none());
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_notification_queries_and_bodies_get_400s() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "before=not-a-uuid",
        "unread_only=maybe",
    ] {
        let refused = ada.get(&format!("/api/notifications?{query}")).await;
        let code = expect_error(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            code == "invalid_argument" || code == "invalid_query",
            "{query}: {code}"
        );
    }
    let too_many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for body in [
        json!({}),
        json!({ "ids": [] }),
        json!({ "all": false }),
        json!({ "ids": [uuid::Uuid::now_v7()], "all": true }),
        json!({ "ids": too_many }),
        json!({ "ids": ["not-a-uuid"] }),
        json!({ "ids": "everything" }),
        json!({ "ids": null, "all": true }),
        json!({ "all": null }),
        json!([]),
    ] {
        let refused = ada.post("/api/notifications/read", &body).await;
        let status = refused.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        expect_error(refused, status).await;
    }
    still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn odd_mentions_are_sent_as_text_and_notify_no_one() {
    let app = TestApp::start(&[]).await;
    let (ada, bob) = (app.user("ada").await, app.user("bob").await);
    let room = ada
        .post_expecting("/api/rooms", &json!({ "name": "odd" }), StatusCode::CREATED)
        .await;
    let id = room["id"].as_str().unwrap();
    bob.post_expecting(&format!("/api/rooms/{id}/join"), &json!({}), StatusCode::OK)
        .await;
    // `@` alone; 1,333 mentions of a too-short name (within the 4,000-character limit);
    // 800 of one real name; look-alikes of `@bob` in other scripts.
    let many_short = "@a ".repeat(1_333);
    let many_same = "@bob ".repeat(800);
    for body in [
        "@",
        many_short.as_str(),
        "\u{ff20}bob \u{fe6b}bob @\u{432}ob @b\u{43e}b",
    ] {
        let sent = ada.send(id, body).await;
        assert_eq!(sent["body"], body);
    }
    let none: Value = bob.get_ok("/api/notifications").await;
    assert_eq!(none["unread_count"], 0, "{none}");
    ada.send(id, &many_same).await;
    let one: Value = bob.get_ok("/api/notifications").await;
    assert_eq!(one["unread_count"], 1, "one mention however often named");
    still_serving(&app).await;
    app.stop().await;
}
