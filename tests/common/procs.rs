//! Services as separate processes (the binaries cargo built next to this package's),
//! for tests that run a cluster or kill a service: each process logs to a file, can be
//! killed with SIGKILL and started again with the same settings and data directory.

use platform::testing::in_ci;
use reqwest::StatusCode;
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// Where cargo put the service binaries: next to the all-in-one of this package. `None`
/// (skip, saying so) when one of `names` is not built; in CI that fails instead.
pub fn binaries(names: &[&str]) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_microchat"))
        .parent()?
        .to_owned();
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let why = format!(
        "the binaries {missing:?} are not built in {} (cargo build --workspace --bins)",
        dir.display()
    );
    assert!(!in_ci(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// A free loopback port (free now: the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One service process, killed when dropped. `name` is the binary's name, optionally
/// with a `-suffix` for one of several instances (`broker-1`); its log (every run of
/// it, appended) is `<dir>/<name>.log`, its data directory `<dir>/<name>`.
pub struct Process {
    pub name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `name` from the binaries in `bin` with only `env` (and PATH) set, plus
    /// `RUST_LOG=info`, `LOGGER_URL=off` and its data directory unless `env` says otherwise.
    pub fn spawn(bin: &Path, name: &str, dir: &Path, env: &[(&str, String)]) -> Self {
        let service = name.split('-').next().expect("a service name");
        let binary = bin.join(service);
        let mut settings = vec![
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("LOGGER_URL".to_owned(), "off".to_owned()),
            (
                "MICROCHAT_DATA_DIR".to_owned(),
                dir.join(name).display().to_string(),
            ),
        ];
        // The all-in-one makes its own set in its data directory; a service alone gets
        // its own key and every public one, as in the cluster.
        if service != "microchat" {
            settings.push((
                "MICROCHAT_SERVICE_KEYS".to_owned(),
                keys_of(service, name, dir).display().to_string(),
            ));
        }
        settings.extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        let mut process = Self {
            name: name.to_owned(),
            binary,
            env: settings,
            child: None,
            log: dir.join(format!("{name}.log")),
        };
        process.start();
        process
    }

    /// Starts the process again (after [`Process::kill`]) with the same settings.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the test directory is writable");
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // Later settings of the same name win, as in a shell.
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file can be shared"))
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary.display()));
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or an OOM kill would end it: no shutdown of any kind.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Whether it is still running (it may have exited on its own).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The end of its log, for a failure message.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!("--- {} ---\n{}", self.name, lines[from..].join("\n"))
    }
}

/// Waits until `GET url` answers 200, at most `within`; false when it never did.
pub async fn answers_ok(url: &str, within: Duration) -> bool {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let answer = client.get(url).timeout(Duration::from_secs(2)).send().await;
        if answer.is_ok_and(|answer| answer.status() == StatusCode::OK) {
            return true;
        }
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until something accepts connections on `port`, at most `within`.
pub async fn listening(port: u16, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The key directory of process `name` running `service`, as a cluster gives it: the
/// service's own private key and every service's public key, from the one set of the
/// installation in `dir` (made by the first process).
fn keys_of(service: &str, name: &str, dir: &Path) -> std::path::PathBuf {
    let set = dir.join("service-keys");
    platform::service_auth::ServiceKeys::generate_missing(&set)
        .expect("the installation's service keys are generated");
    let own = dir.join(name).join("service-keys");
    std::fs::create_dir_all(&own).expect("the process's key directory is created");
    for entry in std::fs::read_dir(&set).expect("the key set is readable") {
        let path = entry.expect("a key file").path();
        let file = path.file_name().expect("a file name").to_string_lossy();
        if file.ends_with(".pub") || file == format!("{service}.key") {
            std::fs::copy(&path, own.join(&*file)).expect("a key is copied");
        }
    }
    own
}
