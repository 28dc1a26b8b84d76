//! What chat does with files (docs/ARCHITECTURE.md, "Attachments"): an upload from its
//! first chunk to its row, downloads of a file or its thumbnail for members only, the
//! purge of removed attachments' objects (from their `attachment.removed` events), the
//! expiry of uploads no message claimed, and the sweep that finds objects without rows.

use super::{
    content::{self, ImageError, Kind, Sniffed},
    objects::{ORIGINALS, ObjectError, Objects, THUMBNAILS},
    thumbnails::Thumbnailer,
};
use crate::{
    conversations::{Chat, ChatError, now},
    domain::{Attachment, UserRef},
    store::{NewUpload, StoredAttachment, Upload},
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use std::{pin::pin, sync::Arc, time::Duration};
use uuid::Uuid;

/// The limits and periods of attachments (chat's `CHAT_ATTACHMENT_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Bytes of finished files one user may keep.
    pub quota: u64,
    /// Most pixels of an image (width × height), checked from its header before any
    /// decoding: a decompression bomb is refused at once.
    pub max_pixels: u64,
    /// How long an upload may wait for a message to claim it.
    pub unclaimed_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 25 * 1024 * 1024,
            quota: 1024 * 1024 * 1024,
            max_pixels: 40_000_000,
            unclaimed_ttl: Duration::from_secs(3600),
        }
    }
}

/// The size an upload may announce beyond the largest file: a multipart body's own
/// bytes (boundaries and part headers), which the broker cannot tell from the file's.
pub const DECLARED_SLACK: u64 = 16 * 1024;

/// Bytes read before anything is stored: enough for every image header the four decoders
/// read (a JPEG's size follows its EXIF block), and for the sniffing.
const HEAD_BYTES: usize = 256 * 1024;

/// Unclaimed uploads removed in one transaction (with one event).
const EXPIRED_AT_ONCE: u32 = 500;

/// Bytes per chunk of a download.
const CHUNK_BYTES: usize = 256 * 1024;

/// Where a file's bytes live and how they are checked: the object store, the thumbnail
/// pool and the limits.
#[derive(Debug, Clone)]
pub struct Files {
    /// The bytes.
    pub objects: Objects,
    /// Thumbnails, off the request path, a few at a time.
    pub thumbnailer: Thumbnailer,
    /// The limits.
    pub limits: Limits,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The file (or its announced size) is over the limit.
    #[error("the file is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The uploader's files would take more than their quota.
    #[error("your files would take more than your quota of {quota} bytes")]
    OverQuota {
        /// The quota, in bytes.
        quota: u64,
    },
    /// No bytes.
    #[error("the file is empty")]
    Empty,
    /// An image whose header cannot be read or says something impossible, or with more
    /// pixels than the limit.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The object store has no room left.
    #[error("the file store is full")]
    StorageFull,
    /// The object store failed or cannot be reached.
    #[error("the file store is unavailable: {0}")]
    Unavailable(String),
    /// The caller stopped sending (the upload was cancelled or cut short).
    #[error("the upload was cut short")]
    Cancelled,
    /// The stream broke the protocol (no `start` first, a second `start`).
    #[error("{0}")]
    Protocol(&'static str),
}

impl UploadError {
    /// A short stable name for what went wrong, for the broker to answer with the right
    /// HTTP status (it travels as the gRPC status's `error-reason` metadata).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::OverQuota { .. } => "quota_exceeded",
            Self::Empty => "empty_file",
            Self::Image(ImageError::TooManyPixels { .. }) => "too_many_pixels",
            Self::Image(ImageError::Damaged | ImageError::Encode(_)) => "damaged_image",
            Self::StorageFull => "storage_full",
            Self::Unavailable(_) => "storage_unavailable",
            Self::Cancelled => "cancelled",
            Self::Protocol(_) => "invalid_upload",
        }
    }
}

/// The object store's failures as chat's: a missing object is a missing attachment (its
/// row said it was there: it went meanwhile), anything else the store's trouble.
impl From<ObjectError> for ChatError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::NotFound => Self::NoSuchAttachment,
            other => Self::Upload(other.into()),
        }
    }
}

