//! The all-in-one on a disk that fills up: its data directory is a small tmpfs of its
//! own (mounting one needs root, which the test machines and CI have). While the disk is
//! full, requests that must write answer 503 with the JSON error body — never a 500 —
//! and nothing is half-written; once space returns, the same requests succeed and their
//! events are delivered.

mod common;

use common::{SmallDisk, TestApp, eventually, expect_error, read_only_sqlite};
use reqwest::StatusCode;

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_and_the_service_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let app = TestApp::start_in(disk.dir.join("data"), &[]).await;
    let client = app.client();
    let before = app.register(&client, "roomy", PASSWORD).await;
    assert_eq!(before.status(), StatusCode::CREATED);

    let filler = disk.fill();
    let mut refused = None;
    for n in 0..50 {
        let answer = app
            .register(&client, &format!("crowded{n}"), PASSWORD)
            .await;
        match answer.status() {
            StatusCode::CREATED => continue, // free pages inside the database, for now
            StatusCode::SERVICE_UNAVAILABLE => {
                expect_error(answer, StatusCode::SERVICE_UNAVAILABLE).await;
                refused = Some(format!("crowded{n}"));
                break;
            }
            status => panic!("a full disk must answer 503, not {status}"),
        }
    }
    let refused = refused.expect("a registration is refused once the disk is full");

    std::fs::remove_file(&filler).expect("the filler is removed");
    let users = read_only_sqlite(&app.data_dir.join("auth.db"));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = $1")
        .bind(&refused)
        .fetch_one(&users)
        .await
        .expect("auth's database is readable");
    assert_eq!(stored, 0, "the refused registration left nothing behind");
    users.close().await;

    eventually("registration works again once space returns", || async {
        app.register(&client, &refused, PASSWORD).await.status() == StatusCode::CREATED
    })
    .await;
    eventually(
        "the welcome mails of both sides of the outage are written",
        || async {
            let mails = app.mail_files();
            ["roomy@example.com", &format!("{refused}@example.com")]
                .iter()
                .all(|to| mails.iter().filter(|mail| mail.contains(to)).count() == 1)
        },
    )
    .await;
    app.stop().await;
    drop(disk);
}
