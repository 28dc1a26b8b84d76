//! The mail service over gRPC, delivering to `.eml` files and to a real SMTP server
//! (npm maildev, installed by scripts/test-tools.sh).

use clap::Parser;
use platform::{grpc::TracedChannel, service_auth::Service, shutdown::Shutdown, testing::MailDev};
use proto::mail::v1::{SendMailRequest, mail_client::MailClient};
use std::{collections::HashMap, path::PathBuf, time::Duration};
use tonic::Code;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    mail: mail::Config,
}

struct Running {
    client: MailClient<TracedChannel>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(extra: &[String]) -> Running {
    let dir =
        std::env::temp_dir().join(format!("microchat-mail-{}", uuid::Uuid::new_v4().simple()));
    start_in(dir, extra).await
}

/// Starts mail with its data (sent-mail database, .eml files) in `dir`.
async fn start_in(dir: PathBuf, extra: &[String]) -> Running {
    let args = ["mail".to_owned(), "--mail-listen=127.0.0.1:0".to_owned()]
        .into_iter()
        .chain(extra.iter().cloned());
    let config = Cli::parse_from(args).mail;
    let keys = platform::testing::service_keys(&dir.join("service-keys"));
    let service = mail::MailService::build(&config, &dir, &keys)
        .await
        .expect("mail starts");
    let url = format!("http://{}", service.local_addr());
    let stop = Shutdown::new();
    let task = tokio::spawn(service.run(stop.clone()));
    let client = MailClient::new(platform::testing::channel_as(
        &keys,
        Service::Listener,
        Service::Mail,
        &url,
    ));
    Running {
        client,
        stop,
        task,
        dir,
    }
}

impl Running {
    /// Stops the service and waits for it; its data directory stays.
    async fn stop_keeping_data(mut self) -> PathBuf {
        self.stop.cancel();
        (&mut self.task)
            .await
            .expect("mail does not panic")
            .expect("mail stops cleanly");
        std::mem::take(&mut self.dir)
    }
}

fn welcome(to: &str, key: &str) -> SendMailRequest {
    SendMailRequest {
        to: to.to_owned(),
        template: "welcome".to_owned(),
        vars: HashMap::from([("username".to_owned(), "ada".to_owned())]),
        idempotency_key: key.to_owned(),
    }
}

fn eml_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn mail_is_written_as_an_eml_file_once_per_key() {
    let mut mail = start(&[]).await;
    let first = mail
        .client
        .send_mail(welcome("Ada <ada@example.com>", "event-1"))
        .await
        .expect("sent")
        .into_inner();
    assert!(first.sent);
    assert_eq!(first.message_id, "<event-1@microchat>");
    let again = mail
        .client
        .send_mail(welcome("Ada <ada@example.com>", "event-1"))
        .await
        .expect("answered")
        .into_inner();
    assert!(!again.sent, "the same key is not sent twice");
    assert_eq!(again.message_id, first.message_id);

    let files = eml_files(&mail.dir.join("mail"));
    assert_eq!(files.len(), 1, "one file");
    let eml = &files[0];
    assert!(
        eml.contains("To: \"Ada\" <ada@example.com>") || eml.contains("To: Ada <ada@example.com>"),
        "{eml}"
    );
    assert!(eml.contains("Subject: Welcome to microchat, ada"), "{eml}");
    assert!(eml.contains("Message-ID: <event-1@microchat>"), "{eml}");
    assert!(eml.contains("Content-Type: text/plain"), "{eml}");
    assert!(eml.contains("Content-Type: text/html"), "{eml}");
}

#[tokio::test]
async fn a_mail_file_written_again_after_its_record_was_lost_is_still_one_mail() {
    // mail killed between writing the file and recording its key: the retry after the
    // restart writes the same mail again, which must not make a second one.
    let mut mail = start(&[]).await;
    let first = mail
        .client
        .send_mail(welcome("ada@example.com", "event-unrecorded"))
        .await
        .expect("sent")
        .into_inner();
    assert!(first.sent);
    let dir = mail.stop_keeping_data().await;
    for file in ["mail.db", "mail.db-wal", "mail.db-shm"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let mut mail = start_in(dir, &[]).await;
    let again = mail
        .client
        .send_mail(welcome("ada@example.com", "event-unrecorded"))
        .await
        .expect("sent")
        .into_inner();
    assert!(again.sent, "the record is gone, so it is written again");
    assert_eq!(again.message_id, first.message_id);
    let names: Vec<String> = std::fs::read_dir(mail.dir.join("mail"))
        .expect("the mail directory exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(
        names,
        ["event-unrecorded.eml"],
        "one whole mail, no leftovers"
    );
}

#[tokio::test]
async fn a_key_sent_before_a_restart_is_not_sent_again() {
    // A caller (the listener) whose answer was lost in a crash of mail retries against
    // the new process: it gets the first send's Message-ID, not a second mail.
    let mut mail = start(&[]).await;
    let first = mail
        .client
        .send_mail(welcome("ada@example.com", "event-restart"))
        .await
        .expect("sent")
        .into_inner();
    assert!(first.sent);
    let dir = mail.stop_keeping_data().await;
    let mut again = start_in(dir, &[]).await;
    let retried = again
        .client
        .send_mail(welcome("ada@example.com", "event-restart"))
        .await
        .expect("answered")
        .into_inner();
    assert!(!retried.sent, "not sent again after the restart");
    assert_eq!(retried.message_id, first.message_id);
    assert_eq!(eml_files(&again.dir.join("mail")).len(), 1, "one file");
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_right_code() {
    let mut mail = start(&[]).await;
    let mut bad = welcome("not an address", "");
    assert_eq!(
        mail.client.send_mail(bad.clone()).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    bad.to = "ada@example.com".into();
    bad.template = "nope".into();
    assert_eq!(
        mail.client.send_mail(bad.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    bad.template = "welcome".into();
    bad.vars.clear();
    let missing = mail.client.send_mail(bad.clone()).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("username"),
        "{}",
        missing.message()
    );
    let mut long_key = welcome("ada@example.com", &"k".repeat(129));
    assert_eq!(
        mail.client
            .send_mail(long_key.clone())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    long_key.idempotency_key = "has spaces".into();
    assert_eq!(
        mail.client.send_mail(long_key).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(
        eml_files(&mail.dir.join("mail")).is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn mail_reaches_a_real_smtp_server_and_waits_out_its_absence() {
    // First with nothing listening on the port: the transport is unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut mail = start(&[
        format!("--mail-smtp-url=smtp://127.0.0.1:{port}"),
        "--mail-smtp-timeout=2s".to_owned(),
    ])
    .await;
    let down = mail
        .client
        .send_mail(welcome("grace@example.com", "event-2"))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");

    let Some(maildev) = MailDev::start_on(port).await.expect("maildev starts") else {
        return;
    };
    let sent = mail
        .client
        .send_mail(welcome("grace@example.com", "event-2"))
        .await
        .expect("sent once the server is there")
        .into_inner();
    assert!(sent.sent, "the failed attempt did not count as sent");
    assert!(
        !mail
            .client
            .send_mail(welcome("grace@example.com", "event-2"))
            .await
            .expect("answered")
            .into_inner()
            .sent
    );
    let emails = maildev
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("the mail arrives");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let emails = if emails.len() == 1 {
        emails
    } else {
        maildev.emails().await.expect("listed")
    };
    assert_eq!(emails.len(), 1, "sent once");
    let mail_json = &emails[0];
    assert_eq!(mail_json["to"][0]["address"], "grace@example.com");
    assert_eq!(mail_json["subject"], "Welcome to microchat, ada");
    assert!(
        mail_json["text"]
            .as_str()
            .is_some_and(|text| text.contains("Hi ada,"))
    );
    assert!(
        mail_json["html"]
            .as_str()
            .is_some_and(|html| html.contains("Welcome to microchat, ada</h1>"))
    );
}
