//! Files in conversations, as users see them through the broker of the all-in-one: an
//! image and a PDF uploaded, sent with a message and seen by the other member live and
//! in history, downloaded with the headers that keep them from running as pages, with
//! ranges and validators; strangers get the 404 of a missing id; every bad upload gets
//! a clear 4xx/507 and leaves nothing behind; and removing a message, an account or an
//! unclaimed upload deletes the rows at once and the objects through the event path.

mod common;

use common::{
    SmallDisk, TestApp, User, eventually, expect_error,
    ws::{next_of_type, ready},
};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A boundary no test body contains.
const BOUNDARY: &str = "microchat-test-boundary-7d1f";

/// One part of a multipart body.
struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: &'a str,
    bytes: &'a [u8],
}

impl<'a> Part<'a> {
    /// A file part named `file`.
    fn file(filename: &'a str, content_type: &'a str, bytes: &'a [u8]) -> Self {
        Self {
            name: "file",
            filename: Some(filename),
            content_type,
            bytes,
        }
    }
}

/// A multipart/form-data body of `parts`, closed properly.
fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let filename = part
            .filename
            .map(|name| format!("; filename=\"{name}\""))
            .unwrap_or_default();
        body.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"{filename}\r\nContent-Type: {}\r\n\r\n",
                part.name, part.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn uploads_path(conversation: &str) -> String {
    format!("/api/conversations/{conversation}/attachments")
}

/// `POST` of a raw body to the conversation's uploads.
async fn upload_raw(
    user: &User,
    conversation: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Response {
    user.client
        .post(format!("{}{}", user.base, uploads_path(conversation)))
        .bearer_auth(&user.token)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("the broker answers")
}

/// Uploads one file; the answer.
async fn upload(user: &User, conversation: &str, filename: &str, bytes: &[u8]) -> Response {
    let body = multipart(&[Part::file(filename, "application/octet-stream", bytes)]);
    upload_raw(
        user,
        conversation,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body,
    )
    .await
}

/// Uploads one file, which must be stored; its JSON.
async fn uploaded(user: &User, conversation: &str, filename: &str, bytes: &[u8]) -> Value {
    let answer = upload(user, conversation, filename, bytes).await;
    assert_eq!(answer.status(), StatusCode::CREATED, "upload of {filename}");
    answer.json().await.expect("an upload answers JSON")
}

/// A PNG of `width` × `height` pixels (a gradient, so it compresses like a picture).
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let byte = |value: u32| u8::try_from(value % 256).expect("below 256");
        image::Rgb([byte(x), byte(y), byte(x + y)])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .expect("a PNG encodes");
    bytes.into_inner()
}

/// A small PDF: what matters is that it starts as one.
fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

/// CRC-32 (IEEE), for a PNG chunk made by hand.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header says `width` × `height` (a decompression bomb's header): a real
/// 1 × 1 PNG with its IHDR chunk rewritten, its checksum made to match.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = png(1, 1);
    // The IHDR chunk: length 8..12, type 12..16, width, height, 5 bytes, CRC 29..33.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// `GET path` with extra headers.