impl From<ObjectError> for UploadError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::Full => Self::StorageFull,
            ObjectError::Source(_) => Self::Cancelled,
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The first message of an upload.
#[derive(Debug, Clone)]
pub struct UploadStart {
    /// Who uploads.
    pub caller: UserRef,
    /// To which conversation.
    pub conversation: Uuid,
    /// The name the client gave (sanitised here).
    pub name: String,
    /// An upper bound of the size the client announced (0: unknown).
    pub declared_size: u64,
}

/// What a download serves.
#[derive(Debug, Clone)]
pub struct Download {
    /// The attachment.
    pub attachment: Attachment,
    /// Of the object served (a thumbnail's own type).
    pub content_type: String,
    /// Of the object served.
    pub size: u64,
    /// Pages may show it inline (an image or a thumbnail).
    pub inline: bool,
}

/// What the orphan sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects listed.
    pub objects: u64,
    /// Objects with no row (deleted).
    pub orphans: u64,
}

impl Files {
    /// The object key of attachment `id`'s file or thumbnail.
    fn key(id: Uuid, thumbnail: bool) -> String {
        if thumbnail {
            Objects::thumbnail_key(id)
        } else {
            Objects::original_key(id)
        }
    }
}

impl Chat {
    /// Stores one uploaded file: `start`, then `chunks` (its bytes in order, ending with
    /// the file; an error in the stream cancels the upload). Every check that needs no
    /// bytes comes before the first is read; nothing of a refused upload is kept.
    pub async fn upload<S>(
        self: &Arc<Self>,
        start: UploadStart,
        chunks: S,
    ) -> Result<Attachment, ChatError>
    where
        S: Stream<Item = Result<Bytes, String>> + Send + 'static,
    {
        let files = self.files();
        let limits = files.limits;
        if start.declared_size > limits.max_bytes.saturating_add(DECLARED_SLACK) {
            return Err(UploadError::TooLarge {
                limit: limits.max_bytes,
            }
            .into());
        }
        let conversation = start.conversation;
        if !self
            .store()
            .is_member(conversation, start.caller.id)
            .await?
        {
            return Err(ChatError::NotMember);
        }
        let announced = start.declared_size.saturating_sub(DECLARED_SLACK);
        if self
            .store()
            .quota_used(start.caller.id)
            .await?
            .saturating_add(announced)
            > limits.quota
        {
            return Err(UploadError::OverQuota {
                quota: limits.quota,
            }
            .into());
        }
        // The head: what the content type and an image's size are read from.
        // Fused: the head may have read the end already, and the store reads on after it.
        let mut chunks = chunks.boxed().fuse();
        let mut head = BytesMut::new();
        while head.len() < HEAD_BYTES {
            match chunks.next().await {
                Some(Ok(bytes)) => head.extend_from_slice(&bytes),
                Some(Err(_)) => return Err(UploadError::Cancelled.into()),
                None => break,
            }
            if u64::try_from(head.len()).unwrap_or(u64::MAX) > limits.max_bytes {
                return Err(UploadError::TooLarge {
                    limit: limits.max_bytes,
                }
                .into());
            }
        }
        if head.is_empty() {
            return Err(UploadError::Empty.into());
        }
        let head = head.freeze();
        let sniffed = content::sniff(&head);
        let dimensions = image_size(&sniffed, &head, limits.max_pixels)?;
        let attachment = Attachment {
            id: Uuid::now_v7(),
            conversation_id: conversation,
            uploader_id: start.caller.id,
            name: content::sanitize_name(&start.name),
            size: 0,
            content_type: sniffed.content_type.to_string(),
            dimensions,
            created_at: now(),
        };
        let new = NewUpload {
            attachment,
            quota: limits.quota,
        };
        // The row first: a crash from here on leaves an 'uploading' row, which expires
        // with its event, and the event deletes whatever object was written.
        let started = match self.store().start_upload(&new, announced).await? {
            Upload::Done(stored) => stored,
            Upload::NotMember | Upload::Gone => return Err(ChatError::NotMember),
            Upload::OverQuota => {
                return Err(UploadError::OverQuota {
                    quota: limits.quota,
                }
                .into());
            }
        };
        let id = started.attachment.id;
        let bytes = futures::stream::once(async move { Ok(head) }).chain(chunks);
        let stored = files
            .objects
            .put_stream(&Files::key(id, false), bytes, limits.max_bytes)
            .await;
        let refused = |error: UploadError| async move {
            self.drop_upload(id).await;
            Err(ChatError::from(error))
        };
        let size = match stored {
            Ok(stored) => stored.size,
            Err(ObjectError::TooLarge { .. }) => {
                return refused(UploadError::TooLarge {
                    limit: limits.max_bytes,
                })
                .await;
            }
            Err(error) => return refused(error.into()).await,
        };
        match self
            .store()
            .finish_upload(id, start.caller.id, size, limits.quota)
            .await
        {
            Ok(Upload::Done(stored)) => {
                tracing::info!(
                    attachment_id = %id,
                    conversation_id = %conversation,
                    size,
                    content_type = %stored.attachment.content_type,
                    "attachment uploaded"
                );
                metrics::counter!("chat_attachments_uploaded_total").increment(1);
                metrics::counter!("chat_attachment_bytes_uploaded_total").increment(size);
                if stored.attachment.is_image() {
                    // Made now, off the request path; a download that comes first makes
                    // it itself (whichever finishes first is kept: they are the same).
                    let chat = Arc::clone(self);
                    tokio::spawn(async move {
                        if let Err(error) = chat.thumbnail(id).await {
                            tracing::warn!(attachment_id = %id, %error, "no thumbnail made");
                        }
                    });
                }
                Ok(stored.attachment)
            }
            Ok(Upload::OverQuota) => {
                refused(UploadError::OverQuota {
                    quota: limits.quota,
                })
                .await
            }
            Ok(Upload::NotMember | Upload::Gone) => refused(UploadError::Cancelled).await,
            Err(error) => {
                self.drop_upload(id).await;
                Err(error.into())
            }
        }
    }

