//! Test harness: starts the embedded all-in-one on port 0 with its own data directory
//! (and, for PostgreSQL runs, its own database) and talks to it over HTTP like a client.
#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod auth_gate;
pub mod grpc_probe;
pub mod links;
pub mod procs;
pub mod rabbit;
pub mod ws;

use clap::Parser;
use platform::{service_auth::Service, shutdown::Shutdown, testing::TestPostgres};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Which database auth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct SmallDisk {
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl SmallDisk {
    /// `None` (skipped, saying so) when this process may not mount; in CI that fails.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = temp_dir();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            let why = "cannot mount a tmpfs (needs root and mount(8))";
            assert!(!platform::testing::in_ci(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Some(Self { dir })
    }

    /// Fills the disk with a file of its own; returns the file.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("the filler file is created");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // What is left is smaller than a chunk: fill that too.
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        "--mail-listen=127.0.0.1:0".to_owned(),
        "--listener-listen=127.0.0.1:0".to_owned(),
        "--listener-admin-listen=127.0.0.1:0".to_owned(),
        "--logger-listen=127.0.0.1:0".to_owned(),
        "--frontend-listen=127.0.0.1:0".to_owned(),
        "--metrics-listen=127.0.0.1:0".to_owned(),
        "--broker-rate-limit-auth=off".to_owned(),
        "--broker-rate-limit-api=off".to_owned(),
        // Tests share the machine with other tests and builds: deferred work at a lower
        // priority than all of them could miss a test's deadlines.
        "--deferred-nice=0".to_owned(),
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
        Some(Self::start_with(config, data_dir, postgres).await)
    }

    /// Starts the all-in-one on SQLite in `data_dir`, which a stopped one left (see
    /// [`Self::stop_keeping_data`]): a restart.
    pub async fn start_in(data_dir: PathBuf, extra: &[&str]) -> Self {
        let config = config(&data_dir, None, extra);
        Self::start_with(config, data_dir, Vec::new()).await
    }

    async fn start_with(
        config: microchat::Config,
        data_dir: PathBuf,
        postgres: Vec<TestPostgres>,
    ) -> Self {
        platform::telemetry::init_tracing_for_tests();
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
        app
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

    /// A URL of the listener's health and metrics port.
    pub fn listener_url(&self, path: &str) -> String {
        let running = self.running.as_ref().expect("the app is running");
        format!("http://{}{path}", running.listener)
    }

    /// A URL of the listener's admin API (parked events).
    pub fn listener_admin_url(&self, path: &str) -> String {
        let running = self.running.as_ref().expect("the app is running");
        format!("http://{}{path}", running.listener_admin)
    }

    /// A URL of the operator port (`/metrics`, `/healthz`).
    pub fn metrics_url(&self, path: &str) -> String {
        let running = self.running.as_ref().expect("the app is running");
        format!("http://{}{path}", running.metrics)
    }

    /// A URL of the web pages (the frontend).
    pub fn pages_url(&self, path: &str) -> String {
        let running = self.running.as_ref().expect("the app is running");
        format!("http://{}{path}", running.frontend)
    }

    /// The chat service's gRPC URL.
    pub fn chat_url(&self) -> String {
        self.grpc_url(Service::Chat)
    }

    /// The gRPC URL of `service` (auth, chat, logger or mail).
    pub fn grpc_url(&self, service: Service) -> String {
        let running = self.running.as_ref().expect("the app is running");
        let addr = match service {
            Service::Auth => running.auth,
            Service::Chat => running.chat,
            Service::Logger => running.logger,
            Service::Mail => running.mail,
            Service::Broker | Service::Listener => panic!("{service} serves no gRPC"),
        };
        format!("http://{addr}")
    }

    /// The app's service keys (generated into its data directory at start).
    pub fn service_keys(&self) -> platform::service_auth::ServiceKeys {
        platform::service_auth::ServiceKeys::load(
            &self.data_dir.join(microchat::SERVICE_KEYS_DIR),
            &[],
        )
        .expect("the all-in-one generated its service keys")
    }

    /// A channel to chat whose calls are signed as the broker's, as the broker makes them.
    pub fn chat_as_broker(&self) -> platform::grpc::TracedChannel {
        platform::testing::channel_as(
            &self.service_keys(),
            Service::Broker,
            Service::Chat,
            &self.chat_url(),
        )
    }

    /// Mail files the embedded mail service wrote, as text, oldest first.
    pub fn mail_files(&self) -> Vec<String> {
        mail_files(&self.data_dir.join("mail"))
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

    pub async fn stop(self) {
        let _ = std::fs::remove_dir_all(self.stop_keeping_data().await);
    }

    /// Stops every service like [`Self::stop`] but keeps the data directory, which the
    /// caller then owns (and removes).
    pub async fn stop_keeping_data(mut self) -> PathBuf {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("every service stops cleanly");
        }
        std::mem::take(&mut self.data_dir)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.data_dir.as_os_str().is_empty() {
            return; // kept: see `stop_keeping_data`
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A pool reading the SQLite file at `path` without writing to it (a service's database,
/// to check what it holds); it connects on first use.
pub fn read_only_sqlite(path: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true),
        )
}

/// The `.eml` files in `dir`, as text, in name order.
pub fn mail_files(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect()
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

/// A signed-up, logged-in user talking to a broker by bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub base: String,
    pub client: Client,
    pub token: String,
    pub id: String,
    pub username: String,
}

impl User {
    /// Registers `username` at the broker at `base` and logs in.
    pub async fn sign_up(base: &str, username: &str) -> Self {
        let registered = Client::new()
            .post(format!("{base}/api/auth/register"))
            .json(&json!({ "username": username, "email": format!("{username}@example.com"), "password": "correct horse battery" }))
            .send()
            .await
            .expect("the broker answers");
        assert_eq!(
            registered.status(),
            StatusCode::CREATED,
            "register {username}"
        );
        Self::sign_in(base, username).await
    }

    /// Logs `username` in at the broker at `base`: a new session.
    pub async fn sign_in(base: &str, username: &str) -> Self {
        let client = Client::new();
        let logged_in = client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({ "login": username, "password": "correct horse battery" }))
            .send()
            .await
            .expect("the broker answers");
        assert_eq!(logged_in.status(), StatusCode::OK, "login {username}");
        let login: Value = logged_in.json().await.expect("login answers JSON");
        Self {
            base: base.to_owned(),
            client,
            token: login["token"].as_str().expect("a token").to_owned(),
            id: login["user"]["id"].as_str().expect("a user id").to_owned(),
            username: login["user"]["username"]
                .as_str()
                .expect("a username")
                .to_owned(),
        }
    }

    /// `GET path` as this user.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the broker answers")
    }

    /// `POST path` with a JSON body as this user.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("the broker answers")
    }

    /// `DELETE path` as this user.
    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the broker answers")
    }

    /// Deletes this user's account, confirming with the password (as signed up).
    pub async fn delete_account(&self) -> Response {
        self.delete_account_with(&json!({ "password": "correct horse battery" }))
            .await
    }

    /// `DELETE /api/users/me` with `body`.
    pub async fn delete_account_with(&self, body: &Value) -> Response {
        self.client
            .delete(format!("{}/api/users/me", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("the broker answers")
    }

    /// `PUT path` with a JSON body as this user.
    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("the broker answers")
    }

    /// `GET path`, expecting 200 and JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// `POST path`, expecting `status` and JSON.
    pub async fn post_expecting(&self, path: &str, body: &Value, status: StatusCode) -> Value {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), status, "POST {path} {body}");
        response.json().await.expect("JSON")
    }

    /// Opens (or finds) the direct conversation with `other`; returns its id.
    pub async fn open_direct(&self, other: &User) -> String {
        let conversation = self
            .post_expecting(
                "/api/conversations",
                &json!({ "user_id": other.id }),
                StatusCode::OK,
            )
            .await;
        conversation["id"].as_str().expect("an id").to_owned()
    }

    /// Sends a message; returns it.
    pub async fn send(&self, conversation: &str, body: &str) -> Value {
        self.post_expecting(
            &format!("/api/conversations/{conversation}/messages"),
            &json!({ "body": body }),
            StatusCode::CREATED,
        )
        .await
    }

    /// Ids of the caller's conversations.
    pub async fn conversation_ids(&self) -> Vec<String> {
        let listed = self.get_ok("/api/conversations").await;
        listed["conversations"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| c["id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

impl TestApp {
    /// Signs up `username` and returns them as a [`User`].
    pub async fn user(&self, username: &str) -> User {
        User::sign_up(&self.base, username).await
    }

    /// The database URLs of auth and chat, for looking behind the API.
    #[expect(
        clippy::used_underscore_binding,
        reason = "`_postgres` is held to keep the servers alive; this is the one read of it"
    )]
    pub fn database_urls(&self) -> DatabaseUrls {
        match self._postgres.as_slice() {
            [auth, chat] => DatabaseUrls {
                auth: auth.url.clone(),
                chat: chat.url.clone(),
            },
            _ => embedded_database_urls(&self.data_dir),
        }
    }
}

/// Serves this process's metrics on a port of its own until the returned token is
/// cancelled (for tests that start the services one by one: the all-in-one has its own).
pub async fn metrics_server() -> (String, Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let stop = Shutdown::new();
    tokio::spawn(platform::telemetry::serve_metrics(listener, stop.clone()));
    (url, stop)
}

/// Polls `check` until it holds; panics with `what` after ten seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A user's JSON WebSocket (`/ws`).
pub type UserSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl User {
    /// Opens the JSON WebSocket with the bearer token.
    pub async fn open_socket(&self) -> UserSocket {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::header};
        let url = format!("{}/ws", self.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("a WebSocket URL");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {}", self.token)
                .parse()
                .expect("a token is header-safe"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the socket opens");
        socket
    }

    /// Usernames of everyone online now.
    pub async fn online_usernames(&self) -> Vec<String> {
        let online = self.get_ok("/api/users?online=true").await;
        online["users"]
            .as_array()
            .expect("a list of users")
            .iter()
            .map(|user| user["username"].as_str().expect("a username").to_owned())
            .collect()
    }
}

/// Where auth and chat keep their data.
#[derive(Debug, Clone)]
pub struct DatabaseUrls {
    pub auth: String,
    pub chat: String,
}

/// The SQLite URLs auth and chat use in `data_dir`.
pub fn embedded_database_urls(data_dir: &std::path::Path) -> DatabaseUrls {
    let config = config(data_dir, None, &[]);
    DatabaseUrls {
        auth: config.auth.database_url(data_dir),
        chat: config.chat.database_url(data_dir),
    }
}

/// Every service started one by one on the embedded event bus, so chat can be stopped
/// and started again.
pub struct Services {
    pub dir: PathBuf,
    pub config: microchat::Config,
    /// Every service's keys (the all-in-one's set).
    pub keys: platform::service_auth::ServiceKeys,
    /// The broker's HTTP address.
    pub base: String,
    bus: platform::events::EmbeddedBus,
    auth: (Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>),
    chat: Option<(Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    broker: (Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>),
    logger: Option<(Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    _log_shipping: platform::logship::LogShipping,
    /// Mail and the listener.
    others: (Shutdown, Vec<tokio::task::JoinHandle<anyhow::Result<()>>>),
    /// Between the broker and auth, when started with one.
    auth_gate: Option<auth_gate::AuthGate>,
}

impl Services {
    /// Starts every service, each with its own shutdown.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, false).await
    }

    /// Starts every service, the broker reaching auth through an [`auth_gate::AuthGate`].
    pub async fn start_behind_auth_gate(extra: &[&str]) -> Self {
        Self::start_with(extra, true).await
    }

    async fn start_with(extra: &[&str], gated: bool) -> Self {
        let dir = temp_dir();
        let mut config = config(&dir, None, extra);
        platform::telemetry::init_tracing_for_tests();
        let (bus, source) = microchat::open_embedded_events(&dir, &config.listener)
            .await
            .expect("the embedded bus opens");
        let others = Shutdown::new();
        let keys = microchat::open_service_keys(&config.service_keys_dir())
            .expect("the service keys are generated");
        let logger = logger::LoggerService::build(&config.logger, &dir, &keys)
            .await
            .expect("the logger starts");
        config.logger.listen = logger.local_addr();
        let logger_url = format!("http://{}", logger.local_addr());
        let log_shipping = platform::logship::ship_to(
            &logger_url,
            keys.identity(Service::Logger)
                .expect("every key is here")
                .calling(Service::Logger),
        );
        let logger_stop = Shutdown::new();
        let logger_task = tokio::spawn(logger.run(logger_stop.clone()));
        config.listener.logger_url.clone_from(&logger_url);
        config.broker.logger_url = logger_url;
        let mail = mail::MailService::build(&config.mail, &dir, &keys)
            .await
            .expect("mail starts");
        config.listener.mail_url = format!("http://{}", mail.local_addr());
        config.broker.mail_url = format!("http://{}", mail.local_addr());
        let chat = chat::ChatService::build(&config.chat, &dir, &keys)
            .await
            .expect("chat starts");
        config.chat.listen = chat.local_addr();
        config.broker.chat_url = format!("http://{}", chat.local_addr());
        config.listener.chat_url = config.broker.chat_url.clone();
        let auth = auth::AuthService::build(&config.auth, &dir, &keys)
            .await
            .expect("auth starts");
        config.listener.auth_url = format!("http://{}", auth.local_addr());
        let source = std::sync::Arc::new(source);
        let listener = listener::ListenerService::build(
            &config.listener,
            &dir,
            source,
            &keys,
            // Over the network, as split: these tests stop and restart single services.
            &platform::grpc::Dialer::network(),
        )
        .await
        .expect("the listener starts");
        let others_tasks = vec![
            tokio::spawn(mail.run(others.clone())),
            tokio::spawn(listener.run(others.clone())),
        ];
        let auth = auth.publish_events_to(std::sync::Arc::new(bus.clone()));
        let auth_gate = if gated {
            Some(auth_gate::AuthGate::start(auth.local_addr(), &keys))
        } else {
            None
        };
        config.broker.auth_url = auth_gate.as_ref().map_or_else(
            || format!("http://{}", auth.local_addr()),
            |gate| gate.url.clone(),
        );
        let auth_stop = Shutdown::new();
        let auth_task = tokio::spawn(auth.run(auth_stop.clone()));
        let chat_stop = Shutdown::new();
        let chat_task = tokio::spawn(
            chat.publish_events_to(std::sync::Arc::new(bus.clone()))
                .run(chat_stop.clone()),
        );
        let broker = broker::BrokerService::build(
            config.broker.clone(),
            &keys,
            &platform::grpc::Dialer::network(),
        )
        .await
        .expect("the broker starts");
        let base = format!("http://{}", broker.local_addr());
        let broker_stop = Shutdown::new();
        let broker_task = tokio::spawn(broker.run(broker_stop.clone()));
        Self {
            dir,
            config,
            keys,
            base,
            bus,
            auth: (auth_stop, auth_task),
            chat: Some((chat_stop, chat_task)),
            broker: (broker_stop, broker_task),
            logger: Some((logger_stop, logger_task)),
            _log_shipping: log_shipping,
            others: (others, others_tasks),
            auth_gate,
        }
    }

    /// The gate between the broker and auth.
    pub fn auth_gate(&self) -> &auth_gate::AuthGate {
        self.auth_gate
            .as_ref()
            .expect("started with start_behind_auth_gate")
    }

    /// Stops chat and waits for it.
    pub async fn stop_chat(&mut self) {
        let (stop, task) = self.chat.take().expect("chat is running");
        stop.cancel();
        task.await
            .expect("chat does not panic")
            .expect("chat stops cleanly");
    }

    /// Starts chat again on the same address and data directory.
    pub async fn start_chat(&mut self) {
        let chat = chat::ChatService::build(&self.config.chat, &self.dir, &self.keys)
            .await
            .expect("chat starts again on its address")
            .publish_events_to(std::sync::Arc::new(self.bus.clone()));
        let stop = Shutdown::new();
        let task = tokio::spawn(chat.run(stop.clone()));
        self.chat = Some((stop, task));
    }

    /// Stops the logger and waits for it.
    pub async fn stop_logger(&mut self) {
        let (stop, task) = self.logger.take().expect("the logger is running");
        stop.cancel();
        task.await
            .expect("the logger does not panic")
            .expect("the logger stops cleanly");
    }

    /// Starts the logger again on the same address and data directory.
    pub async fn start_logger(&mut self) {
        let logger = logger::LoggerService::build(&self.config.logger, &self.dir, &self.keys)
            .await
            .expect("the logger starts again on its address");
        let stop = Shutdown::new();
        let task = tokio::spawn(logger.run(stop.clone()));
        self.logger = Some((stop, task));
    }

    /// Stops everything and removes the data directory.
    pub async fn stop(mut self) {
        self.broker.0.cancel();
        (&mut self.broker.1)
            .await
            .expect("the broker does not panic")
            .expect("the broker stops cleanly");
        if self.chat.is_some() {
            self.stop_chat().await;
        }
        self.auth.0.cancel();
        (&mut self.auth.1)
            .await
            .expect("auth does not panic")
            .expect("auth stops cleanly");
        if self.logger.is_some() {
            self.stop_logger().await;
        }
        self.others.0.cancel();
        for task in self.others.1.drain(..) {
            task.await
                .expect("mail and the listener do not panic")
                .expect("mail and the listener stop cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
