//! The frontend over HTTP: pages, security headers, assets, and the dev mailbox (listing,
//! one mail, path traversal refused, 404 when off, administrators only — as a stand-in
//! broker says).

use frontend::{Config, FrontendService};
use std::{net::SocketAddr, path::PathBuf};

struct Running {
    base: String,
    http: reqwest::Client,
    shutdown: platform::shutdown::Shutdown,
}

impl Running {
    /// `GET path` as an administrator, redirects not followed.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, Some(("authorization", "Bearer admin")))
            .await
    }

    /// `GET path` with one credential header, or none.
    async fn get_with(&self, path: &str, credential: Option<(&str, &str)>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some((name, value)) = credential {
            request = request.header(name, value);
        }
        request.send().await.expect("the frontend answers")
    }
}

/// A stand-in broker: `GET /api/auth/me` knows the bearer tokens `admin` and `member` and
/// the cookie `session=admin`; anything else is 401.
async fn fake_broker() -> String {
    use axum::{Json, http::HeaderMap, http::StatusCode, routing::get};
    async fn me(headers: HeaderMap) -> Result<Json<serde_json::Value>, StatusCode> {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let is_admin = match (value("authorization").as_str(), value("cookie").as_str()) {
            ("Bearer admin", _) | (_, "session=admin") => true,
            ("Bearer member", _) => false,
            _ => return Err(StatusCode::UNAUTHORIZED),
        };
        Ok(Json(serde_json::json!({ "is_admin": is_admin })))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let app = axum::Router::new().route("/api/auth/me", get(me));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(mail_dir: Option<PathBuf>) -> Running {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker_url: "http://127.0.0.1:18080".to_owned(),
        broker_api_url: Some(fake_broker().await),
        mail_dir,
    };
    let frontend = FrontendService::build(&config)
        .await
        .expect("frontend builds");
    let base = format!("http://{}", frontend.local_addr());
    let shutdown = platform::shutdown::Shutdown::new();
    tokio::spawn(frontend.run(shutdown.clone()));
    Running {
        base,
        http: client(),
        shutdown,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("frontend-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SAMPLE: &str = "From: microchat <no-reply@microchat.localhost>\r\n\
To: ada@example.com\r\n\
Subject: Welcome to microchat, ada\r\n\
Date: Tue, 01 Dec 2026 18:38:32 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative;\r\n boundary=\"B0UND\"\r\n\
\r\n\
--B0UND\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hi ada, welcome <b>home</b>! caf=C3=A9 =\r\n\
time.\r\n\
--B0UND\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>HTML PART</p>\r\n\
--B0UND--\r\n";

#[tokio::test]
async fn pages_have_landmarks_and_security_headers() {
    let app = start(None).await;
    for (path, marker) in [
        ("/register", "register-form"),
        ("/login", "login-form"),
        ("/chat", "id=\"messages\""),
        ("/account", "delete-form"),
        ("/logs", "logs-form"),
        ("/admin", "admin-table"),
        ("/account/password", "password-form"),
        ("/account/sessions", "session-rows"),
        ("/forgot-password", "forgot-form"),
        ("/reset-password", "reset-form"),
        ("/verify-email", "verify-title"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-type"], "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        let csp = headers["content-security-policy"]
            .to_str()
            .expect("ascii CSP");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:18080 ws://127.0.0.1:18080"),
            "{csp}"
        );
        // Attachments' previews are images from the broker.
        assert!(
            csp.contains("img-src 'self' data: blob: http://127.0.0.1:18080;"),
            "{csp}"
        );
        let body = response.text().await.expect("body");
        assert!(body.contains(marker), "{path} lacks {marker}");
        assert!(body.contains(r#"<html lang="en">"#), "{path}");
        assert!(body.contains(r#"<main id="main""#), "{path}");
        assert!(
            body.contains(r#"<nav class="mainnav" aria-label="Main">"#),
            "{path}"
        );
        assert!(
            body.contains(r#"<meta name="broker" content="http://127.0.0.1:18080">"#),
            "{path}"
        );
        assert!(!body.contains("{{"), "{path} has an unfilled placeholder");
        // No inline scripts: the CSP would block them.
        assert!(!body.contains("<script>"), "{path}");
        // The mailbox is off: no link to it.
        assert!(!body.contains("/dev/mailbox"), "{path}");
    }
    let chat = app.get("/chat").await.text().await.expect("body");
    assert!(chat.contains(r#"role="log" aria-live="polite""#));
    assert!(chat.contains(r#"<label for="body""#));
    // The composer's attach button and its file input (js/attachments.js).
    assert!(chat.contains(r#"id="attach" aria-label="Attach files""#));
    assert!(chat.contains(r#"<input type="file" id="attach-input" multiple hidden>"#));
}

#[tokio::test]
async fn assets_health_and_not_found() {
    let app = start(None).await;
    for (path, kind) in [
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/js/chat.js", "text/javascript; charset=utf-8"),
        ("/assets/js/api.js", "text/javascript; charset=utf-8"),
        ("/assets/js/live.js", "text/javascript; charset=utf-8"),
        (
            "/assets/js/attachments.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], kind, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let missing = app.get("/assets/../Cargo.toml").await;
    assert_eq!(missing.status(), 404);
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok");
    let root = app.get("").await;
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()["location"], "/chat");
    let nowhere = app.get("/nowhere").await;
    assert_eq!(nowhere.status(), 404);
    assert!(nowhere.headers().contains_key("content-security-policy"));
    assert!(nowhere.text().await.expect("body").contains("Not found"));
    // The mailbox is off.
    let mailbox = app.get("/dev/mailbox").await;
    assert_eq!(mailbox.status(), 404);
    assert!(
        mailbox
            .text()
            .await
            .expect("body")
            .contains("MICROCHAT_DEV=1")
    );
}

#[tokio::test]
async fn mailbox_lists_mail_newest_first_and_refuses_traversal() {
    let dir = TempDir::new();
    let mail_dir = dir.0.join("mail");
    std::fs::create_dir_all(&mail_dir).expect("mail dir");
    std::fs::write(
        mail_dir.join("0001-older.eml"),
        "To: old@example.com\r\nSubject: Older mail\r\n\r\nolder body\r\n",
    )
    .expect("write");
    // A second later by file time, whatever the clock's resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(mail_dir.join("0002-welcome.eml"), SAMPLE).expect("write");
    std::fs::write(mail_dir.join("notes.txt"), "not a mail").expect("write");
    std::fs::write(
        dir.0.join("secret.eml"),
        "Subject: SECRET\r\n\r\nsecret body",
    )
    .expect("write");
    let app = start(Some(mail_dir.clone())).await;
    let page = app.get("/dev/mailbox").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    let body = page.text().await.expect("body");
    assert!(body.contains("2 mails"), "{body}");
    let welcome = body
        .find("Welcome to microchat, ada")
        .expect("subject listed");
    let older = body.find("Older mail").expect("older listed");
    assert!(welcome < older, "newest first");
    assert!(body.contains("ada@example.com"));
    assert!(body.contains("Tue, 01 Dec 2026 18:38:32 +0000"));
    // The text part, decoded and escaped; not the HTML part.
    assert!(
        body.contains("Hi ada, welcome &lt;b&gt;home&lt;/b&gt;! café time."),
        "{body}"
    );
    assert!(!body.contains("HTML PART"));
    assert!(!body.contains("<b>home</b>"));
    assert!(!body.contains("not a mail"));
    assert!(!body.contains("SECRET"));
    // The navigation links to the mailbox now.
    assert!(body.contains(r#"href="/dev/mailbox""#));

    let one = app.get("/dev/mailbox/0002-welcome.eml").await;
    assert_eq!(one.status(), 200);
    assert!(one.text().await.expect("body").contains("café time."));

    for path in [
        "/dev/mailbox/..%2Fsecret.eml",
        "/dev/mailbox/%2E%2E%2Fsecret.eml",
        "/dev/mailbox/..%5Csecret.eml",
        "/dev/mailbox/notes.txt",
        "/dev/mailbox/missing.eml",
        "/dev/mailbox/.eml",
        "/dev/mailbox/%2Fetc%2Fpasswd",
        "/dev/mailbox/../secret.eml",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("SECRET"), "{path}");
        assert!(!body.contains("secret body"), "{path}");
    }

    // A symlink inside the directory pointing out of it is not followed.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.0.join("secret.eml"), mail_dir.join("link.eml"))
            .expect("symlink");
        let response = app.get("/dev/mailbox/link.eml").await;
        assert_eq!(response.status(), 404);
        let listing = app.get("/dev/mailbox").await.text().await.expect("body");
        assert!(!listing.contains("SECRET"));
    }
}

#[tokio::test]
async fn the_mailbox_is_for_administrators_only() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("0001-welcome.eml"), SAMPLE).expect("write");
    let app = start(Some(dir.0.clone())).await;
    for path in ["/dev/mailbox", "/dev/mailbox/0001-welcome.eml"] {
        let anonymous = app.get_with(path, None).await;
        assert_eq!(anonymous.status(), 401, "{path}");
        let body = anonymous.text().await.expect("body");
        assert!(body.contains("Log in as an administrator"), "{body}");
        assert!(!body.contains("ada@example.com"), "{path}");
        let member = app
            .get_with(path, Some(("authorization", "Bearer member")))
            .await;
        assert_eq!(member.status(), 403, "{path}");
        assert!(
            !member
                .text()
                .await
                .expect("body")
                .contains("ada@example.com")
        );
        let ended = app.get_with(path, Some(("cookie", "session=ended"))).await;
        assert_eq!(ended.status(), 401, "{path}");
        let admin = app.get_with(path, Some(("cookie", "session=admin"))).await;
        assert_eq!(
            admin.status(),
            200,
            "{path}: the session cookie is forwarded"
        );
        assert!(
            admin
                .text()
                .await
                .expect("body")
                .contains("ada@example.com")
        );
    }
}

#[tokio::test]
async fn an_empty_or_missing_mail_dir_is_an_empty_mailbox() {
    let dir = TempDir::new();
    let app = start(Some(dir.0.join("not-yet"))).await;
    let body = app.get("/dev/mailbox").await.text().await.expect("body");
    assert!(body.contains("No mail yet."));
}

#[tokio::test]
async fn a_bad_broker_url_is_refused() {
    for url in ["ftp://x", "http://a/path", "http://a\"b"] {
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker_url: url.to_owned(),
            broker_api_url: None,
            mail_dir: None,
        };
        assert!(FrontendService::build(&config).await.is_err(), "{url}");
    }
}
