//! Test helpers (feature `testing`): a fresh PostgreSQL database per test, so tests run
//! in parallel against the machine's real server without seeing each other's rows.

use sqlx::{Connection, Executor, PgConnection};

/// Where the test server is: `TEST_DATABASE_URL`, else the machine's local PostgreSQL.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// True when running under CI, where a missing service is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// A database created for one test and dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestPostgres {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestPostgres {
    /// Creates a database with a unique name. `None` when no server answers outside CI
    /// (the caller skips, saying so); in CI that panics instead, loudly.
    pub async fn create() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(connection) => connection,
            Err(error) if !in_ci() => {
                eprintln!(
                    "SKIPPED: PostgreSQL at {admin_url} is not reachable ({error}); CI=true makes this fail"
                );
                return None;
            }
            Err(error) => panic!("PostgreSQL at {admin_url} must be reachable in CI: {error}"),
        };
        let name = format!("mc_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("the test server lets the test user create databases");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a PostgreSQL URL has a path naming the database");
        let url = format!("{base}/{name}");
        Some(Self {
            url,
            name,
            admin_url,
        })
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime that is shutting down: use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(std::io::Error::other)?;
                admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// An SMTP server for tests: npm `maildev` (installed into `.tools/` by
/// `scripts/test-tools.sh`), on free loopback ports, its mails readable as JSON. The
/// process is killed when this is dropped.
#[derive(Debug)]
pub struct MailDev {
    smtp_port: u16,
    web_port: u16,
    child: std::process::Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port is free")
        .port()
}

