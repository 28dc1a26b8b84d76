//! The attachments' object store: one contract, run on both adapters — the local
//! filesystem (a temporary directory) and S3 (a real moto server) — and the local adapter
//! on a disk that fills up. Every failed upload must leave nothing behind: no object, no
//! staging file, no open multipart upload.

use bytes::Bytes;
use chat::attachments::objects::{ObjectError, Objects};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use platform::testing::{Moto, in_ci};
use std::{path::PathBuf, process::Command, time::Duration};
use uuid::Uuid;

const MIB: usize = 1024 * 1024;

/// Where a contract runs, and how to see what an adapter left behind.
enum Backend {
    Local { dir: PathBuf },
    S3 { moto: Moto },
}

impl Backend {
    fn local() -> Self {
        let dir = std::env::temp_dir().join(format!("microchat-objects-{}", Uuid::new_v4()));
        Self::Local { dir }
    }

    fn objects(&self) -> Objects {
        match self {
            Self::Local { dir } => Objects::from_url(&format!("file://{}", dir.display()))
                .expect("a local object store opens"),
            Self::S3 { moto } => Objects::from_url_with_keys(
                &moto.url(),
                Moto::ACCESS_KEY_ID,
                Moto::SECRET_ACCESS_KEY,
            )
            .expect("the S3 object store opens"),
        }
    }

