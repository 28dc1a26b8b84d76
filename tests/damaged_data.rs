//! The all-in-one refuses to start on a damaged database file — a clear error naming the
//! file — and leaves the file as it found it, for its owner to restore or inspect.

mod common;

use platform::shutdown::Shutdown;

/// Every SQLite database of the all-in-one's data directory.
const DATABASES: &[&str] = &[
    "auth.db",
    "chat.db",
    "logs.db",
    "mail.db",
    "listener.db",
    microchat::EVENTS_DATABASE,
];

#[tokio::test]
async fn a_damaged_database_stops_the_start_with_its_name_and_is_left_untouched() {
    platform::telemetry::init_tracing_for_tests();
    let damaged =
        b"SQLite format 3\0 but the rest of this file is not a database at all".repeat(64);
    for file in DATABASES {
        let dir = common::temp_dir();
        let path = dir.join(file);
        std::fs::write(&path, &damaged).expect("the data directory is writable");
        let config = common::config(&dir, None, &[]);
        let error = match microchat::start(config, Shutdown::new()).await {
            Ok(running) => {
                let _ = running.stop().await;
                panic!("the all-in-one started on a damaged {file}");
            }
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains(&path.display().to_string()),
            "the error names {file}: {error}"
        );
        assert_eq!(
            std::fs::read(&path).expect("the file is still there"),
            damaged,
            "{file} is left as it was"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
