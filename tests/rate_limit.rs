//! Per-client, per-route rate limits, configured to the older system's rule: the fourth
//! request to a route within ten seconds from one client is refused.

mod common;

use common::{TestApp, expect_error};
use reqwest::StatusCode;

#[tokio::test]
async fn fourth_request_to_a_route_within_ten_seconds_is_refused() {
    let app = TestApp::start(&[
        "--broker-rate-limit-auth=3/10s",
        "--broker-rate-limit-api=3/10s",
    ])
    .await;
    let client = app.client();
    for attempt in 1..=3 {
        let response = app.login(&client, "nobody", "wrong password").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt} is let through"
        );
    }
    let refused = app.login(&client, "nobody", "wrong password").await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );

    // Another route has its own budget.
    let registered = app.register(&client, "ada", "correct horse battery").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let me = |token: Option<&'static str>| app.me(&client, token);
    for _ in 0..3 {
        expect_error(me(None).await, StatusCode::UNAUTHORIZED).await;
    }
    expect_error(me(None).await, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}
