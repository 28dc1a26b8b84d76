//! The object store holding attachments' bytes: one port ([`Objects`]), two adapters
//! from the `object_store` crate — the local filesystem (the all-in-one's
//! `./data/attachments`) and any S3-compatible bucket (MinIO in the dev stack, S3 in the
//! cluster). A URL picks the adapter, as for every other port (docs/ARCHITECTURE.md,
//! "Ports and adapters").
//!
//! Uploads are streamed: [`Objects::put_stream`] holds at most one part being filled
//! and one being written, never the whole file, and counts bytes as they come, so an
//! oversized upload is refused as soon as it crosses the limit. Whatever goes wrong — too
//! large, the client's stream failing, a full disk, the caller giving up — the upload is
//! aborted and no object is left, half-written or otherwise.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload, RetryConfig,
    aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};
use std::{fmt, ops::Range, pin::pin, sync::Arc, time::Duration};
use uuid::Uuid;

/// Where an attachment's original lives: `originals/<id>`.
pub const ORIGINALS: &str = "originals";
/// Where an attachment's thumbnail lives: `thumbnails/<id>`.
pub const THUMBNAILS: &str = "thumbnails";

/// S3's smallest part (but the last): parts of an S3 multipart upload are this big.
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
/// The local filesystem takes parts of any size: smaller ones hold less memory per upload.
const LOCAL_PART_BYTES: usize = 1024 * 1024;

/// `raw_os_error` of "no space left on device" (ENOSPC) on Linux and the BSDs.
const ENOSPC: i32 = 28;

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object under that key.
    #[error("no such object")]
    NotFound,
    /// The upload was larger than its limit; nothing was stored.
    #[error("the upload is larger than {max_bytes} bytes")]
    TooLarge {
        /// The limit it crossed.
        max_bytes: u64,
    },
    /// No space left on the local filesystem; nothing was stored.
    #[error("no space left to store the object")]
    Full,
    /// The store could not be reached or failed on its side (network, timeouts, 5xx).
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
    /// The stream of the upload's bytes failed (the client went away); nothing was stored.
    #[error("the upload's bytes could not be read: {0}")]
    Source(String),
    /// Anything else (an invalid key, a refused request).
    #[error("object store error: {0}")]
    Other(String),
}

/// What [`Objects::put_stream`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its size in bytes.
    pub size: u64,
}

/// One object found by [`Objects::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key, e.g. `originals/<uuid>`.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
}

/// The attachments' object store: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Bytes per part of a multipart upload, and so the most one upload buffers.
    part_bytes: usize,
    /// What it is, for logs: never a secret.
    describe: Arc<str>,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the S3 adapter's own Debug would print its credentials.
        f.debug_struct("Objects")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