    /// Removes a refused upload: its row (with the event that deletes its object, should
    /// the deletion below fail or the process die first) and its object now.
    async fn drop_upload(&self, id: Uuid) {
        if let Err(error) = self
            .store()
            .remove_attachments(&[id], "upload_refused")
            .await
        {
            tracing::warn!(attachment_id = %id, %error, "cannot remove a refused upload's row; it expires");
        }
        self.outbox_waker().wake();
        if let Err(error) = self.files().objects.delete(&Files::key(id, false)).await {
            tracing::warn!(attachment_id = %id, %error, "cannot delete a refused upload's object; its event will");
        }
    }

    /// Attachment `id` as `caller` may see it: a member of its conversation, the file
    /// finished.
    async fn visible_attachment(
        &self,
        caller: &UserRef,
        id: Uuid,
    ) -> Result<StoredAttachment, ChatError> {
        let stored = self
            .store()
            .attachment(id)
            .await?
            .filter(|stored| stored.ready)
            .ok_or(ChatError::NoSuchAttachment)?;
        if !self
            .store()
            .is_member(stored.attachment.conversation_id, caller.id)
            .await?
        {
            return Err(ChatError::NoSuchAttachment);
        }
        Ok(stored)
    }

    /// What a download of attachment `id` (or its thumbnail) serves, for `caller`.
    pub async fn attachment(
        &self,
        caller: &UserRef,
        id: Uuid,
        thumbnail: bool,
    ) -> Result<Download, ChatError> {
        let stored = self.visible_attachment(caller, id).await?;
        if !thumbnail {
            let inline = stored.attachment.is_image();
            return Ok(Download {
                content_type: stored.attachment.content_type.clone(),
                size: stored.attachment.size,
                inline,
                attachment: stored.attachment,
            });
        }
        if !stored.attachment.is_image() {
            return Err(ChatError::NoSuchAttachment);
        }
        let (content_type, size) = match stored.thumbnail {
            Some(made) => made,
            None => match self.thumbnail(id).await {
                Ok(made) => made,
                // An image whose header reads (the upload reads no more) but whose pixels
                // do not decode has no thumbnail, as a file that is no image: the pages
                // show its file chip. Not a bad request: the caller asked for nothing wrong.
                Err(ChatError::Upload(UploadError::Image(error))) => {
                    tracing::info!(attachment_id = %id, %error, "no thumbnail: the image does not decode");
                    return Err(ChatError::NoSuchAttachment);
                }
                Err(error) => return Err(error),
            },
        };
        Ok(Download {
            attachment: stored.attachment,
            content_type,
            size,
            inline: true,
        })
    }

