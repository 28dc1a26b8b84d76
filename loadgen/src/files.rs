//! `loadgen files`: attachments through the broker (issue 30). Many uploads at once of
//! one large file each — throughput in MB/s and how much the server's resident memory
//! grows meanwhile (streamed, the growth stays far below what the files add up to) — then
//! many downloads at once of one image's thumbnail, with their latency.
//!
//! Every upload and download has a connection of its own, all started together: the
//! worst case for memory (every stream in flight at once), not a realistic arrival
//! pattern; the figures are capacity figures.

use crate::{
    http::{Connection, discard_body, read_body},
    target::LoopbackUrl,
    ws::{enrol, rss_kib},
};
use anyhow::{Context, Result, ensure};
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::{
    Method, Request, StatusCode,
    body::Bytes,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The broker.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    broker: String,
    /// Uploads at once.
    #[arg(long, default_value_t = 100)]
    uploads: usize,
    /// Size of each upload, in MiB.
    #[arg(long = "size-mib", default_value_t = 10)]
    size_mib: usize,
    /// Thumbnail downloads at once.
    #[arg(long, default_value_t = 1000)]
    downloads: usize,
    /// The server process (the all-in-one, or the broker), for its memory figures.
    #[arg(long = "server-pid")]
    server_pid: Option<u32>,
}

/// The multipart boundary of every upload.
const BOUNDARY: &str = "loadgen-files-boundary";

/// One multipart body with one file of `size` bytes (the same bytes for every upload: a
/// `Bytes` shares them, so loadgen holds one copy however many uploads run).
fn form(name: &str, content: &[u8]) -> Bytes {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

/// A PNG photo-like image of `width` × `height` (noise compresses like a photo does).
fn photo(width: u32, height: u32) -> Result<Vec<u8>> {
    let mut state = 0x2545_f491_u32;
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [noise, ..] = state.to_le_bytes();
        let byte = |value: u32| u8::try_from(value % 256).unwrap_or(0);
        image::Rgb([byte(x / 4) ^ noise, byte(y / 4), byte((x + y) / 8)])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

/// POSTs `body` to the conversation's attachments: the attachment's id.
async fn upload(
    broker: &LoopbackUrl,
    token: &HeaderValue,
    conversation: &str,
    body: Bytes,
) -> Result<String> {
    let mut connection = Connection::open(broker).await?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() =
        broker.uri_for(&format!("/api/conversations/{conversation}/attachments"))?;
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, token.clone());
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/form-data; boundary={BOUNDARY}"))?,
    );
    let response = connection.send(request).await?;
    let status = response.status();
    let answer = read_body(response.into_body()).await?;
    ensure!(
        status == StatusCode::CREATED,
        "upload answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["id"]
        .as_str()
        .context("no attachment id")?
        .to_owned())
}

/// GETs `path` on a connection of its own; its latency.
async fn download(broker: &LoopbackUrl, token: &HeaderValue, path: &str) -> Result<Duration> {
    let mut connection = Connection::open(broker).await?;
    let started = Instant::now();
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = broker.uri_for(path)?;
    request.headers_mut().insert(AUTHORIZATION, token.clone());
    let response = connection.send(request).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "download answered {}",
        response.status()
    );
    discard_body(response.into_body()).await?;
    Ok(started.elapsed())
}

/// Samples the server's RSS every 50 ms while `running`; the largest, in KiB.
fn watch_rss(pid: Option<u32>, running: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let Some(pid) = pid else {
            return 0;
        };
        let mut peak = 0;
        while running.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    })
}

