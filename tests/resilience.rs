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

async fn me(client: &Client, base: &str, token: &str) -> StatusCode {
    client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the broker answers")
        .status()
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_and_the_old_one_stops_working() {
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
    let old: Value = login(&client, &base, "correct horse")
        .await
        .json()
        .await
        .unwrap();
    let old = old["token"].as_str().unwrap().to_owned();
    assert_eq!(me(&client, &base, &old).await, StatusCode::OK);

    // The operator rotates the key: auth restarts with a new one (the old file removed).
    auth_stop.cancel();
    auth_task.await.unwrap().unwrap();
    std::fs::remove_file(dir.join("auth-signing-key.pem")).expect("auth keeps its key here");
    config.auth.listen = auth_addr;
    let auth = auth::Auth::build(&config.auth, &dir).await.unwrap();
    let auth_stop = Shutdown::new();
    let auth_task = tokio::spawn(auth.run(auth_stop.clone()));

    // A token of the new key: the broker does not know its kid, fetches auth's keys
    // (at most every few seconds) and accepts it.
    let fresh: Value = loop {
        let response = login(&client, &base, "correct horse").await;
        if response.status() == StatusCode::OK {
            break response.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while me(&client, &base, &fresh).await != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the broker never learned the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old key is withdrawn: its token stops working at once, though the broker had
    // it cached and it has not expired.
    assert_eq!(me(&client, &base, &old).await, StatusCode::UNAUTHORIZED);

    broker_stop.cancel();
    auth_stop.cancel();
    broker_task.await.unwrap().unwrap();
    auth_task.await.unwrap().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
