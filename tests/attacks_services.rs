//! Attacks on the internal gRPC services, black-box against the all-in-one: a process on
//! the network that is not one of microchat's services (no key, or a key of another
//! installation) is refused by every method of every service, and a service calling
//! outside its grant is refused too; operators still reach health and reflection.
//! The policy itself is `platform::service_auth::policy`; docs/SECURITY.md lists the
//! threats.

mod common;

use common::{
    TestApp,
    grpc_probe::{call, call_every_method, not_answering, proto_service, token},
};
use platform::service_auth::Service;
use tonic::Code;

const SERVING: [Service; 4] = [Service::Auth, Service::Chat, Service::Logger, Service::Mail];

#[tokio::test]
async fn a_caller_without_a_service_token_is_refused_by_every_method_of_every_service() {
    let app = TestApp::start(&[]).await;
    for service in SERVING {
        let answers = call_every_method(&app.grpc_url(service), service, None).await;
        assert_eq!(
            not_answering(&answers, Code::Unauthenticated),
            Vec::<&(String, Code)>::new(),
            "{service}: every method refuses a caller without a token"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_signed_with_another_installations_key_is_refused() {
    let app = TestApp::start(&[]).await;
    let strangers =
        platform::testing::service_keys(&common::temp_dir().join("another-installation-keys"));
    for service in SERVING {
        // The broker's name, the right audience, a valid signature — by the wrong key.
        let forged = token(&strangers, Service::Broker, service);
        let answers = call_every_method(&app.grpc_url(service), service, Some(&forged)).await;
        assert_eq!(
            not_answering(&answers, Code::Unauthenticated),
            Vec::<&(String, Code)>::new(),
            "{service}: a forged broker token gets nowhere"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_for_one_service_is_refused_by_another() {
    let app = TestApp::start(&[]).await;
    let keys = app.service_keys();
    // A broker token for the logger, replayed against chat.
    let for_logger = token(&keys, Service::Broker, Service::Logger);
    let code = call(
        &app.chat_url(),
        "/microchat.chat.v1.Chat/ListMessages",
        Some(&for_logger),
    )
    .await;
    assert_eq!(code, Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn services_are_held_to_their_grants() {
    let app = TestApp::start(&[]).await;
    let keys = app.service_keys();
    let refused = [
        // Only the broker acts for users: the listener cannot read or send messages.
        (Service::Listener, Service::Chat, "ListMessages"),
        (Service::Listener, Service::Chat, "SendMessage"),
        (Service::Mail, Service::Auth, "ListUsers"),
        (Service::Chat, Service::Auth, "BeginAccountDeletion"),
        (Service::Logger, Service::Auth, "CompleteAccountDeletion"),
        // Only the listener sends the system's mail (welcome, sign-out, reset links).
        (Service::Broker, Service::Mail, "SendMail"),
        (Service::Chat, Service::Mail, "SendMail"),
        // Logs are read by the broker alone (for administrators).
        (Service::Chat, Service::Logger, "QueryLogs"),
        // Chat sessions are recorded from sign-in events by the listener alone.
        (Service::Broker, Service::Chat, "StartChatSession"),
        // The mention digest reads notifications; marking them is the user's (broker).
        (Service::Listener, Service::Chat, "MarkNotificationsRead"),
        (Service::Listener, Service::Auth, "ListUsers"),
    ];
    for (caller, callee, method) in refused {
        let code = call_as(&app, &keys, caller, callee, method).await;
        assert_eq!(
            code,
            Code::PermissionDenied,
            "{caller} calling {callee}'s {method}"
        );
    }
    // And what they are granted gets past the guard to the handler (which then judges
    // the empty request on its own terms).
    let granted = [
        (Service::Broker, Service::Chat, "ListMessages"),
        (Service::Listener, Service::Mail, "SendMail"),
        (Service::Broker, Service::Mail, "ListTemplates"),
        (Service::Chat, Service::Logger, "WriteLogs"),
        // The mention digest: unread mentions, presence, whether the address is verified.
        (Service::Listener, Service::Chat, "ListNotifications"),
        (Service::Listener, Service::Chat, "ListPresence"),
        (Service::Listener, Service::Auth, "GetEmailStatus"),
    ];
    for (caller, callee, method) in granted {
        let code = call_as(&app, &keys, caller, callee, method).await;
        assert!(
            ![Code::Unauthenticated, Code::PermissionDenied].contains(&code),
            "{caller} calling {callee}'s {method} got {code:?}"
        );
    }
    app.stop().await;
}

/// What `callee` answers `method` called by `caller` with a valid token of its own.
async fn call_as(
    app: &TestApp,
    keys: &platform::service_auth::ServiceKeys,
    caller: Service,
    callee: Service,
    method: &str,
) -> Code {
    let path = format!("/{}/{method}", proto_service(callee));
    call(
        &app.grpc_url(callee),
        &path,
        Some(&token(keys, caller, callee)),
    )
    .await
}

#[tokio::test]
async fn operators_reach_health_and_reflection_without_a_token() {
    let app = TestApp::start(&[]).await;
    for service in SERVING {
        let channel = tonic::transport::Channel::from_shared(app.grpc_url(service))
            .expect("a valid URL")
            .connect()
            .await
            .expect("the service accepts connections");
        let health = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: proto_service(service).to_owned(),
            })
            .await
            .expect("health answers without a token")
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    app.stop().await;
}
