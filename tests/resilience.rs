//! Services behind the broker fail and come back; the broker answers clearly meanwhile
//! and recovers without a restart.

mod common;

use common::{expect_error, temp_dir};
use platform::shutdown::Shutdown;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn login(client: &Client, base: &str, password: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": "ada", "password": password }))
        .send()
        .await
        .expect("the broker answers even when auth does not")
}

#[tokio::test]
async fn auth_down_means_503_for_login_and_back_without_restarting_the_broker() {
    let dir = temp_dir();
    let mut config = common::config(&dir, None, &[]);
    let auth = auth::Auth::build(&config.auth, &dir).await.unwrap();
    let auth_addr = auth.local_addr();
    let auth_stop = Shutdown::new();
    let auth_task = tokio::spawn(auth.run(auth_stop.clone()));
    config.broker.auth_url = format!("http://{auth_addr}");
    let broker = broker::Broker::build(config.broker.clone()).await.unwrap();
    let base = format!("http://{}", broker.local_addr());
    let broker_stop = Shutdown::new();
    let broker_task = tokio::spawn(broker.run(broker_stop.clone()));

    let client = Client::new();
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(
            &json!({ "username": "ada", "email": "ada@example.com", "password": "correct horse" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let session: Value = login(&client, &base, "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap();

    auth_stop.cancel();
    auth_task.await.unwrap().unwrap();

    let refused = login(&client, &base, "correct horse").await;
    assert_eq!(
        expect_error(refused, StatusCode::SERVICE_UNAVAILABLE).await,
        "service_unavailable"
    );
    let body: Value = login(&client, &base, "correct horse")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("auth"),
        "the message names the service: {body}"
    );
    let me = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "a logged-in user keeps working while auth is down"
    );
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    config.auth.listen = auth_addr;
    let auth = auth::Auth::build(&config.auth, &dir).await.unwrap();
    let auth_stop = Shutdown::new();
    let auth_task = tokio::spawn(auth.run(auth_stop.clone()));
    let started = Instant::now();
    let session: Value = loop {
        let response = login(&client, &base, "correct horse").await;
        if response.status() == StatusCode::OK {
            break response.json().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "login works again once auth is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let token = session["token"].as_str().unwrap();
    let logout = client
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let me = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);

    broker_stop.cancel();
    auth_stop.cancel();
    broker_task.await.unwrap().unwrap();
    auth_task.await.unwrap().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
