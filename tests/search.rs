//! Full-text search over REST, as a user sees it through the broker: ranked hits with
//! highlighted snippets from their own conversations only, paged by cursor; and every
//! hostile query (FTS syntax, empty, too long, control characters, forged cursors,
//! another room's id) a JSON 400/404 or a safe literal search, never a 500.

mod common;

use common::{Db, TestApp, User, expect_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `/api/search` with these query parameters, encoded.
fn search_path(params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://localhost/api/search").expect("a valid URL");
    url.query_pairs_mut().extend_pairs(params);
    format!("/api/search?{}", url.query().unwrap_or_default())
}

async fn search(user: &User, q: &str) -> Value {
    user.get_ok(&search_path(&[("q", q)])).await
}

fn bodies(page: &Value) -> Vec<&str> {
    results(page)
        .iter()
        .map(|hit| hit["message"]["body"].as_str().expect("a body"))
        .collect()
}

fn results(page: &Value) -> &Vec<Value> {
    page["results"].as_array().expect("a list of results")
}

/// The highlighted parts of a hit's snippet, cut by character offsets.
fn highlighted(hit: &Value) -> Vec<String> {
    let chars: Vec<char> = hit["snippet"]
        .as_str()
        .expect("a snippet")
        .chars()
        .collect();
    hit["highlights"]
        .as_array()
        .expect("highlights")
        .iter()
        .map(|range| {
            let start =
                usize::try_from(range["start"].as_u64().expect("a start")).expect("an index");
            let end = usize::try_from(range["end"].as_u64().expect("an end")).expect("an index");
            chars[start..end].iter().collect()
        })
        .collect()
}

async fn room(user: &User, name: &str) -> String {
    let room = user
        .post_expecting("/api/rooms", &json!({ "name": name }), StatusCode::CREATED)
        .await;
    room["id"].as_str().expect("a room id").to_owned()
}

async fn finds_ranked_highlighted_hits_in_own_conversations_only(app: &TestApp) {
    let (ada, bob, eve) = (
        app.user("ada").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let lobby = room(&ada, "lobby").await;
    let secret = room(&eve, "secret").await;
    let direct = ada.open_direct(&bob).await;
    ada.send(&lobby, "Lighthouse keepers wave at the lighthouse")
        .await;
    ada.send(&lobby, "nothing to see").await;
    bob.send(&direct, "meet me by the lighthouse").await;
    eve.send(&secret, "the lighthouse code is 1234").await;

    let page = search(&ada, "LIGHTHOUSE").await;
    assert_eq!(
        bodies(&page),
        [
            "Lighthouse keepers wave at the lighthouse",
            "meet me by the lighthouse"
        ],
        "two mentions first; eve's room never"
    );
    let best = &results(&page)[0];
    assert_eq!(best["conversation_id"], lobby.as_str());
    assert_eq!(best["conversation_kind"], "room");
    assert_eq!(best["conversation_name"], "lobby");
    assert_eq!(best["message"]["sender_name"], "ada");
    assert!(best["message"]["created_at"].is_string());
    assert_eq!(highlighted(best), ["Lighthouse", "lighthouse"]);
    let other = &results(&page)[1];
    assert_eq!(other["conversation_kind"], "direct");
    assert!(other.get("conversation_name").is_none());
    assert!(page.get("next_cursor").is_none(), "one page holds them all");

    // Narrowed to one conversation of theirs; another's is a 404, like a missing one.
    let only_direct = ada
        .get_ok(&search_path(&[
            ("q", "lighthouse"),
            ("conversation_id", &direct),
        ]))
        .await;
    assert_eq!(bodies(&only_direct), ["meet me by the lighthouse"]);
    for conversation in [secret.as_str(), "0190b5a0-0000-7000-8000-000000000000"] {
        let refused = ada
            .get(&search_path(&[
                ("q", "lighthouse"),
                ("conversation_id", conversation),
            ]))
            .await;
        assert_eq!(
            expect_error(refused, StatusCode::NOT_FOUND).await,
            "not_found"
        );
    }
    assert_eq!(
        bodies(&search(&eve, "lighthouse").await),
        ["the lighthouse code is 1234"]
    );
}

async fn pages_follow_the_cursor_over_every_hit_once(app: &TestApp) {
    let ada = app.user("ada").await;
    let lobby = room(&ada, "lobby").await;
    for n in 0..12 {
        ada.send(&lobby, &format!("{} {n}", "ping ".repeat(1 + n % 2)))
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("q", "ping"), ("limit", "5")];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        let page = ada.get_ok(&search_path(&params)).await;
        assert!(results(&page).len() <= 5);
        seen.extend(bodies(&page).into_iter().map(str::to_owned));
        // Sent while paging: not part of this search's pages.
        ada.send(&lobby, "ping while paging").await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..12)
        .map(|n| format!("{} {n}", "ping ".repeat(1 + n % 2)))
        .collect();
    expected.sort();
    seen.sort();
    assert_eq!(
        seen, expected,
        "every hit once, none sent after the first page"
    );
    // A cursor is for its own search only.
    let first = ada
        .get_ok(&search_path(&[("q", "ping"), ("limit", "1")]))
        .await;
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let elsewhere = ada
        .get(&search_path(&[("q", "pong"), ("cursor", cursor)]))
        .await;
    // The right shape, but no page of this search: what a spent link answers.
    assert_eq!(
        expect_error(elsewhere, StatusCode::NOT_FOUND).await,
        "not_found"
    );
}

#[tokio::test]
async fn search_finds_ranked_highlighted_hits_in_own_conversations_only() {
    let app = TestApp::start(&[]).await;
    finds_ranked_highlighted_hits_in_own_conversations_only(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn search_finds_ranked_highlighted_hits_in_own_conversations_only_on_postgres() {
    let Some(app) = TestApp::start_on(Db::Postgres, &[]).await else {
        return;
    };
    finds_ranked_highlighted_hits_in_own_conversations_only(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn search_pages_follow_the_cursor_over_every_hit_once() {
    let app = TestApp::start(&[]).await;
    pages_follow_the_cursor_over_every_hit_once(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn search_pages_follow_the_cursor_over_every_hit_once_on_postgres() {
    let Some(app) = TestApp::start_on(Db::Postgres, &[]).await else {
        return;
    };
    pages_follow_the_cursor_over_every_hit_once(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn hostile_searches_get_a_json_400_or_a_literal_search_never_a_500() {
    let app = TestApp::start(&[]).await;
    let ada = app.user("ada").await;
    let lobby = room(&ada, "lobby").await;
    ada.send(&lobby, "plain words only").await;

    let long = "a".repeat(1000);
    let too_many_words = "w ".repeat(17);
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no q", vec![]),
        ("empty", vec![("q", "")]),
        ("only spaces", vec![("q", "   ")]),
        ("1,000 characters", vec![("q", &long)]),
        ("17 words", vec![("q", &too_many_words)]),
        ("NUL", vec![("q", "nul\0byte")]),
        ("newline", vec![("q", "two\nlines")]),
        ("limit 0", vec![("q", "plain"), ("limit", "0")]),
        ("limit 51", vec![("q", "plain"), ("limit", "51")]),
        ("limit text", vec![("q", "plain"), ("limit", "many")]),
        (
            "bad conversation id",
            vec![("q", "plain"), ("conversation_id", "nope")],
        ),
        (
            "garbage cursor",
            vec![("q", "plain"), ("cursor", "garbage")],
        ),
        (
            "cursor of other characters",
            vec![("q", "plain"), ("cursor", "%%%")],
        ),
        ("long cursor", vec![("q", "plain"), ("cursor", &long)]),
        ("empty cursor", vec![("q", "plain"), ("cursor", "")]),
    ];
    for (what, params) in refused {
        let response = ada.get(&search_path(&params)).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{what}: {params:?}"
        );
        let error: Value = response.json().await.expect("a JSON error");
        assert!(error["error"]["message"].is_string(), "{what}: {error}");
    }
    // A forged cursor (right shape, changed bytes) names no page: 404, as for a spent link.
    ada.send(&lobby, "plain again").await;
    let first = ada
        .get_ok(&search_path(&[("q", "plain"), ("limit", "1")]))
        .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let mut forged: Vec<char> = cursor.chars().collect();
    forged[20] = if forged[20] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let response = ada
        .get(&search_path(&[
            ("q", "plain"),
            ("limit", "1"),
            ("cursor", &forged),
        ]))
        .await;
    assert_eq!(
        expect_error(response, StatusCode::NOT_FOUND).await,
        "not_found"
    );
    // FTS and tsquery syntax is text: a safe search that finds nothing here.
    for literal in [
        "\"",
        "\"\"",
        "*",
        "NEAR(",
        "NEAR(plain words, 1)",
        "(((",
        ")))",
        "AND OR NOT",
        "plain*",
        "words:*",
        "plain & words",
        "!plain",
        "plain <-> words",
        "'",
        "\\",
        "{words}",
        "body:plain",
        "-plain",
        "^plain",
        "%",
        "_",
        "😀",
    ] {
        let page = ada.get_ok(&search_path(&[("q", literal)])).await;
        assert!(
            results(&page).iter().all(|hit| {
                let body = hit["message"]["body"].as_str().unwrap_or_default();
                body.starts_with("plain")
            }),
            "{literal:?}: {page}"
        );
    }
    // Quoted words are still words.
    assert_eq!(results(&search(&ada, "\"plain\" \"words\"").await).len(), 1);
    app.stop().await;
}
