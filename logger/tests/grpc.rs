//! The logger over gRPC, as its clients use it: services streaming batches with
//! `WriteLogs`, the broker's admin endpoint paging through `QueryLogs`. Each test starts
//! the service on port 0 with a data directory of its own (SQLite), and one runs it on
//! MongoDB (a SecantusDB server, skipped when scripts/test-tools.sh has not installed it).

use clap::Parser;
use platform::{
    grpc::TracedChannel, service_auth::Service, shutdown::Shutdown, testing::MongoServer,
};
use proto::logger::v1::{
    Level, LogEntry, QueryLogsRequest, QueryLogsResponse, WriteLogsRequest,
    logger_client::LoggerClient,
};
use std::{path::PathBuf, time::Duration};
use tonic::{Code, transport::Channel};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    logger: logger::Config,
}

struct Running {
    client: LoggerClient<TracedChannel>,
    url: String,
    stop: Shutdown,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(extra: &[String]) -> Running {
    let dir = std::env::temp_dir().join(format!(
        "microchat-logger-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let args = [
        "logger".to_owned(),
        "--logger-listen=127.0.0.1:0".to_owned(),
    ]
    .into_iter()
    .chain(extra.iter().cloned());
    let config = Cli::parse_from(args).logger;
    let keys = platform::testing::service_keys(&dir.join("service-keys"));
    let service = logger::LoggerService::build(&config, &dir, &keys)
        .await
        .expect("logger starts");
    let url = format!("http://{}", service.local_addr());
    let stop = Shutdown::new();
    tokio::spawn(service.run(stop.clone()));
    // The broker both writes (its own lines, `/handle` log) and reads (admins' queries).
    let client = LoggerClient::new(platform::testing::channel_as(
        &keys,
        Service::Broker,
        Service::Logger,
        &url,
    ));
    Running {
        client,
        url,
        stop,
        dir,
    }
}

const ADA: &str = "0190b6b4-3f6e-7a3c-9c39-2f1ab0c2d3e4";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn entry(name: &str, level: Level, service: &str) -> LogEntry {
    LogEntry {
        name: name.to_owned(),
        data: r#"{"k":1}"#.to_owned(),
        level: level as i32,
        service: service.to_owned(),
        ..LogEntry::default()
    }
}

fn ago(seconds: i64) -> prost_types::Timestamp {
    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(seconds);
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).expect("nanoseconds below 2^31"),
    }
}

async fn write(
    client: &mut LoggerClient<TracedChannel>,
    batches: Vec<Vec<LogEntry>>,
) -> Result<u64, tonic::Status> {
    let requests = batches
        .into_iter()
        .map(|entries| WriteLogsRequest { entries });
    let response = client.write_logs(tokio_stream::iter(requests)).await?;
    Ok(response.into_inner().written)
}

async fn query(
    client: &mut LoggerClient<TracedChannel>,
    request: QueryLogsRequest,
) -> QueryLogsResponse {
    client
        .query_logs(request)
        .await
        .expect("query answers")
        .into_inner()
}

fn names(response: &QueryLogsResponse) -> Vec<&str> {
    response
        .entries
        .iter()
        .map(|entry| entry.name.as_str())
        .collect()
}

/// Three entries a few seconds apart: `login` (auth, info, Ada's, traced), `boom`
/// (chat, error), `sent` (mail, debug), oldest first.
fn three_entries() -> Vec<LogEntry> {
    vec![
        LogEntry {
            user_id: ADA.to_owned(),
            trace_id: TRACE.to_owned(),
            created_at: Some(ago(30)),
            ..entry("login", Level::Info, "auth")
        },
        LogEntry {
            created_at: Some(ago(20)),
            ..entry("boom", Level::Error, "chat")
        },
        LogEntry {
            created_at: Some(ago(10)),
            ..entry("sent", Level::Debug, "mail")
        },
    ]
}