async fn get_with(user: &User, path: &str, headers: &[(header::HeaderName, &str)]) -> Response {
    let mut request = user
        .client
        .get(format!("{}{path}", user.base))
        .bearer_auth(&user.token);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    request.send().await.expect("the broker answers")
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

/// Ada and Bob, signed up, and their direct conversation.
async fn ada_and_bob(app: &TestApp) -> (User, User, String) {
    let ada = User::sign_up(&app.base, "ada").await;
    let bob = User::sign_up(&app.base, "bob").await;
    let direct = ada.open_direct(&bob).await;
    (ada, bob, direct)
}

/// Sends `body` with the attachments `ids` to `conversation` as `user`: the message.
async fn send_with(user: &User, conversation: &str, body: &str, ids: &[&str]) -> Value {
    user.post_expecting(
        &format!("/api/conversations/{conversation}/messages"),
        &json!({ "body": body, "attachment_ids": ids }),
        StatusCode::CREATED,
    )
    .await
}

/// The files under the all-in-one's attachments directory (originals and thumbnails).
fn objects(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![data_dir.join("attachments")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The object of attachment `id` on disk.
fn original(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("attachments").join("originals").join(id)
}

#[tokio::test]
async fn an_image_and_a_pdf_travel_with_a_message_to_the_other_member() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    let mut bobs_socket = bob.open_socket().await;
    ready(&mut bobs_socket).await;

    let image_bytes = png(800, 600);
    let image = uploaded(&ada, &direct, "holiday.png", &image_bytes).await;
    assert_eq!(text(&image, "content_type"), "image/png");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(800), Some(600))
    );
    assert_eq!(image["size"].as_u64(), Some(image_bytes.len() as u64));
    let image_id = text(&image, "id").to_owned();
    assert_eq!(text(&image, "url"), format!("/api/attachments/{image_id}"));
    assert_eq!(
        text(&image, "thumbnail_url"),
        format!("/api/attachments/{image_id}/thumbnail")
    );
    // A PDF whose client says it is HTML, under a name that climbs out of its directory.
    let pdf_bytes = pdf();
    let body = multipart(&[Part::file("../../etc/report.pdf", "text/html", &pdf_bytes)]);
    let answer = upload_raw(
        &ada,
        &direct,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert!(
        answer.headers().get(header::LOCATION).is_some(),
        "201 with a Location"
    );
    let document: Value = answer.json().await.unwrap();
    assert_eq!(
        text(&document, "name"),
        "report.pdf",
        "only the last path component"
    );
    assert_eq!(
        text(&document, "content_type"),
        "application/pdf",
        "sniffed, not declared"
    );
    assert!(document.get("width").is_none() && document.get("thumbnail_url").is_none());
    let pdf_id = text(&document, "id").to_owned();

    // Sent with an empty body: the files are the message.
    let sent = send_with(&ada, &direct, "", &[&image_id, &pdf_id]).await;
    let carried: Vec<&str> = sent["attachments"]
        .as_array()
        .expect("the message carries its files")
        .iter()
        .map(|attachment| text(attachment, "id"))
        .collect();
    assert_eq!(
        carried,
        vec![image_id.as_str(), pdf_id.as_str()],
        "in the order sent"
    );

    let live = next_of_type(&mut bobs_socket, "message").await;
    let live_files = live["message"]["attachments"]
        .as_array()
        .expect("live frames carry files");
    assert_eq!(live_files.len(), 2);
    assert_eq!(text(&live_files[0], "name"), "holiday.png");
    assert_eq!(live_files[0]["width"].as_u64(), Some(800));
    assert_eq!(text(&live_files[1], "name"), "report.pdf");

    let history = bob
        .get_ok(&format!("/api/conversations/{direct}/messages"))
        .await;
    assert_eq!(
        history["messages"][0]["attachments"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "history carries them too: {history}"
    );

    // The image, inline, whole and in part.
    let path = format!("/api/attachments/{image_id}");
    let whole = get_with(&bob, &path, &[]).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let headers = whole.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert!(
        headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("inline;")
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "private, max-age=31536000, immutable"
    );
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(
        whole.bytes().await.unwrap().as_ref(),
        image_bytes.as_slice()
    );

    let part = get_with(&bob, &path, &[(header::RANGE, "bytes=8-23")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()[header::CONTENT_RANGE],
        format!("bytes 8-23/{}", image_bytes.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &image_bytes[8..24]);
    let tail = get_with(&bob, &path, &[(header::RANGE, "bytes=-10")]).await;
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &image_bytes[image_bytes.len() - 10..]
    );
    let outside = get_with(&bob, &path, &[(header::RANGE, "bytes=99999999-")]).await;
    assert_eq!(
        outside.headers()[header::CONTENT_RANGE],
        format!("bytes */{}", image_bytes.len()).as_str()
    );
    expect_error(outside, StatusCode::RANGE_NOT_SATISFIABLE).await;
    let cached = get_with(&bob, &path, &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    // Its thumbnail: at most 400 pixels a side, the aspect kept.
    let thumbnail = get_with(&bob, &format!("{path}/thumbnail"), &[]).await;
    assert_eq!(thumbnail.status(), StatusCode::OK);
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap())
        .expect("the thumbnail is an image");
    assert_eq!((thumbnail.width(), thumbnail.height()), (400, 300));

    // The PDF: a download, never shown as a page.
    let document = get_with(&bob, &format!("/api/attachments/{pdf_id}"), &[]).await;
    assert_eq!(document.status(), StatusCode::OK);
    assert_eq!(document.headers()[header::CONTENT_TYPE], "application/pdf");
    assert_eq!(
        document.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    );
    assert_eq!(
        document.bytes().await.unwrap().as_ref(),
        pdf_bytes.as_slice()
    );
    let no_thumbnail = get_with(&bob, &format!("/api/attachments/{pdf_id}/thumbnail"), &[]).await;
    expect_error(no_thumbnail, StatusCode::NOT_FOUND).await;
    app.stop().await;
}

/// An image whose header reads but whose pixels do not decode is stored (an upload reads
/// headers only) and downloads as it was sent, but has no thumbnail: a 404, as for a file
/// that is no image, not a 4xx blaming the request.
#[tokio::test]
async fn an_image_whose_pixels_do_not_decode_has_no_thumbnail() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    // A real 1 × 1 PNG whose header says 10 × 10: its data ends after one pixel.
    let bytes = png_header(10, 10);
    let image = uploaded(&ada, &direct, "broken.png", &bytes).await;
    assert_eq!(text(&image, "content_type"), "image/png");
    let id = text(&image, "id").to_owned();
    send_with(&ada, &direct, "a broken picture", &[&id]).await;

    let path = format!("/api/attachments/{id}");
    let original = get_with(&bob, &path, &[]).await;
    assert_eq!(original.status(), StatusCode::OK);
    assert_eq!(original.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // Asked twice: the upload's own attempt and each download's give the same answer.
    for _ in 0..2 {
        let thumbnail = get_with(&bob, &format!("{path}/thumbnail"), &[]).await;
        expect_error(thumbnail, StatusCode::NOT_FOUND).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn strangers_get_the_404_of_a_missing_attachment_and_cannot_claim_one() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let bob = User::sign_up(&app.base, "bob").await;
    let eve = User::sign_up(&app.base, "eve").await;
    let direct = ada.open_direct(&bob).await;
    let file = uploaded(&ada, &direct, "secret.txt", b"the plans").await;
    let id = text(&file, "id");

    let theirs = eve.get(&format!("/api/attachments/{id}")).await;
    let missing = eve
        .get(&format!("/api/attachments/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        theirs.json::<Value>().await.unwrap(),
        missing.json::<Value>().await.unwrap(),
        "someone else's file answers exactly like no file"
    );
    // Not even before it is sent: the uploader's own conversation's members only.
    expect_error(
        eve.get(&format!("/api/attachments/{id}/thumbnail")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let intrusion = upload(&eve, &direct, "x.txt", b"hello").await;
    expect_error(intrusion, StatusCode::FORBIDDEN).await;

    // Eve names Ada's file in a message of her own conversation: refused, nothing sent.
    let evas = eve.open_direct(&bob).await;
    let claimed = eve
        .post(
            &format!("/api/conversations/{evas}/messages"),
            &json!({ "body": "look", "attachment_ids": [id] }),
        )
        .await;
    expect_error(claimed, StatusCode::NOT_FOUND).await;
    // Bob, a member, cannot send Ada's file either: it is hers until she sends it.
    let borrowed = bob
        .post(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "look", "attachment_ids": [id] }),
        )
        .await;
    expect_error(borrowed, StatusCode::NOT_FOUND).await;
    assert_eq!(
        bob.get_ok(&format!("/api/conversations/{direct}/messages"))
            .await["messages"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    // Eleven files are more than a message carries; a body-less message needs a file.
    let eleven: Vec<String> = (0..11).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let too_many = ada
        .post(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "all", "attachment_ids": eleven }),
        )
        .await;
    expect_error(too_many, StatusCode::BAD_REQUEST).await;
    let empty = ada
        .post(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "" }),
        )
        .await;
    expect_error(empty, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_leave_nothing_and_the_service_keeps_serving() {
    let app = TestApp::start(&["--chat-attachment-max-bytes=1048576"]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let room = ada
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "files" }),
            StatusCode::CREATED,
        )
        .await;
    let room = text(&room, "id").to_owned();
    let form = format!("multipart/form-data; boundary={BOUNDARY}");
    let one_file = multipart(&[Part::file("a.txt", "text/plain", b"hello")]);

    let cases: Vec<(&str, String, Vec<u8>, StatusCode, &str)> = vec![
        (
            "not multipart",
            "application/json".into(),
            b"{}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no boundary",
            "multipart/form-data".into(),
            one_file.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "a wrong boundary",
            "multipart/form-data; boundary=another-one".into(),
            one_file.clone(),
            StatusCode::BAD_REQUEST,
            "bad_multipart",
        ),
        (
            "a truncated body",
            form.clone(),
            one_file[..one_file.len() - 20].to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_multipart",
        ),
        (
            "a field besides the file",
            form.clone(),
            multipart(&[
                Part::file("a.txt", "text/plain", b"one"),
                Part {
                    name: "comment",
                    filename: None,
                    content_type: "text/plain",
                    bytes: b"hi",
                },
            ]),
            StatusCode::BAD_REQUEST,
            "too_many_parts",
        ),
        (
            "two files",
            form.clone(),
            multipart(&[
                Part::file("a.txt", "text/plain", b"one"),
                Part::file("b.txt", "text/plain", b"two"),
            ]),
            StatusCode::BAD_REQUEST,
            "too_many_parts",
        ),
        (
            "a field that is not a file",
            form.clone(),
            multipart(&[Part {
                name: "comment",
                filename: None,
                content_type: "text/plain",
                bytes: b"hi",
            }]),
            StatusCode::BAD_REQUEST,
            "no_file",
        ),
        (
            "an empty form",
            form.clone(),
            format!("--{BOUNDARY}--\r\n").into_bytes(),
            StatusCode::BAD_REQUEST,
            "no_file",
        ),
        (
            "a zero-byte file",
            form.clone(),
            multipart(&[Part::file("empty.txt", "text/plain", b"")]),
            StatusCode::BAD_REQUEST,
            "empty_file",
        ),
        (
            "a PNG whose header lies",
            form.clone(),
            multipart(&[Part::file(
                "liar.png",
                "image/png",
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDRgarbage that is no header",
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "damaged_image",
        ),
        (
            "a 30,000 x 30,000 pixel image",
            form.clone(),
            multipart(&[Part::file(
                "bomb.png",
                "image/png",
                &png_header(30_000, 30_000),
            )]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_pixels",
        ),
        (
            "a file over the limit",
            form.clone(),
            multipart(&[Part::file(
                "big.bin",
                "application/octet-stream",
                &vec![7; 2 << 20],
            )]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ];
    for (what, content_type, body, status, code) in cases {
        let answer = upload_raw(&ada, &room, &content_type, body).await;
        assert_eq!(answer.status(), status, "{what}");
        assert_eq!(expect_error(answer, status).await, code, "{what}");
    }
    // A file over the limit whose length the client does not announce: refused as its
    // bytes pass the limit.
    let mut chunked = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.bin\"\r\n\r\n"
    )
    .into_bytes();
    chunked.extend(std::iter::repeat_n(1_u8, 4 << 20));
    chunked.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let answer = ada
        .client
        .post(format!("{}{}", ada.base, uploads_path(&room)))
        .bearer_auth(&ada.token)
        .header(header::CONTENT_TYPE, &form)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            chunked
                .chunks(64 * 1024)
                .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .expect("the broker answers");
    let status = answer.status();
    let said = answer.text().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{said}");

    // A NUL or another control character cannot be in a part's header: the form is
    // malformed. Long names and names that play tricks are cleaned, not refused.
    let nul = upload(&ada, &room, "we\u{0}ird.txt", b"odd").await;
    assert_eq!(
        expect_error(nul, StatusCode::BAD_REQUEST).await,
        "bad_multipart"
    );
    let long = format!("{}.txt", "x".repeat(300));
    let named = uploaded(&ada, &room, &long, b"long").await;
    let name = text(&named, "name");
    assert!(
        name.chars().count() <= 200 && name.ends_with(".txt"),
        "{name}"
    );
    let trick = uploaded(&ada, &room, "..\\evil\u{202e}gnp.exe", b"odd").await;
    assert_eq!(
        text(&trick, "name"),
        "evilgnp.exe",
        "no path, no bidi override"
    );

    // Nothing of the refused uploads is kept; the service still takes a good one.
    let good = uploaded(&ada, &room, "fine.txt", b"fine").await;
    eventually("refused uploads leave no object", || async {
        objects(&app.data_dir).len() == 3
    })
    .await;
    assert!(original(&app.data_dir, text(&good, "id")).exists());
    app.stop().await;
}

#[tokio::test]
async fn the_quota_counts_every_file_of_the_uploader() {
    let app = TestApp::start(&["--chat-attachment-quota-bytes=3000"]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    uploaded(&ada, &direct, "one.bin", &[1; 2000]).await;
    let over = upload(&ada, &direct, "two.bin", &[2; 2000]).await;
    assert_eq!(
        expect_error(over, StatusCode::PAYLOAD_TOO_LARGE).await,
        "quota_exceeded"
    );
    uploaded(&ada, &direct, "small.bin", &[3; 500]).await;
    uploaded(&bob, &direct, "bobs.bin", &[4; 2000]).await;
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_message_deletes_its_files_rows_at_once_and_objects_soon() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    let image = uploaded(&ada, &direct, "a.png", &png(64, 64)).await;
    let id = text(&image, "id").to_owned();
    let sent = send_with(&ada, &direct, "look", &[&id]).await;
    // The thumbnail is made; both objects exist.
    assert_eq!(
        bob.get(&format!("/api/attachments/{id}/thumbnail"))
            .await
            .status(),
        StatusCode::OK
    );
    let thumbnail = app
        .data_dir
        .join("attachments")
        .join("thumbnails")
        .join(&id);
    assert!(original(&app.data_dir, &id).exists() && thumbnail.exists());

    let deleted = ada
        .delete(&format!(
            "/api/conversations/{direct}/messages/{}",
            text(&sent, "id")
        ))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    expect_error(
        bob.get(&format!("/api/attachments/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    eventually("the deleted message's objects are deleted", || async {
        !original(&app.data_dir, &id).exists() && !thumbnail.exists()
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_upload_no_message_claims_expires() {
    let app = TestApp::start(&["--chat-attachment-unclaimed-ttl=2s"]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    let kept = uploaded(&ada, &direct, "kept.txt", b"kept").await;
    send_with(&ada, &direct, "", &[text(&kept, "id")]).await;
    let forgotten = uploaded(&ada, &direct, "forgotten.txt", b"forgotten").await;
    let id = text(&forgotten, "id").to_owned();
    eventually("an unclaimed upload goes, row and object", || async {
        ada.get(&format!("/api/attachments/{id}")).await.status() == StatusCode::NOT_FOUND
            && !original(&app.data_dir, &id).exists()
    })
    .await;
    let sent_too_late = ada
        .post(
            &format!("/api/conversations/{direct}/messages"),
            &json!({ "body": "", "attachment_ids": [id] }),
        )
        .await;
    expect_error(sent_too_late, StatusCode::NOT_FOUND).await;
    assert_eq!(
        bob.get(&format!("/api/attachments/{}", text(&kept, "id")))
            .await
            .status(),
        StatusCode::OK,
        "a sent file stays"
    );
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_account_deletes_its_files() {
    let app = TestApp::start(&[]).await;
    let ada = User::sign_up(&app.base, "ada").await;
    let bob = User::sign_up(&app.base, "bob").await;
    let room = bob
        .post_expecting(
            "/api/rooms",
            &json!({ "name": "lobby" }),
            StatusCode::CREATED,
        )
        .await;
    let room = text(&room, "id").to_owned();
    assert_eq!(
        ada.post(&format!("/api/rooms/{room}/join"), &json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    let in_room = uploaded(&ada, &room, "mine.txt", b"mine").await;
    send_with(&ada, &room, "mine", &[text(&in_room, "id")]).await;
    let bobs = uploaded(&bob, &room, "bobs.txt", b"bob's").await;
    let deleted = ada
        .delete_account_with(&json!({ "password": "correct horse battery" }))
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let gone = text(&in_room, "id").to_owned();
    eventually("the account's files go, rows and objects", || async {
        bob.get(&format!("/api/attachments/{gone}")).await.status() == StatusCode::NOT_FOUND
            && !original(&app.data_dir, &gone).exists()
    })
    .await;
    assert!(
        original(&app.data_dir, text(&bobs, "id")).exists(),
        "others' files stay"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_nothing_and_recovers() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let store = disk.dir.join("attachments");
    let setting = format!("--chat-attachments-url={}", store.display());
    let app = TestApp::start(&[setting.as_str()]).await;
    let (ada, _, direct) = ada_and_bob(&app).await;
    uploaded(&ada, &direct, "before.bin", &[1; 1000]).await;

    let filler = disk.fill();
    let refused = upload(&ada, &direct, "after.bin", &vec![2; 3 << 20]).await;
    assert_eq!(
        expect_error(refused, StatusCode::INSUFFICIENT_STORAGE).await,
        "storage_full"
    );
    let stored = |dir: &Path| std::fs::read_dir(dir.join("originals")).map_or(0, Iterator::count);
    assert_eq!(stored(&store), 1, "nothing half-written");

    std::fs::remove_file(filler).expect("the filler goes");
    uploaded(&ada, &direct, "later.bin", &vec![3; 3 << 20]).await;
    assert_eq!(stored(&store), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_orphan_sweep_deletes_old_objects_no_row_names_and_nothing_else() {
    let app = TestApp::start(&[
        "--chat-attachment-unclaimed-ttl=4s",
        "--chat-attachment-sweep-interval=1s",
    ])
    .await;
    let (ada, _, direct) = ada_and_bob(&app).await;
    let kept = uploaded(&ada, &direct, "kept.txt", b"kept").await;
    send_with(&ada, &direct, "", &[text(&kept, "id")]).await;
    // Objects no row names (a database restored from an older backup leaves such): one
    // older than the sweep's grace, one younger (it may be an upload's, so it waits).
    let write = |age: std::time::Duration| {
        let path = original(&app.data_dir, &uuid::Uuid::now_v7().to_string());
        std::fs::write(&path, b"orphan").expect("the object is written");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(std::time::SystemTime::now() - age))
            .expect("its time is set");
        path
    };
    let old = write(std::time::Duration::from_secs(2 * 3600));
    let young = write(std::time::Duration::ZERO);
    eventually("the old orphan is swept", || async { !old.exists() }).await;
    assert!(young.exists(), "an object younger than the grace stays");
    assert!(
        original(&app.data_dir, text(&kept, "id")).exists(),
        "a sent file stays"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_streams_at_most_four_uploads_at_once() {
    let app = TestApp::start(&[]).await;
    let (ada, bob, direct) = ada_and_bob(&app).await;
    // Four uploads whose bodies stop after the part's header: each holds its place.
    let mut senders = Vec::new();
    let mut stalled = Vec::new();
    for n in 0..4 {
        let (sender, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow{n}.bin\"\r\n\r\n"
        );
        sender
            .send(Ok(head.into_bytes()))
            .await
            .expect("the body takes its first chunk");
        senders.push(sender);
        let request = ada
            .client
            .post(format!("{}{}", ada.base, uploads_path(&direct)))
            .bearer_auth(&ada.token)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(body),
            ));
        stalled.push(tokio::spawn(request.send()));
    }
    // Their headers reach the broker, which takes their places (nothing else can tell).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        stalled.iter().all(|request| !request.is_finished()),
        "the four stalled uploads are in flight"
    );
    let refused = upload(&ada, &direct, "fifth.txt", b"fifth").await;
    assert!(refused.headers().get(header::RETRY_AFTER).is_some());
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    // Another user is not held up by them.
    uploaded(&bob, &direct, "bobs.txt", b"bob's").await;
    // The stalled uploads end cut short: their places come back, nothing of them is kept.
    drop(senders);
    for upload in stalled {
        let answer = upload.await.expect("the request task ends");
        if let Ok(answer) = answer {
            assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        }
    }
    uploaded(&ada, &direct, "after.txt", b"after").await;
    eventually("only the two finished uploads are stored", || async {
        objects(&app.data_dir).len() == 2
    })
    .await;
    app.stop().await;
}