    /// The bytes of attachment `id` (or its thumbnail) from `offset`, `length` of them
    /// (all to the end when `None`), for `caller`.
    pub async fn read_attachment(
        &self,
        caller: &UserRef,
        id: Uuid,
        thumbnail: bool,
        offset: u64,
        length: Option<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, ChatError>>, ChatError> {
        let download = self.attachment(caller, id, thumbnail).await?;
        let end = length.map_or(download.size, |length| {
            offset.saturating_add(length).min(download.size)
        });
        if offset > end || (offset == end && download.size > 0) {
            return Err(ChatError::Invalid(crate::domain::Invalid {
                field: "offset",
                reason: "must lie within the file",
            }));
        }
        let stream = self
            .files()
            .objects
            .get(&Files::key(id, thumbnail), Some(offset..end))
            .await?;
        Ok(rechunk(stream, CHUNK_BYTES)
            .map_err(ChatError::from)
            .boxed())
    }

    /// Makes the thumbnail of image attachment `id` (in the bounded pool), stores it and
    /// records it: its content type and size.
    async fn thumbnail(&self, id: Uuid) -> Result<(String, u64), ChatError> {
        let files = self.files();
        let original = files.objects.get(&Files::key(id, false), None).await?;
        let bytes: Vec<Bytes> = original.try_collect().await?;
        let bytes = Bytes::from(bytes.concat());
        let Kind::Image(kind) = content::sniff(&bytes).kind else {
            return Err(ChatError::NoSuchAttachment);
        };
        let made = files
            .thumbnailer
            .make(bytes, kind)
            .await
            .map_err(UploadError::from)?;
        let size = u64::try_from(made.bytes.len()).unwrap_or(u64::MAX);
        let key = Files::key(id, true);
        files.objects.put(&key, made.bytes).await?;
        if !self
            .store()
            .set_thumbnail(id, made.content_type, size)
            .await?
        {
            // The attachment went while the thumbnail was made: nothing else would delete it.
            let _ = files.objects.delete(&key).await;
            return Err(ChatError::NoSuchAttachment);
        }
        metrics::counter!("chat_thumbnails_made_total").increment(1);
        Ok((made.content_type.to_owned(), size))
    }

    /// Deletes the objects of attachments whose rows are gone (an `attachment.removed`
    /// event's work); idempotent (a missing object is deleted already). An id that still
    /// has a row is left alone. How many attachments' objects were deleted.
    pub async fn purge_attachments(&self, ids: &[Uuid]) -> Result<u32, ChatError> {
        let known = self.store().known_attachments(ids).await?;
        let mut purged = 0_u32;
        for id in ids.iter().filter(|id| !known.contains(id)) {
            for thumbnail in [false, true] {
                self.files()
                    .objects
                    .delete(&Files::key(*id, thumbnail))
                    .await?;
            }
            purged += 1;
        }
        metrics::counter!("chat_attachments_purged_total").increment(u64::from(purged));
        Ok(purged)
    }

    /// Removes (with their events) uploads no message claimed within the time allowed;
    /// how many.
    pub async fn expire_unclaimed_attachments(&self) -> Result<usize, ChatError> {
        let ttl = chrono::Duration::from_std(self.files().limits.unclaimed_ttl)
            .unwrap_or(chrono::Duration::MAX);
        let mut expired = 0;
        loop {
            let removed = self
                .store()
                .expire_unclaimed(now() - ttl, EXPIRED_AT_ONCE)
                .await?;
            expired += removed.len();
            if removed.len() < EXPIRED_AT_ONCE as usize {
                break;
            }
        }
        if expired > 0 {
            self.outbox_waker().wake();
            tracing::info!(expired, "unclaimed attachments expired");
        }
        Ok(expired)
    }

    /// Finds the objects no row names (a crash between a row's deletion and its event's
    /// delivery cannot make one; a bug, a restore of an older database, or hands in the
    /// bucket can), reports them and deletes those older than `grace`.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<SweepReport, ChatError> {
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut report = SweepReport::default();
        let objects = &self.files().objects;
        let mut listed = pin!(objects.list(ORIGINALS).chain(objects.list(THUMBNAILS)));
        let mut batch: Vec<(Uuid, String)> = Vec::new();
        loop {
            let next = listed.next().await.transpose()?;
            let done = next.is_none();
            if let Some(object) = next {
                report.objects += 1;
                let id = object
                    .key
                    .rsplit('/')
                    .next()
                    .and_then(|name| Uuid::parse_str(name).ok());
                match id {
                    Some(id) if object.last_modified < cutoff => batch.push((id, object.key)),
                    Some(_) => {}
                    None => tracing::warn!(key = %object.key, "an object that is no attachment's"),
                }
            }
            if batch.len() >= 500 || (done && !batch.is_empty()) {
                let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
                let known = self.store().known_attachments(&ids).await?;
                for (id, key) in batch.drain(..) {
                    if known.contains(&id) {
                        continue;
                    }
                    tracing::warn!(attachment_id = %id, %key, "orphaned object deleted");
                    self.files().objects.delete(&key).await?;
                    report.orphans += 1;
                }
            }
            if done {
                break;
            }
        }
        metrics::counter!("chat_attachment_orphans_total").increment(report.orphans);
        tracing::info!(
            objects = report.objects,
            orphans = report.orphans,
            "orphan sweep done"
        );
        Ok(report)
    }
}