impl Objects {
    /// Opens the store a URL names: a path or `file://<path>` (the directory is created),
    /// or `s3://<bucket>` with the rest from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`) or from the
    /// URL's query (`?endpoint=...&region=...&allow_http=true`; no secrets there).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        Self::open(url, None)
    }

    /// Like [`Objects::from_url`], with the S3 credentials given instead of read from the
    /// environment (tests, and callers reading them from files).
    pub fn from_url_with_keys(
        url: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> anyhow::Result<Self> {
        Self::open(url, Some((access_key_id, secret_access_key)))
    }

    fn open(url: &str, keys: Option<(&str, &str)>) -> anyhow::Result<Self> {
        if let Some(bucket) = url.strip_prefix("s3://") {
            return Self::s3(bucket, keys);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        anyhow::ensure!(
            !path.contains("://"),
            "unsupported object store URL scheme (use a path, file:// or s3://)"
        );
        anyhow::ensure!(!path.is_empty(), "the object store path is empty");
        std::fs::create_dir_all(path).map_err(|error| {
            anyhow::anyhow!("creating the attachments directory {path}: {error}")
        })?;
        let store = LocalFileSystem::new_with_prefix(path)?;
        Ok(Self {
            store: Arc::new(store),
            part_bytes: LOCAL_PART_BYTES,
            describe: format!("local filesystem at {path}").into(),
        })
    }

    fn s3(bucket_and_query: &str, keys: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let (bucket, query) = bucket_and_query
            .split_once('?')
            .unwrap_or((bucket_and_query, ""));
        anyhow::ensure!(
            !bucket.is_empty() && !bucket.contains('/'),
            "an S3 URL is s3://<bucket>, with no path"
        );
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // A readiness probe or an upload against a dead endpoint fails within
            // seconds instead of the crate's default of retrying for three minutes.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            });
        let mut endpoint = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            builder = match key {
                "endpoint" => {
                    endpoint = Some(value.to_owned());
                    builder.with_endpoint(value)
                }
                "region" => builder.with_region(value),
                "allow_http" => builder.with_allow_http(value == "true"),
                _ => anyhow::bail!(
                    "unknown S3 URL option {key:?} (endpoint, region and allow_http are known)"
                ),
            };
        }
        if let Some((access_key_id, secret_access_key)) = keys {
            builder = builder
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key);
        }
        let store = builder.build()?;
        let describe = match endpoint {
            Some(endpoint) => format!("S3 bucket {bucket} at {endpoint}"),
            None => format!("S3 bucket {bucket}"),
        };
        Ok(Self {
            store: Arc::new(store),
            part_bytes: S3_PART_BYTES,
            describe: describe.into(),
        })
    }

    /// The key of an attachment's original bytes.
    pub fn original_key(id: Uuid) -> String {
        format!("{ORIGINALS}/{id}")
    }

    /// The key of an attachment's thumbnail.
    pub fn thumbnail_key(id: Uuid) -> String {
        format!("{THUMBNAILS}/{id}")
    }

    /// Streams `chunks` into the object `key`, refusing it once it exceeds `max_bytes`.
    ///
    /// Memory stays bounded (one part being filled, one being written). On any error the
    /// upload is aborted and no object is left: [`ObjectError::TooLarge`], the stream's
    /// own error as [`ObjectError::Source`], or the store's. If the returned future is
    /// dropped half-way, the upload is aborted in the background.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        chunks: S,
        max_bytes: u64,
    ) -> Result<Stored, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: fmt::Display,
    {
        let location = location(key)?;
        let mut upload = None;
        let stored = self
            .stream_parts(&location, chunks, max_bytes, &mut upload)
            .await;
        if stored.is_err()
            && let Some(upload) = upload
        {
            upload.abort().await;
        }
        stored
    }

    /// The body of [`Objects::put_stream`]; `upload` is the multipart upload once started,
    /// left for the caller to abort on error.
    async fn stream_parts<S, E>(
        &self,
        location: &Path,
        chunks: S,
        max_bytes: u64,
        upload: &mut Option<Upload>,
    ) -> Result<Stored, ObjectError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: fmt::Display,
    {
        let mut chunks = pin!(chunks);
        let mut part = Part::default();
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| ObjectError::Source(error.to_string()))?;
            size = size.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if size > max_bytes {
                return Err(ObjectError::TooLarge { max_bytes });
            }
            part.push(chunk);
            while part.len >= self.part_bytes {
                let full = part.take(self.part_bytes);
                if upload.is_none() {
                    // Started only once a whole part is there: a small file is one put.
                    let started = self.store.put_multipart(location).await;
                    *upload = Some(Upload::new(started.map_err(classify)?));
                }
                if let Some(upload) = upload.as_mut() {
                    upload.send(full).await?;
                }
            }
        }
        match upload.as_mut() {
            None => {
                let payload: PutPayload = part.chunks.into_iter().collect();
                self.store.put(location, payload).await.map_err(classify)?;
            }
            Some(upload) => {
                if part.len > 0 {
                    upload.send(part.chunks.into_iter().collect()).await?;
                }
                upload.complete().await?;
            }
        }
        Ok(Stored { size })
    }

    /// Writes a small object whole (thumbnails); replaces one already there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.store
            .put(&location(key)?, PutPayload::from_bytes(bytes))
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Streams an object, or the byte `range` of it (end exclusive; the caller checked it
    /// against the object's size). A missing object is [`ObjectError::NotFound`] here,
    /// before any bytes.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, ObjectError>>, ObjectError> {
        if let Some(range) = &range
            && range.start >= range.end
        {
            return Err(ObjectError::Other(format!(
                "empty byte range {}..{}",
                range.start, range.end
            )));
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = self
            .store
            .get_opts(&location(key)?, options)
            .await
            .map_err(classify)?;
        Ok(found.into_stream().map_err(classify).boxed())
    }

    /// The size of an object.
    pub async fn head(&self, key: &str) -> Result<u64, ObjectError> {
        let meta = self.store.head(&location(key)?).await.map_err(classify)?;
        Ok(meta.size)
    }

    /// Deletes an object. Deleting a missing one is fine: deletion is retried by the
    /// durable event path and must be idempotent.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&location(key)?).await.map_err(classify) {
            Ok(()) | Err(ObjectError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Every object under `prefix` (a whole key segment, such as `originals`), for the
    /// orphan sweep.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<Listed, ObjectError>> {
        let prefix = match location(prefix) {
            Ok(prefix) => prefix,
            Err(error) => return futures::stream::once(async { Err(error) }).boxed(),
        };
        self.store
            .list(Some(&prefix))
            .map(|meta| {
                let meta = meta.map_err(classify)?;
                Ok(Listed {
                    key: meta.location.to_string(),
                    size: meta.size,
                    last_modified: meta.last_modified,
                })
            })
            .boxed()
    }

    /// Readiness: the store answers (asking for an object that does not exist).
    pub async fn ping(&self) -> Result<(), ObjectError> {
        match self.head("readiness-probe").await {
            Ok(_) | Err(ObjectError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A key as the store's path; keys are made here, so an invalid one is a caller's bug.
fn location(key: &str) -> Result<Path, ObjectError> {
    Path::parse(key).map_err(|error| ObjectError::Other(format!("invalid key {key:?}: {error}")))
}

/// The chunks of the part being filled.
#[derive(Default)]
struct Part {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Part {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Takes exactly `bytes` bytes off the front (equal parts suit every S3 server).
    fn take(&mut self, bytes: usize) -> PutPayload {
        let mut taken = Vec::new();
        let mut wanted = bytes;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut chunk in rest.by_ref() {
            if chunk.len() > wanted {
                taken.push(chunk.split_to(wanted));
                self.chunks.push(chunk);
                wanted = 0;
                break;
            }
            wanted -= chunk.len();
            taken.push(chunk);
            if wanted == 0 {
                break;
            }
        }
        self.chunks.extend(rest);
        self.len -= bytes - wanted;
        taken.into_iter().collect()
    }
}

/// A multipart upload in progress, with at most one part being written. Dropped before
/// it completed (the caller gave up), it aborts itself in the background.
struct Upload {
    upload: Option<Box<dyn MultipartUpload>>,
    writing: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
}

impl Upload {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Self {
            upload: Some(upload),
            writing: None,
        }
    }

    /// Waits for the part being written, then starts writing this one.
    async fn send(&mut self, part: PutPayload) -> Result<(), ObjectError> {
        self.written().await?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(ObjectError::Other("the upload has ended".to_owned()));
        };
        // Spawned, so the part is written while the next one is read from the stream.
        self.writing = Some(tokio::spawn(upload.put_part(part)));
        Ok(())
    }

    async fn written(&mut self) -> Result<(), ObjectError> {
        if let Some(writing) = self.writing.take() {
            writing
                .await
                .map_err(|error| ObjectError::Other(format!("writing a part failed: {error}")))?
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), ObjectError> {
        self.written().await?;
        let Some(upload) = self.upload.as_mut() else {
            return Err(ObjectError::Other("the upload has ended".to_owned()));
        };
        upload.complete().await.map_err(classify)?;
        self.upload = None;
        Ok(())
    }

    /// Stops the part being written and removes every part written so far.
    async fn abort(mut self) {
        if let Some(writing) = self.writing.take() {
            writing.abort();
            let _ = writing.await;
        }
        if let Some(mut upload) = self.upload.take()
            && let Err(error) = upload.abort().await
        {
            tracing::warn!(%error, "could not abort an attachment upload");
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writing) = self.writing.take() {
            writing.abort();
        }
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = upload.abort().await {
                    tracing::warn!(%error, "could not abort an abandoned attachment upload");
                }
            });
        }
    }
}

/// Sorts the crate's errors into what callers act on.
fn classify(error: object_store::Error) -> ObjectError {
    match error {
        object_store::Error::NotFound { .. } => ObjectError::NotFound,
        error if is_disk_full(&error) => ObjectError::Full,
        object_store::Error::Generic {
            store: "S3",
            source,
        } => {
            if is_client_error(&*source) {
                ObjectError::Other(source.to_string())
            } else {
                ObjectError::Unavailable(source.to_string())
            }
        }
        // The crate's messages already include their causes.
        error => ObjectError::Other(error.to_string()),
    }
}

/// ENOSPC anywhere in the chain (the local adapter wraps the io error it got).
fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    sources(error).any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.raw_os_error() == Some(ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull
        })
    })
}

/// A 4xx answer from S3 (credentials, a bad request): our side's fault, not an outage.
/// The crate keeps the status in a type it does not export, so its message is read.
fn is_client_error(error: &(dyn std::error::Error + 'static)) -> bool {
    sources(error).any(|cause| {
        let message = cause.to_string();
        message
            .split_once("status code: ")
            .is_some_and(|(_, status)| status.starts_with('4'))
    })
}

fn sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| cause.source())
}