#[tokio::test]
async fn two_batches_on_one_stream_are_all_stored_and_read_back_newest_first() {
    let mut logger = start(&[]).await;
    let mut entries = three_entries();
    let third = entries.pop().expect("three");
    let written = write(&mut logger.client, vec![entries, vec![third]])
        .await
        .expect("written");
    assert_eq!(written, 3);

    let page = query(&mut logger.client, QueryLogsRequest::default()).await;
    assert_eq!(names(&page), ["sent", "boom", "login"]);
    assert_eq!(page.next_cursor, "");
    let login = &page.entries[2];
    assert_eq!(
        uuid::Uuid::parse_str(&login.id).map(|id| id.get_version_num()),
        Ok(7)
    );
    assert_eq!(
        (login.data.as_str(), login.level, login.service.as_str()),
        (r#"{"k":1}"#, Level::Info as i32, "auth")
    );
    assert_eq!(
        (login.user_id.as_str(), login.trace_id.as_str()),
        (ADA, TRACE)
    );
    assert!(login.created_at.is_some());
}

#[tokio::test]
async fn the_logger_assigns_ids_and_times_when_missing() {
    let mut logger = start(&[]).await;
    let before = chrono::Utc::now().timestamp() - 1;
    write(
        &mut logger.client,
        vec![vec![entry("no time", Level::Warn, "broker")]],
    )
    .await
    .expect("written");
    let page = query(&mut logger.client, QueryLogsRequest::default()).await;
    let id = uuid::Uuid::try_parse(&page.entries[0].id).expect("a UUID");
    assert_eq!(id.get_version_num(), 7, "a UUIDv7, sorting like the time");
    assert!(
        page.entries[0]
            .created_at
            .as_ref()
            .is_some_and(|at| at.seconds >= before)
    );
}

#[tokio::test]
async fn an_entry_under_an_id_stored_before_is_taken_but_not_stored_again() {
    const EVENT_ID: &str = "01a23f0c-4370-76fc-b507-dbf82e2a6b82";
    let mut logger = start(&[]).await;
    let audit = |name: &str| LogEntry {
        id: EVENT_ID.to_owned(),
        ..entry(name, Level::Info, "listener")
    };
    write(&mut logger.client, vec![vec![audit("audit message.sent")]])
        .await
        .expect("written");
    let again = write(
        &mut logger.client,
        vec![vec![audit("again"), entry("new", Level::Info, "listener")]],
    )
    .await
    .expect("a redelivered audit entry is no error");
    assert_eq!(again, 2);
    let page = query(&mut logger.client, QueryLogsRequest::default()).await;
    assert_eq!(names(&page), ["new", "audit message.sent"]);
    assert_eq!(page.entries[1].id, EVENT_ID, "the writer's id is kept");

    let status = write(
        &mut logger.client,
        vec![vec![LogEntry {
            id: "client-chosen".to_owned(),
            ..entry("bad id", Level::Info, "listener")
        }]],
    )
    .await
    .expect_err("an id that is not a UUID is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("id"), "{status:?}");
}

#[tokio::test]
async fn queries_filter_by_service_level_user_trace_and_time() {
    let mut logger = start(&[]).await;
    write(&mut logger.client, vec![three_entries()])
        .await
        .expect("written");
    let cases = [
        (
            QueryLogsRequest {
                service: "chat".to_owned(),
                ..Default::default()
            },
            vec!["boom"],
        ),
        (
            QueryLogsRequest {
                min_level: Level::Info as i32,
                ..Default::default()
            },
            vec!["boom", "login"],
        ),
        (
            QueryLogsRequest {
                user_id: ADA.to_owned(),
                ..Default::default()
            },
            vec!["login"],
        ),
        (
            QueryLogsRequest {
                trace_id: TRACE.to_uppercase(),
                ..Default::default()
            },
            vec!["login"],
        ),
        (
            QueryLogsRequest {
                since: Some(ago(25)),
                ..Default::default()
            },
            vec!["sent", "boom"],
        ),
        (
            QueryLogsRequest {
                until: Some(ago(25)),
                ..Default::default()
            },
            vec!["login"],
        ),
        (
            QueryLogsRequest {
                since: Some(ago(25)),
                until: Some(ago(15)),
                ..Default::default()
            },
            vec!["boom"],
        ),
        (
            QueryLogsRequest {
                service: "auth".to_owned(),
                min_level: Level::Warn as i32,
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (request, expected) in cases {
        let page = query(&mut logger.client, request.clone()).await;
        assert_eq!(names(&page), expected, "{request:?}");
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_to_the_end() {
    let mut logger = start(&[]).await;
    let batch: Vec<LogEntry> = (0..25)
        .map(|i| LogEntry {
            created_at: Some(ago(100 - i)),
            ..entry(&format!("e{i:02}"), Level::Info, "chat")
        })
        .collect();
    write(&mut logger.client, vec![batch])
        .await
        .expect("written");
    let mut seen = Vec::new();
    let mut request = QueryLogsRequest {
        limit: 10,
        ..Default::default()
    };
    loop {
        let page = query(&mut logger.client, request.clone()).await;
        assert!(page.entries.len() <= 10);
        seen.extend(page.entries.iter().map(|entry| entry.name.clone()));
        if page.next_cursor.is_empty() {
            break;
        }
        request.cursor = page.next_cursor;
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("e{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn an_invalid_entry_refuses_its_whole_batch() {
    let mut logger = start(&[]).await;
    let bad_batches = [
        (
            vec![
                entry("fine", Level::Info, "auth"),
                entry("", Level::Info, "auth"),
            ],
            "entries[1].name",
        ),
        (
            vec![LogEntry {
                data: "[1]".to_owned(),
                ..entry("x", Level::Info, "auth")
            }],
            "entries[0].data",
        ),
        (
            vec![entry("x", Level::Unspecified, "auth")],
            "entries[0].level",
        ),
        (
            vec![LogEntry {
                level: 42,
                ..entry("x", Level::Info, "auth")
            }],
            "entries[0].level",
        ),
        (
            vec![entry("x", Level::Info, "Auth Service")],
            "entries[0].service",
        ),
        (
            vec![LogEntry {
                user_id: "ada".to_owned(),
                ..entry("x", Level::Info, "auth")
            }],
            "entries[0].user_id",
        ),
        (
            vec![LogEntry {
                trace_id: "abc".to_owned(),
                ..entry("x", Level::Info, "auth")
            }],
            "entries[0].trace_id",
        ),
        (
            vec![entry("x", Level::Info, "auth"); 1_001],
            "at most 1000 entries",
        ),
    ];
    for (batch, says) in bad_batches {
        let status = write(&mut logger.client, vec![batch])
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(says),
            "{:?} should say {says}",
            status.message()
        );
    }
    let page = query(&mut logger.client, QueryLogsRequest::default()).await;
    assert!(
        page.entries.is_empty(),
        "nothing of a refused batch is stored"
    );
}

#[tokio::test]
async fn a_batch_before_a_refused_one_stays_stored() {
    let mut logger = start(&[]).await;
    let status = write(
        &mut logger.client,
        vec![
            vec![entry("first", Level::Info, "auth")],
            vec![entry("", Level::Info, "auth")],
        ],
    )
    .await
    .expect_err("the second batch is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let page = query(&mut logger.client, QueryLogsRequest::default()).await;
    assert_eq!(names(&page), ["first"]);
}

#[tokio::test]
async fn a_batch_at_every_limit_is_taken() {
    let mut logger = start(&[]).await;
    let data = format!(r#"{{"blob":"{}"}}"#, "x".repeat(16 * 1024 - 11));
    let full = LogEntry {
        name: "é".repeat(200),
        data,
        user_id: ADA.to_owned(),
        trace_id: TRACE.to_owned(),
        created_at: Some(ago(1)),
        ..entry("", Level::Info, &"s".repeat(40))
    };
    let written = write(&mut logger.client, vec![vec![full; 1_000]])
        .await
        .expect("taken");
    assert_eq!(written, 1_000);
}

#[tokio::test]
async fn an_empty_stream_writes_nothing() {
    let mut logger = start(&[]).await;
    assert_eq!(write(&mut logger.client, vec![]).await.expect("answers"), 0);
    assert_eq!(
        write(&mut logger.client, vec![vec![], vec![]])
            .await
            .expect("answers"),
        0
    );
}

#[tokio::test]
async fn invalid_queries_are_refused() {
    let mut logger = start(&[]).await;
    let bad = [
        QueryLogsRequest {
            limit: 501,
            ..Default::default()
        },
        QueryLogsRequest {
            cursor: "not-a-cursor".to_owned(),
            ..Default::default()
        },
        QueryLogsRequest {
            service: "NO".to_owned(),
            ..Default::default()
        },
        QueryLogsRequest {
            user_id: "ada".to_owned(),
            ..Default::default()
        },
        QueryLogsRequest {
            trace_id: "0".repeat(32),
            ..Default::default()
        },
        QueryLogsRequest {
            min_level: 9,
            ..Default::default()
        },
    ];
    for request in bad {
        let status = logger
            .client
            .query_logs(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    // A window that ends before it starts is a valid question with no answer.
    write(
        &mut logger.client,
        vec![vec![entry("now", Level::Info, "chat")]],
    )
    .await
    .expect("written");
    let backwards = query(
        &mut logger.client,
        QueryLogsRequest {
            since: Some(ago(1)),
            until: Some(ago(2)),
            ..Default::default()
        },
    )
    .await;
    assert!(backwards.entries.is_empty(), "{backwards:?}");
}

#[tokio::test]
async fn entries_past_the_retention_are_purged() {
    // A 2-minute retention is purged every 5 seconds.
    let mut logger = start(&["--logger-retention=2m".to_owned()]).await;
    let old = LogEntry {
        created_at: Some(ago(180)),
        ..entry("old", Level::Info, "auth")
    };
    let new = LogEntry {
        created_at: Some(ago(1)),
        ..entry("new", Level::Info, "auth")
    };
    write(&mut logger.client, vec![vec![old, new]])
        .await
        .expect("written");
    let started = std::time::Instant::now();
    loop {
        let page = query(&mut logger.client, QueryLogsRequest::default()).await;
        if names(&page) == ["new"] {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still there: {:?}",
            names(&page)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn entries_round_trip_through_mongodb() {
    let Some(server) = MongoServer::start().await.expect("SecantusDB starts") else {
        eprintln!("skipped: SecantusDB is not installed");
        return;
    };
    let mut logger = start(&[
        format!("--logger-mongo-url={}", server.url()),
        "--logger-mongo-database=logs_grpc_test".to_owned(),
    ])
    .await;
    let written = write(
        &mut logger.client,
        vec![three_entries(), vec![entry("more", Level::Warn, "chat")]],
    )
    .await
    .expect("written");
    assert_eq!(written, 4);
    let page = query(
        &mut logger.client,
        QueryLogsRequest {
            limit: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&page), ["more", "sent"]);
    let rest = query(
        &mut logger.client,
        QueryLogsRequest {
            cursor: page.next_cursor,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&rest), ["boom", "login"]);
    let chat = query(
        &mut logger.client,
        QueryLogsRequest {
            service: "chat".to_owned(),
            min_level: Level::Error as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(names(&chat), ["boom"]);
}

#[tokio::test]
async fn grpcurl_can_list_the_services_and_check_health_without_proto_files() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let running = start(&[]).await;
    let channel = Channel::from_shared(running.url.clone())
        .expect("a valid URL")
        .connect()
        .await
        .expect("the logger answers");
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection is served")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("an answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("a list of services: {answer:?}");
    };
    let names: Vec<_> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["microchat.logger.v1.Logger", "grpc.health.v1.Health"],
        "what this server serves, and nothing it does not"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "microchat.logger.v1.Logger".into(),
        })
        .await
        .expect("the logger reports its health")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
