//! Test harness: starts the embedded all-in-one on port 0 with its own data directory
//! (and, for PostgreSQL runs, its own database) and talks to it over HTTP like a client.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use clap::Parser;
use platform::{shutdown::Shutdown, testing::TestPostgres};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Which database auth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running all-in-one and a way to talk to it.
pub struct TestApp {
    pub base: String,
    pub data_dir: PathBuf,
    running: Option<microchat::Running>,
    /// One database per service, as in the dev stack: each owns its schema and migrations.
    _postgres: Vec<TestPostgres>,
}

/// A fresh data directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("microchat-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}

/// Database URLs of auth and chat, when not the embedded SQLite files.
pub struct Databases<'a> {
    pub auth: &'a str,
    pub chat: &'a str,
}

/// Settings for a test run: every port 0, no rate limits unless given.
pub fn config(
    data_dir: &std::path::Path,
    databases: Option<Databases<'_>>,
    extra: &[&str],
) -> microchat::Config {
    let mut args = vec![
        "microchat".to_owned(),
        format!("--data-dir={}", data_dir.display()),
        "--auth-listen=127.0.0.1:0".to_owned(),
        "--chat-listen=127.0.0.1:0".to_owned(),
        "--broker-listen=127.0.0.1:0".to_owned(),
        "--broker-rate-limit-auth=off".to_owned(),
        "--broker-rate-limit-api=off".to_owned(),
    ];
    if let Some(databases) = databases {
        args.push(format!("--auth-database-url={}", databases.auth));
        args.push(format!("--chat-database-url={}", databases.chat));
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    microchat::Config::parse_from(args)
}

impl TestApp {
    /// Starts the all-in-one on SQLite. `extra` are more command-line settings.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_on(Db::Sqlite, extra)
            .await
            .expect("SQLite is always available")
    }

    /// Starts the all-in-one on the given database; `None` when PostgreSQL is not
    /// reachable outside CI (the test is then skipped, as it says).
    pub async fn start_on(db: Db, extra: &[&str]) -> Option<Self> {
        let postgres = match db {
            Db::Sqlite => Vec::new(),
            Db::Postgres => vec![TestPostgres::create().await?, TestPostgres::create().await?],
        };
        let data_dir = temp_dir();
        let databases = (postgres.len() == 2).then(|| Databases {
            auth: &postgres[0].url,
            chat: &postgres[1].url,
        });
        let config = config(&data_dir, databases, extra);
        let running = microchat::start(config, Shutdown::new())
            .await
            .expect("the all-in-one starts");
        let base = format!("http://{}", running.broker);
        let app = Self {
            base,
            data_dir,
            running: Some(running),
            _postgres: postgres,
        };
        app.wait_ready().await;
        Some(app)
    }

    async fn wait_ready(&self) {
        let client = Client::new();
        for _ in 0..100 {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the all-in-one did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client without cookies.
    pub fn client(&self) -> Client {
        Client::new()
    }

    /// A client that keeps cookies, like a browser.
    pub fn browser(&self) -> Client {
        Client::builder()
            .cookie_store(true)
            .build()
            .expect("a reqwest client builds")
    }

    pub async fn register(&self, client: &Client, username: &str, password: &str) -> Response {
        client
            .post(self.url("/api/auth/register"))
            .json(&json!({ "username": username, "email": format!("{username}@example.com"), "password": password }))
            .send()
            .await
            .expect("the broker answers")
    }

    pub async fn login(&self, client: &Client, login: &str, password: &str) -> Response {
        client
            .post(self.url("/api/auth/login"))
            .json(&json!({ "login": login, "password": password }))
            .send()
            .await
            .expect("the broker answers")
    }

    /// Registers and logs in a user; returns the login answer.
    pub async fn signed_up(&self, client: &Client, username: &str) -> Value {
        let registered = self
            .register(client, username, "correct horse battery")
            .await;
        assert_eq!(
            registered.status(),
            StatusCode::CREATED,
            "register {username}"
        );
        let logged_in = self.login(client, username, "correct horse battery").await;
        assert_eq!(logged_in.status(), StatusCode::OK, "login {username}");
        logged_in.json().await.expect("login answers JSON")
    }

    pub async fn me(&self, client: &Client, token: Option<&str>) -> Response {
        let mut request = client.get(self.url("/api/auth/me"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the broker answers")
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("every service stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Asserts the status and that the body is the API's JSON error; returns its code.
pub async fn expect_error(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("errors are JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code is a string")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message in {body}"
    );
    code
}
