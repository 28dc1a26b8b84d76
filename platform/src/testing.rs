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