impl MailDev {
    /// Where `scripts/test-tools.sh` puts maildev.
    pub fn binary() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node_modules/.bin/maildev")
    }

    /// Starts maildev on free ports. `Ok(None)` when it is not installed outside CI (the
    /// caller skips, saying so); in CI that is an error.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        Self::start_on(free_port()).await
    }

    /// Starts maildev with its SMTP server on `smtp_port`.
    pub async fn start_on(smtp_port: u16) -> anyhow::Result<Option<Self>> {
        let binary = Self::binary();
        if !binary.exists() {
            anyhow::ensure!(
                !in_ci(),
                "maildev is not installed at {}: run scripts/test-tools.sh",
                binary.display()
            );
            eprintln!(
                "SKIPPED: maildev is not installed (run scripts/test-tools.sh); CI=true makes this fail"
            );
            return Ok(None);
        }
        let web_port = free_port();
        let child = std::process::Command::new(&binary)
            .args([
                "--smtp",
                &smtp_port.to_string(),
                "--web",
                &web_port.to_string(),
            ])
            .args(["--ip", "127.0.0.1", "--silent"])
            .env("MAILDEV_WEB_IP", "127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let maildev = Self {
            smtp_port,
            web_port,
            child,
        };
        let started = std::time::Instant::now();
        loop {
            let web_up = maildev.fetch().await.is_ok();
            let smtp_up = tokio::net::TcpStream::connect(("127.0.0.1", smtp_port))
                .await
                .is_ok();
            if web_up && smtp_up {
                return Ok(Some(maildev));
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "maildev did not start on SMTP port {smtp_port}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Its SMTP port.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    async fn fetch(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!("http://127.0.0.1:{}/api/email", self.web_port);
        Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
    }

    /// Every mail received so far (fields `to[].address`, `subject`, `text`, `html`, ...).
    pub async fn emails(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        self.fetch().await
    }

    /// Waits until at least `count` mails arrived; returns them.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let started = std::time::Instant::now();
        loop {
            let emails = self.fetch().await?;
            if emails.len() >= count {
                return Ok(emails);
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{} of {count} mails arrived in {timeout:?}",
                emails.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MailDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a test peer that `scripts/test-tools.sh` installs at `binary` with `start_on`
/// (on a free port; three tries, as the port may be taken before the peer binds it).
/// `Ok(None)` when it is not installed outside CI (the caller skips, saying so); in CI
/// that is an error.
async fn start_peer<T, F, Fut>(
    name: &str,
    binary: &std::path::Path,
    start_on: F,
) -> anyhow::Result<Option<T>>
where
    F: Fn(u16) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    if !binary.exists() {
        anyhow::ensure!(
            !in_ci(),
            "{name} is not installed at {}: run scripts/test-tools.sh",
            binary.display()
        );
        eprintln!(
            "SKIPPED: {name} is not installed (run scripts/test-tools.sh); CI=true makes this fail"
        );
        return Ok(None);
    }
    let mut last_error = None;
    for _ in 0..3 {
        match start_on(free_port()).await {
            Ok(server) => return Ok(Some(server)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
}

/// A MongoDB-wire-compatible server for tests: PyPI `SecantusDB` (installed into
/// `.tools/venv` by `scripts/test-tools.sh`; the official Rust driver speaks to it), on a
/// free loopback port, storing into a directory of its own. Like MongoDB, it removes
/// expired TTL-index entries once a minute. The process is killed and the directory
/// removed when this is dropped, so each test may start its own.
#[derive(Debug)]
pub struct MongoServer {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl MongoServer {
    /// Where `scripts/test-tools.sh` puts the server.
    pub fn binary() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/secantusd-py")
    }

    /// Starts a server on a free port. `Ok(None)` when it is not installed outside CI (the
    /// caller skips, saying so); in CI that is an error.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        let binary = Self::binary();
        start_peer("SecantusDB", &binary, |port| Self::start_on(&binary, port)).await
    }

    async fn start_on(binary: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("microchat-mongo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("secantusd.toml");
        // A small cache: several servers may run at once, one per test.
        std::fs::write(&config, "[storage]\ncache_size = \"64M\"\n")?;
        let child = std::process::Command::new(binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--standalone",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--storage-path")
            .arg(dir.join("data"))
            .args(["--log-level", "WARNING"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error.into());
            }
        };
        // Built before waiting, so an early return kills the process and removes its files.
        let mut server = Self { port, dir, child };
        let started = std::time::Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("SecantusDB exited at start on port {port}: {status}");
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "SecantusDB did not start on port {port}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:<port>/?directConnection=true`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An S3-compatible server for tests: PyPI `moto[server]` (installed into `.tools/venv`
/// by `scripts/test-tools.sh`), on a free loopback port, in memory, with one bucket
/// created. Moto accepts any credentials (and unsigned requests). The process is killed
/// when this is dropped, so each test may start its own.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    bucket: String,
    child: std::process::Child,
}

impl Moto {
    /// The credentials tests sign with: moto accepts any.
    pub const ACCESS_KEY_ID: &'static str = "microchat-test";
    /// See [`Moto::ACCESS_KEY_ID`].
    pub const SECRET_ACCESS_KEY: &'static str = "microchat-test-secret";

    /// Where `scripts/test-tools.sh` puts the server.
    pub fn binary() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/moto_server")
    }

    /// Starts a server on a free port and creates a bucket. `Ok(None)` when it is not
    /// installed outside CI (the caller skips, saying so); in CI that is an error.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        let binary = Self::binary();
        start_peer("moto", &binary, |port| Self::start_on(&binary, port)).await
    }

    async fn start_on(binary: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        let child = std::process::Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // Built before waiting, so an early return kills the process.
        let mut server = Self {
            port,
            bucket: format!("microchat-{}", uuid::Uuid::new_v4().simple()),
            child,
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        let started = std::time::Instant::now();
        loop {
            // Creating the bucket is also the readiness check (moto takes unsigned requests).
            let created = client
                .put(format!("{}/{}", server.endpoint(), server.bucket))
                .send()
                .await;
            match created {
                Ok(answer) if answer.status().is_success() => return Ok(server),
                Ok(answer) => anyhow::bail!(
                    "moto refused to create bucket {}: {}",
                    server.bucket,
                    answer.status()
                ),
                Err(_) => {}
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("moto exited at start on port {port}: {status}");
            }
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "moto did not start on port {port}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://<bucket>?endpoint=http://127.0.0.1:<port>&region=us-east-1&allow_http=true`.
    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint={}&region=us-east-1&allow_http=true",
            self.bucket,
            self.endpoint()
        )
    }

    /// How many multipart uploads of the bucket were started and neither completed nor
    /// aborted (their parts take space without being objects).
    pub async fn open_multipart_uploads(&self) -> anyhow::Result<usize> {
        let listing = reqwest::get(format!("{}/{}?uploads", self.endpoint(), self.bucket))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(listing.matches("<Upload>").count())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database for one test, on either backend, removed when dropped: a SQLite file in a
/// directory of its own, or a PostgreSQL database of its own.
#[derive(Debug)]
pub enum TestDatabase {
    /// A fresh SQLite file.
    Sqlite {
        /// `sqlite://<dir>/<name>.db`.
        url: String,
        /// Removed on drop.
        dir: std::path::PathBuf,
    },
    /// A fresh PostgreSQL database.
    Postgres(TestPostgres),
}

impl TestDatabase {
    /// A SQLite file `<name>.db` in a fresh temporary directory.
    pub fn sqlite(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "microchat-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Self::Sqlite { url, dir }
    }

    /// A fresh PostgreSQL database; `None` when no server answers outside CI (the caller
    /// skips, saying so), a panic in CI.
    pub async fn postgres() -> Option<Self> {
        TestPostgres::create().await.map(Self::Postgres)
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } => url,
            Self::Postgres(database) => &database.url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Sqlite { dir, .. } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One outbox row, read back as a consumer would see it.
#[derive(Debug)]
pub struct OutboxRow {
    /// The row's event id (checked to be its envelope's).
    pub event_id: uuid::Uuid,
    /// The row's routing key (checked to be its envelope's type).
    pub routing_key: String,
    /// The envelope's producer.
    pub producer: String,
    /// The envelope's payload.
    pub payload: proto::events::v1::envelope::Payload,
}

/// A producer's outbox, in commit order. Each row's id and routing key are checked
/// against the envelope it holds.
pub async fn outbox_rows(outbox: &crate::events::outbox::Outbox) -> Vec<OutboxRow> {
    let rows = outbox.rows().await.expect("the outbox is readable");
    rows.into_iter()
        .map(|(event_id, routing_key, bytes)| {
            let (id, envelope) =
                crate::events::envelope::decode(&bytes).expect("outbox rows are envelopes");
            assert_eq!(id, event_id, "the row's event id is its envelope's");
            assert_eq!(envelope.r#type, routing_key, "the routing key is the type");
            OutboxRow {
                event_id,
                routing_key,
                producer: envelope.producer,
                payload: envelope.payload.expect("decode checked the payload"),
            }
        })
        .collect()
}

/// A full set of service keys, generated into `dir` (kept if already there), loaded with
/// every private key: a test plays any service.
pub fn service_keys(dir: &std::path::Path) -> crate::service_auth::ServiceKeys {
    crate::service_auth::ServiceKeys::open_full_set(dir)
        .expect("test service keys are generated and load")
}

/// A channel to the `callee` at `url` whose calls are signed as `caller`.
pub fn channel_as(
    keys: &crate::service_auth::ServiceKeys,
    caller: crate::service_auth::Service,
    callee: crate::service_auth::Service,
    url: &str,
) -> crate::grpc::TracedChannel {
    let identity = keys
        .identity(caller)
        .expect("the test keys hold every service");
    crate::grpc::channel(
        url,
        crate::grpc::Deadlines::default(),
        identity.calling(callee),
    )
    .expect("a test gRPC URL is valid")
}