/// Runs the scenario and prints its figures (one JSON line last).
pub async fn run(args: Args) -> Result<()> {
    let broker = LoopbackUrl::parse(&args.broker)?;
    let run = format!("{:x}", fastrand::u32(..));
    // One user per upload, each in a room of their own (a user has at most four uploads
    // in flight on a broker).
    let mut enrolling = JoinSet::new();
    for index in 0..args.uploads.max(1) {
        let (broker, run) = (broker.clone(), run.clone());
        enrolling.spawn(async move {
            enrol(
                &broker,
                &run,
                index,
                "loadgen-files-password",
                String::new(),
            )
            .await
        });
    }
    let mut users = Vec::with_capacity(args.uploads.max(1));
    while let Some(enrolled) = enrolling.join_next().await {
        let member = enrolled??;
        users.push((
            HeaderValue::from_str(&format!("Bearer {}", member.token))?,
            member.room,
        ));
    }
    let (token, room) = users[0].clone();
    let content: Vec<u8> = (0..args.size_mib * 1024 * 1024)
        .map(|n| u8::try_from(n % 251).unwrap_or(0))
        .collect();
    let body = form("load.bin", &content);
    drop(content);
    // The quota (1 GiB by default) must hold every upload of the run.
    let total = u64::try_from(args.uploads * args.size_mib).unwrap_or(u64::MAX) * 1024 * 1024;

    // One upload first: the connections and the store warm, the code paged in.
    upload(&broker, &token, &room, body.clone()).await?;
    let rss_before = args.server_pid.map(rss_kib).transpose()?.unwrap_or(0);
    let running = Arc::new(AtomicBool::new(true));
    let peak = watch_rss(args.server_pid, Arc::clone(&running));
    let started = Instant::now();
    let mut uploads = JoinSet::new();
    let slowest = Arc::new(AtomicU64::new(0));
    for (token, room) in users.iter().take(args.uploads) {
        let (broker, body) = (broker.clone(), body.clone());
        let (token, room) = (token.clone(), room.clone());
        let slowest = Arc::clone(&slowest);
        uploads.spawn(async move {
            let began = Instant::now();
            let id = upload(&broker, &token, &room, body).await;
            let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            slowest.fetch_max(micros, Ordering::Relaxed);
            id
        });
    }
    let mut failed = 0;
    while let Some(done) = uploads.join_next().await {
        if let Err(error) = done? {
            failed += 1;
            eprintln!("upload failed: {error:#}");
        }
    }
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let rss_peak = peak.await?;
    let stored = u64::try_from(args.uploads - failed).unwrap_or(0)
        * u64::try_from(args.size_mib).unwrap_or(0);
    let mb_per_s = stored as f64 * 1.048_576 / elapsed.as_secs_f64();
    eprintln!(
        "{} uploads of {} MiB at once ({} failed; {total} bytes offered): {:.2} s, {mb_per_s:.0} MB/s; \
         slowest upload {:.2} s; server RSS {rss_before} KiB before, peak {rss_peak} KiB (+{:.1} MiB)",
        args.uploads,
        args.size_mib,
        failed,
        elapsed.as_secs_f64(),
        Duration::from_micros(slowest.load(Ordering::Relaxed)).as_secs_f64(),
        rss_peak.saturating_sub(rss_before) as f64 / 1024.0,
    );

    // Thumbnails: one image, downloaded by many at once (the first made it).
    let image = photo(2400, 1600)?;
    let image_id = upload(&broker, &token, &room, form("photo.png", &image)).await?;
    let path = format!("/api/attachments/{image_id}/thumbnail");
    let first = download(&broker, &token, &path).await?;
    let mut downloads = JoinSet::new();
    let started = Instant::now();
    for _ in 0..args.downloads {
        let (broker, token, path) = (broker.clone(), token.clone(), path.clone());
        downloads.spawn(async move { download(&broker, &token, &path).await });
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut download_failures = 0;
    while let Some(done) = downloads.join_next().await {
        match done? {
            Ok(latency) => {
                histogram.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))?;
            }
            Err(error) => {
                download_failures += 1;
                eprintln!("download failed: {error:#}");
            }
        }
    }
    let download_elapsed = started.elapsed();
    let ms = |micros: u64| micros as f64 / 1000.0;
    eprintln!(
        "{} thumbnail downloads at once ({download_failures} failed) in {:.2} s: p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms (the first, which made it: {:.1} ms)",
        args.downloads,
        download_elapsed.as_secs_f64(),
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        first.as_secs_f64() * 1000.0,
    );
    println!(
        "{}",
        json!({
            "scenario": "files",
            "cores": std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            "uploads": args.uploads,
            "size_mib": args.size_mib,
            "upload_failures": failed,
            "upload_seconds": elapsed.as_secs_f64(),
            "upload_mb_per_s": mb_per_s,
            "slowest_upload_seconds": Duration::from_micros(slowest.load(Ordering::Relaxed)).as_secs_f64(),
            "server_rss_before_kib": rss_before,
            "server_rss_peak_kib": rss_peak,
            "server_rss_growth_mib": rss_peak.saturating_sub(rss_before) as f64 / 1024.0,
            "downloads": args.downloads,
            "download_failures": download_failures,
            "thumbnail_p50_ms": ms(histogram.value_at_quantile(0.5)),
            "thumbnail_p99_ms": ms(histogram.value_at_quantile(0.99)),
            "thumbnail_max_ms": ms(histogram.max()),
            "first_thumbnail_ms": first.as_secs_f64() * 1000.0,
        })
    );
    ensure!(
        failed == 0 && download_failures == 0,
        "{failed} uploads and {download_failures} downloads failed"
    );
    Ok(())
}