    /// Everything stored, as the adapter's medium sees it: files under the directory
    /// (staging files included), or objects and open multipart uploads in the bucket.
    async fn everything(&self, objects: &Objects) -> Vec<String> {
        match self {
            Self::Local { dir } => files_under(dir),
            Self::S3 { moto } => {
                let mut all = Vec::new();
                for prefix in ["originals", "thumbnails"] {
                    let listed: Vec<_> = objects
                        .list(prefix)
                        .try_collect()
                        .await
                        .expect("the bucket lists");
                    all.extend(listed.into_iter().map(|listed| listed.key));
                }
                let open = moto
                    .open_multipart_uploads()
                    .await
                    .expect("moto lists multipart uploads");
                all.extend((0..open).map(|n| format!("open multipart upload {n}")));
                all
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Self::Local { dir } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// `len` bytes of a pattern that differs from part to part, in chunks of `chunk` bytes.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|n| u8::try_from((n / 1000 + n) % 251).expect("below 251"))
        .collect()
}

fn chunks(bytes: &[u8], chunk: usize) -> impl Stream<Item = Result<Bytes, String>> + use<> {
    let chunks: Vec<_> = bytes
        .chunks(chunk)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    stream::iter(chunks)
}

async fn read(objects: &Objects, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let pieces: Vec<Bytes> = objects
        .get(key, range)
        .await
        .expect("the object is there")
        .try_collect()
        .await
        .expect("the object streams");
    pieces.concat()
}

/// The contract every adapter keeps.
async fn contract(backend: &Backend) {
    let objects = backend.objects();
    objects.ping().await.expect("the store answers");

    // A small upload is one object, read whole or by range.
    let small = Objects::original_key(Uuid::now_v7());
    let stored = objects
        .put_stream(&small, chunks(b"hello world", 4), 1024)
        .await
        .expect("a small upload is stored");
    assert_eq!(stored.size, 11);
    assert_eq!(objects.head(&small).await.expect("head"), 11);
    assert_eq!(read(&objects, &small, None).await, b"hello world");
    assert_eq!(read(&objects, &small, Some(6..11)).await, b"world");

    // A large upload goes in parts (S3's are 5 MiB) and comes back byte for byte.
    let large_bytes = content(12 * MIB + 123);
    let large = Objects::original_key(Uuid::now_v7());
    let stored = objects
        .put_stream(
            &large,
            chunks(&large_bytes, 64 * 1024 + 7),
            25 * 1024 * 1024,
        )
        .await
        .expect("a multi-part upload is stored");
    assert_eq!(stored.size, 12 * 1024 * 1024 + 123);
    assert_eq!(objects.head(&large).await.expect("head"), stored.size);
    assert!(
        read(&objects, &large, None).await == large_bytes,
        "the large object differs"
    );
    let across = (5 * MIB - 10) as u64..(5 * MIB + 10) as u64;
    assert_eq!(
        read(&objects, &large, Some(across)).await,
        large_bytes[5 * MIB - 10..5 * MIB + 10]
    );

    let before_failures = backend.everything(&objects).await;

    // Over the limit, before and after the multipart upload started: refused, nothing left.
    for (len, limit) in [(2048, 1024), (12 * MIB, 10 * MIB)] {
        let key = Objects::original_key(Uuid::now_v7());
        let refused = objects
            .put_stream(&key, chunks(&content(len), 256 * 1024), limit as u64)
            .await;
        assert!(
            matches!(refused, Err(ObjectError::TooLarge { max_bytes }) if max_bytes == limit as u64),
            "{refused:?}"
        );
        assert!(matches!(
            objects.head(&key).await,
            Err(ObjectError::NotFound)
        ));
    }

    // The client's stream fails half-way (after a part was written): nothing left.
    for written in [100, 6 * MIB] {
        let key = Objects::original_key(Uuid::now_v7());
        let failing = chunks(&content(written), 256 * 1024).chain(stream::once(async {
            Err("the client went away".to_owned())
        }));
        let failed = objects.put_stream(&key, failing, 25 * 1024 * 1024).await;
        assert!(
            matches!(&failed, Err(ObjectError::Source(why)) if why == "the client went away"),
            "{failed:?}"
        );
        assert!(matches!(
            objects.head(&key).await,
            Err(ObjectError::NotFound)
        ));
    }

    // The caller gives up half-way (its future is dropped): the upload is aborted.
    let key = Objects::original_key(Uuid::now_v7());
    let stalled = chunks(&content(6 * MIB), 256 * 1024).chain(stream::pending());
    let gave_up = tokio::time::timeout(
        Duration::from_secs(2),
        objects.put_stream(&key, stalled, 25 * 1024 * 1024),
    )
    .await;
    assert!(gave_up.is_err(), "the stalled upload cannot finish");
    let mut left = backend.everything(&objects).await;
    for _ in 0..100 {
        if left == before_failures {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = backend.everything(&objects).await;
    }
    assert_eq!(
        left, before_failures,
        "failed uploads left something behind"
    );

    // Thumbnails are written whole; listing is by prefix.
    let id = Uuid::now_v7();
    let thumbnail = Objects::thumbnail_key(id);
    objects
        .put(&thumbnail, Bytes::from_static(b"a thumbnail"))
        .await
        .expect("a thumbnail is stored");
    assert_eq!(read(&objects, &thumbnail, None).await, b"a thumbnail");
    let listed: Vec<_> = objects
        .list("thumbnails")
        .try_collect()
        .await
        .expect("thumbnails list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, thumbnail);
    assert_eq!(listed[0].size, 11);
    assert!(listed[0].last_modified <= chrono::Utc::now());
    let mut originals: Vec<_> = objects
        .list("originals")
        .map_ok(|listed| (listed.key, listed.size))
        .try_collect()
        .await
        .expect("originals list");
    originals.sort();
    let mut expected = vec![(small.clone(), 11), (large.clone(), stored.size)];
    expected.sort();
    assert_eq!(originals, expected);

    // Deleting is idempotent, and a deleted object is gone.
    for key in [&small, &large, &thumbnail] {
        objects.delete(key).await.expect("deleted");
        objects.delete(key).await.expect("deleted again");
        assert!(matches!(
            objects.head(key).await,
            Err(ObjectError::NotFound)
        ));
        assert!(matches!(
            objects.get(key, None).await.map(|_| ()),
            Err(ObjectError::NotFound)
        ));
    }
    assert_eq!(
        objects.list("originals").count().await,
        0,
        "nothing is listed after deletion"
    );
}

#[tokio::test]
async fn the_local_filesystem_keeps_the_object_store_contract() {
    contract(&Backend::local()).await;
}

#[tokio::test]
async fn s3_keeps_the_object_store_contract() {
    let Some(moto) = Moto::start().await.expect("moto starts") else {
        return;
    };
    contract(&Backend::S3 { moto }).await;
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_is_unavailable() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a loopback port is free")
        .port();
    let url = format!("s3://nowhere?endpoint=http://127.0.0.1:{dead_port}&allow_http=true");
    let objects = Objects::from_url_with_keys(&url, "id", "secret").expect("the URL is valid");
    let answer = objects.ping().await;
    assert!(
        matches!(answer, Err(ObjectError::Unavailable(_))),
        "{answer:?}"
    );
    let debug = format!("{objects:?}");
    assert!(!debug.contains("secret"), "{debug} shows a secret");
}

#[test]
fn object_store_urls_are_checked() {
    assert!(Objects::from_url("ftp://somewhere/attachments").is_err());
    assert!(Objects::from_url("s3://").is_err());
    assert!(Objects::from_url("s3://bucket/path").is_err());
    assert!(Objects::from_url("s3://bucket?access_key_id=AKIA").is_err());
    let backend = Backend::local();
    let Backend::Local { dir } = &backend else {
        unreachable!("a local backend")
    };
    Objects::from_url(&dir.join("nested/attachments").display().to_string())
        .expect("a plain path opens, its directories created");
    assert!(dir.join("nested/attachments").is_dir());
}

/// A tmpfs mounted for one test, unmounted when dropped (as tests/disk_full.rs does).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` (skipped, saying so) when this process may not mount; in CI that fails.
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("microchat-small-disk-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            let _ = std::fs::remove_dir(&dir);
            let why = "cannot mount a tmpfs (needs root and mount(8))";
            assert!(!in_ci(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_full_disk_refuses_uploads_as_full_and_leaves_nothing() {
    let Some(disk) = SmallDisk::mount(4) else {
        return;
    };
    let objects = Objects::from_url(&disk.dir.display().to_string()).expect("the store opens");
    let key = Objects::original_key(Uuid::now_v7());
    let refused = objects
        .put_stream(
            &key,
            chunks(&content(8 * MIB), 256 * 1024),
            25 * 1024 * 1024,
        )
        .await;
    assert!(matches!(refused, Err(ObjectError::Full)), "{refused:?}");
    assert!(matches!(
        objects.head(&key).await,
        Err(ObjectError::NotFound)
    ));
    assert_eq!(files_under(&disk.dir), Vec::<String>::new());

    let thumbnail = Objects::thumbnail_key(Uuid::now_v7());
    let refused = objects.put(&thumbnail, Bytes::from(content(8 * MIB))).await;
    assert!(matches!(refused, Err(ObjectError::Full)), "{refused:?}");
    assert_eq!(files_under(&disk.dir), Vec::<String>::new());

    // The store goes on serving what fits.
    objects
        .put_stream(&key, chunks(&content(MIB), 64 * 1024), 25 * 1024 * 1024)
        .await
        .expect("an upload that fits is stored");
    assert_eq!(objects.head(&key).await.expect("head"), MIB as u64);
}