/// An image's width and height from its header, within the pixel limit; `None` for
/// anything that is not one of the four image types.
fn image_size(
    sniffed: &Sniffed,
    head: &[u8],
    max_pixels: u64,
) -> Result<Option<(u32, u32)>, UploadError> {
    let Kind::Image(kind) = sniffed.kind else {
        return Ok(None);
    };
    let (width, height) = content::image_dimensions(head, kind)?;
    content::check_pixels(width, height, max_pixels)?;
    Ok(Some((width, height)))
}

/// `stream`'s bytes in chunks of `size` (the last may be shorter): a file store may yield
/// many small pieces, and each gRPC message has its cost.
fn rechunk<E: Send + 'static>(
    stream: BoxStream<'static, Result<Bytes, E>>,
    size: usize,
) -> BoxStream<'static, Result<Bytes, E>> {
    futures::stream::unfold(
        (stream, BytesMut::new(), false),
        move |(mut stream, mut pending, mut ended)| async move {
            while !ended && pending.len() < size {
                match stream.next().await {
                    Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
                    Some(Err(error)) => return Some((Err(error), (stream, pending, true))),
                    None => ended = true,
                }
            }
            if pending.is_empty() {
                return None;
            }
            let take = pending.len().min(size);
            let chunk = pending.split_to(take).freeze();
            Some((Ok(chunk), (stream, pending, ended)))
        },
    )
    .boxed()
}

/// Runs attachments' upkeep until `shutdown`: the expiry of unclaimed uploads every
/// `expiry`, and the orphan sweep every `sweep` (the first a sweep after start, so a
/// restart loop does not list the store again and again). Several chat instances may
/// each run it: both are idempotent.
pub async fn maintain(
    chat: Arc<Chat>,
    expiry: Duration,
    sweep: Duration,
    shutdown: platform::shutdown::Shutdown,
) {
    let mut since_sweep = Duration::ZERO;
    while platform::shutdown::pause(&shutdown, expiry).await {
        if let Err(error) = chat.expire_unclaimed_attachments().await {
            tracing::warn!(%error, "cannot expire unclaimed attachments");
        }
        since_sweep += expiry;
        if since_sweep >= sweep {
            since_sweep = Duration::ZERO;
            // Objects younger than an upload may take are left for the next sweep.
            if let Err(error) = chat.sweep_orphans(ORPHAN_GRACE).await {
                tracing::warn!(%error, "orphan sweep failed");
            }
        }
    }
}

/// How old an object without a row must be before the sweep deletes it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
