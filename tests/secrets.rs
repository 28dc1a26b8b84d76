//! Secrets never reach the logs: the real `microchat` binary runs with `RUST_LOG=debug`
//! and JSON logs, a user goes through everything that carries a secret (register, login,
//! a wrong password, refresh, the socket by bearer token and by cookie, the `/handle`
//! credential check, logout), and then neither its output nor the entries the logger
//! stored contain the password, any access or refresh token, the signing key, or the
//! listener's admin token (set from the environment, as in the cluster).

mod common;

use common::ws::{ready, send};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

const PASSWORD: &str = "Tr0ub4dor&3-secret-horse";
const ADMIN_TOKEN: &str = "listener-admin-token-c0rrect-h0rse";

/// The all-in-one, its output going to a file; killed when dropped.
struct Running {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
    data_dir: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn start() -> Running {
    let data_dir = common::temp_dir();
    let log = data_dir.join("microchat.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_microchat"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .env("MICROCHAT_DATA_DIR", &data_dir)
        .env("LISTENER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("BROKER_RATE_LIMIT_AUTH", "off")
        .env("BROKER_RATE_LIMIT_API", "off")
        .args([
            "--auth-listen=127.0.0.1:0",
            "--chat-listen=127.0.0.1:0",
            "--broker-listen=127.0.0.1:0",
            "--mail-listen=127.0.0.1:0",
            "--listener-listen=127.0.0.1:0",
            "--listener-admin-listen=127.0.0.1:0",
            "--logger-listen=127.0.0.1:0",
            "--frontend-listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the microchat binary starts");
    // Everything it writes, on either stream, goes to the log file; the URLs it prints
    // once everything is up tell where the API is.
    let (found, url) = std::sync::mpsc::channel();
    let sink = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::File::create(&log).expect("the temp dir is writable"),
    ));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    for (stream, found) in [
        (
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Some(found),
        ),
        (Box::new(stderr), None),
    ] {
        let sink = sink.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if let (Some(found), Some(url)) = (&found, line.trim().strip_prefix("API")) {
                    let url = url.split_whitespace().next().unwrap_or_default();
                    let _ = found.send(url.trim_end_matches("/api").to_owned());
                }
                let mut file = sink.lock().expect("no writer panics holding the log");
                let _ = writeln!(file, "{line}");
            }
        });
    }
    let base = url
        .recv_timeout(Duration::from_secs(60))
        .expect("microchat prints its API URL");
    Running {
        child,
        base,
        log,
        data_dir,
    }
}

async fn json_of(response: reqwest::Response, status: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn no_password_token_or_key_ever_reaches_the_logs() {
    let running = start();
    let base = running.base.clone();
    let client = Client::new();
    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), PASSWORD.into()),
        ("listener's admin token".into(), ADMIN_TOKEN.into()),
    ];

    // The auditor registers first: the install's owner, so it reads the logs.
    for name in ["auditor", "keeper"] {
        let registered = client
            .post(format!("{base}/api/auth/register"))
            .json(&json!({ "username": name, "email": format!("{name}@example.com"), "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        json_of(registered, StatusCode::CREATED, "register").await;
    }
    let wrong = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": "keeper", "password": format!("{PASSWORD}-wrong") }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    secrets.push(("wrong password".into(), format!("{PASSWORD}-wrong")));

    let login = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": "keeper", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let login = json_of(login, StatusCode::OK, "login").await;
    let token = login["token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(("access token".into(), token.clone()));
    secrets.push(("refresh token".into(), refresh.clone()));

    let refreshed = client
        .post(format!("{base}/api/auth/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    let refreshed = json_of(refreshed, StatusCode::OK, "refresh").await;
    let token = refreshed["token"].as_str().unwrap().to_owned();
    secrets.push(("refreshed access token".into(), token.clone()));
    secrets.push((
        "rotated refresh token".into(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ));

    let me = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    json_of(me, StatusCode::OK, "me").await;
    let room = client
        .post(format!("{base}/api/rooms"))
        .bearer_auth(&token)
        .json(&json!({ "name": "vault" }))
        .send()
        .await
        .unwrap();
    let room = json_of(room, StatusCode::CREATED, "room").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The socket, by bearer token and by session cookie, sending once each.
    let ws = format!("{}/ws", base.replacen("http://", "ws://", 1));
    for header in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", format!("microchat_session={token}")),
    ] {
        let mut request = ws.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert(header.0, HeaderValue::from_str(&header.1).unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ready(&mut socket).await;
        send(
            &mut socket,
            json!({ "type": "send", "conversation_id": room, "body": "nothing secret" }),
        )
        .await;
        let _ = socket.close(None).await;
    }

    // The older API's credential check.
    let handled = client
        .post(format!("{base}/handle"))
        .json(&json!({ "action": "auth", "auth": { "email": "keeper@example.com", "password": PASSWORD } }))
        .send()
        .await
        .unwrap();
    assert_eq!(handled.status(), StatusCode::OK);

    let logout = client
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    // What the logger stored, read by an administrator (waiting for the audit entries
    // of the events above, so the listener's work is in too).
    let auditor = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "login": "auditor", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let auditor = json_of(auditor, StatusCode::OK, "auditor login").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let stored = loop {
        let page = client
            .get(format!("{base}/api/logs?limit=500"))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap();
        let page = json_of(page, StatusCode::OK, "logs").await;
        let text = page.to_string();
        if text.contains("audit user.logged_out") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the logout's audit entry never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    secrets.push(("administrator's token".into(), auditor.clone()));

    // The signing key the all-in-one generated.
    let pem = std::fs::read_to_string(running.data_dir.join("auth-signing-key.pem"))
        .expect("the all-in-one keeps its signing key in the data dir");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    secrets.push(("signing key".into(), body));

    let output = std::fs::read_to_string(&running.log).unwrap();
    assert!(
        output.lines().count() > 50,
        "the debug log is suspiciously short:\n{output}"
    );
    assert!(
        output.contains("request done"),
        "the run logged its requests"
    );
    for (what, secret) in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the {what} is in the process output"
        );
        assert!(
            !stored.contains(secret.as_str()),
            "the {what} is in the logger's entries"
        );
        // A token's signature alone is secret enough: JWTs are header.payload.signature.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() >= 20) {
            assert!(
                !output.contains(signature),
                "the signature of the {what} is in the process output"
            );
        }
    }
}
