//! Files in conversations (docs/ARCHITECTURE.md, "Attachments"): the upload, streamed from
//! the request's multipart body to chat chunk by chunk (never held whole), and the
//! downloads of a file or its thumbnail, streamed back with ranges, an `ETag` and the
//! headers that keep a file from ever running as a page of ours. Chat owns the files
//! and checks every id against the caller's membership; the broker speaks HTTP.

use super::chat::{caller, from_chat};
use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, AuthUser},
    live::frames::AttachmentView,
};
use axum::{
    body::Body,
    extract::{
        FromRequest, Request, State,
        multipart::{Field, Multipart, MultipartError, MultipartRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use proto::chat::v1::{self as pb, upload_chunk::Part};
use std::ops::RangeInclusive;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /api/conversations/{id}/attachments`: one part, the file, and nothing else
/// (`additionalProperties: false`).
#[derive(Debug, ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "documents the multipart form; the handler streams it"
)]
pub struct UploadForm {
    /// The file, with its name in the part's `filename`; not empty.
    #[schema(format = Binary, content_media_type = "application/octet-stream", min_length = 1)]
    file: String,
}

/// Chunks of an upload queued toward chat: a couple, so a slow chat slows the client
/// (backpressure) instead of filling the broker's memory.
const UPLOAD_QUEUE: usize = 2;

/// Bytes of one chunk sent to chat: what the body gives, cut to this.
const PIECE_BYTES: usize = 64 * 1024;

/// Upload a file to a conversation (members only), to send with a message
/// (`attachment_ids`) within the hour. Streamed: the size limit (25 MiB by default) is
/// checked against `Content-Length` before the body is read, then on the bytes.
#[utoipa::path(post, path = "/api/conversations/{id}/attachments", tag = "attachments",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(("id" = Uuid, Path, description = "conversation id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 201, description = "Stored; send it with a message.", body = AttachmentView),
        (status = 400, description = "Not one well-formed file part, or an empty file.", body = ErrorBody),
        (status = 403, description = "The caller is not a member.", body = ErrorBody),
        (status = 413, description = "Larger than the limit (`too_large`), or over the caller's quota (`quota_exceeded`).", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data.", body = ErrorBody),
        (status = 429, description = "The caller has four uploads in flight already (`Retry-After`).", body = ErrorBody),
        (status = 422, description = "An image whose header is damaged (`damaged_image`) or with too many pixels (`too_many_pixels`).", body = ErrorBody),
        (status = 507, description = "The file store is full.", body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    request: Request,
) -> Result<Response, ApiError> {
    // A place among the caller's own uploads, then a turn among everyone's: the body
    // stays unread until then.
    let Some(_mine) = state.uploads_per_user.acquire(user.claims.sub) else {
        return Err(ApiError {
            message: "at most four uploads at a time; wait for one to finish".into(),
            ..ApiError::too_many_requests(1)
        });
    };
    let _turn = state
        .uploads
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("broker"))?;
    let headers = request.headers().clone();
    // The body reaches the multipart parser one chunk at a time (see `OneChunkAtATime`).
    let request =
        request.map(|body| Body::from_stream(OneChunkAtATime::new(body.into_data_stream())));
    let multipart: Result<Multipart, MultipartRejection> =
        Multipart::from_request(request, &state).await;
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected multipart/form-data with one file part: {rejection}"),
        )
    })?;
    // An upper bound of the file's size: the body's, which also holds the part's headers
    // and the boundaries (chat allows for them).
    let declared_size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let field = multipart
        .next_field()
        .await
        .map_err(|error| malformed(&error))?
        .ok_or_else(|| ApiError::bad_request("no_file", "the form has no file part"))?;
    let Some(name) = field.file_name().map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "no_file",
            "the form's part is not a file (it has no filename); send the file alone",
        ));
    };
    let (chunks, queued) = mpsc::channel(UPLOAD_QUEUE);
    let start = pb::UploadChunk {
        part: Some(Part::Start(pb::UploadStart {
            caller: Some(caller(&user)),
            conversation_id: id.to_string(),
            name,
            declared_size,
        })),
    };
    chunks
        .try_send(start)
        .map_err(|_| ApiError::bad_request("invalid_upload", "the upload could not start"))?;
    let mut chat = state.chat_files.clone();
    let mut call = std::pin::pin!(chat.upload_attachment(ReceiverStream::new(queued)));
    let pumped = tokio::select! {
        // Chat answered before the file was read: a refusal (membership, size, quota,
        // an image's header), sent now, before the rest of the body is read.
        answered = &mut call => return answer(answered),
        pumped = pump(field, chunks) => pumped,
    };
    // Only a complete, well-formed form is sent as `complete`; anything else returns here,
    // and dropping the call cancels the upload (chat keeps nothing).
    let Some(chunks) = pumped? else {
        // Chat stopped reading (it refused the file): its answer says why.
        return answer(call.await);
    };
    if let Some(next) = multipart
        .next_field()
        .await
        .map_err(|error| malformed(&error))?
    {
        let what = if next.file_name().is_some() {
            "a second file"
        } else {
            "a second part"
        };
        return Err(ApiError::bad_request(
            "too_many_parts",
            format!("upload one file per request and nothing else; the form has {what}"),
        ));
    }
    let complete = pb::UploadChunk {
        part: Some(Part::Complete(true)),
    };
    // The call is driven while `complete` waits for room in the queue: a small file may
    // have filled it before the call had sent anything. A failed send means chat stopped
    // reading; its answer says why.
    let finishing = async move {
        let _ = chunks.send(complete).await;
    };
    let ((), answered) = tokio::join!(finishing, call);
    answer(answered)
}

/// A body stream that gives one chunk per poll, then yields (waking itself at once).
///
/// The multipart parser (multer) reads its stream until it is `Pending`, buffering all it
/// got before handing out any of the file: on loopback, or any link faster than chat
/// stores, that is the whole file in the broker's memory (100 uploads of 10 MiB at once
/// grew it by 500 MiB). Yielding after each chunk makes it hand out what it has first, so
/// the upload's queue and its backpressure reach the socket, and the broker holds a few
/// chunks per upload.
struct OneChunkAtATime<S> {
    inner: S,
    /// A chunk was given on this poll's turn: the next poll yields first.
    gave: bool,
}

impl<S> OneChunkAtATime<S> {
    fn new(inner: S) -> Self {
        Self { inner, gave: false }
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for OneChunkAtATime<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.gave {
            self.gave = false;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if matches!(next, std::task::Poll::Ready(Some(_))) {
            self.gave = true;
        }
        next
    }
}

/// Copies the file part's bytes into the upload's queue (in chunks chat takes): the
/// queue back when the part ended well, `None` when chat stopped reading first.
async fn pump(
    mut field: Field<'_>,
    chunks: mpsc::Sender<pb::UploadChunk>,
) -> Result<Option<mpsc::Sender<pb::UploadChunk>>, ApiError> {
    while let Some(mut bytes) = field.chunk().await.map_err(|error| malformed(&error))? {
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(PIECE_BYTES));
            let data = pb::UploadChunk {
                part: Some(Part::Data(piece)),
            };
            if chunks.send(data).await.is_err() {
                return Ok(None);
            }
        }
    }
    Ok(Some(chunks))
}

/// A body that is not the multipart form it claims to be.
fn malformed(error: &MultipartError) -> ApiError {
    ApiError::bad_request(
        "bad_multipart",
        format!(
            "the multipart body is malformed or cut short: {}",
            error.body_text()
        ),
    )
}

/// Chat's answer to an upload, in HTTP terms.
fn answer(
    answered: Result<tonic::Response<pb::Attachment>, tonic::Status>,
) -> Result<Response, ApiError> {
    let attachment = answered.map_err(refused)?.into_inner();
    let view = AttachmentView::from(&attachment);
    let mut response = (StatusCode::CREATED, ApiJson(&view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&view.url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// An upload chat refused: its reason picks the status.
fn refused(status: tonic::Status) -> ApiError {
    let reason = status
        .metadata()
        .get(pb::ERROR_REASON)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let message = status.message().to_owned();
    match reason {
        "too_large" => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
        "quota_exceeded" => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded", message),
        "empty_file" => ApiError::bad_request("empty_file", message),
        "damaged_image" => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "damaged_image", message)
        }
        "too_many_pixels" => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_pixels", message)
        }
        "storage_full" => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", message),
        "invalid_upload" | "cancelled" => ApiError::bad_request("invalid_upload", message),
        _ => from_chat(status),
    }
}

/// Download a file (members of its conversation only; anyone else gets the 404 of a
/// missing id). Images are served inline, anything else as a download; never as a page
/// (`nosniff`, a sandboxing CSP). Single byte ranges are honoured.
#[utoipa::path(get, path = "/api/attachments/{id}", tag = "attachments",
    params(("id" = Uuid, Path, description = "attachment id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The file, with the content type sniffed from its bytes.", content_type = "*/*", body = Vec<u8>),
        (status = 206, description = "The range asked for.", content_type = "*/*", body = Vec<u8>),
        (status = 304, description = "Not modified (`If-None-Match`)."),
        (status = 404, description = "No such attachment, or not the caller's to see.", body = ErrorBody),
        (status = 416, description = "The range lies outside the file.", body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &user, id, false, &headers).await
}

/// Download an image's thumbnail (at most 400 pixels a side; PNG or JPEG), members only.
#[utoipa::path(get, path = "/api/attachments/{id}/thumbnail", tag = "attachments",
    params(("id" = Uuid, Path, description = "attachment id")), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The thumbnail.", content(("image/png"), ("image/jpeg"))),
        (status = 304, description = "Not modified (`If-None-Match`)."),
        (status = 404, description = "No such attachment, not the caller's to see, not an image, or an image whose pixels do not decode.", body = ErrorBody)))]
pub async fn thumbnail(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &user, id, true, &headers).await
}

/// Serves attachment `id` (or its thumbnail) to `user`.
async fn serve(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
    thumbnail: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let object = state
        .chat
        .clone()
        .get_attachment(pb::GetAttachmentRequest {
            caller: Some(caller(user)),
            attachment_id: id.to_string(),
            thumbnail,
        })
        .await
        .map_err(from_chat)?
        .into_inner();
    let attachment = object.attachment.clone().unwrap_or_default();
    // The bytes of an id never change: the id is a strong validator.
    let etag = if thumbnail {
        format!("\"{id}-t\"")
    } else {
        format!("\"{id}\"")
    };
    let mut response_headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            response_headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable",
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Whatever a browser makes of the bytes, they never run as a page of this origin.
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    // The pages (their own origin) show images with `<img>`: Chromium applies `same-site`
    // strictly to plain-HTTP origins on other ports and blocks them. Nothing is exposed by
    // allowing it: a page of another site gets no session with the request (the cookie
    // is SameSite=Strict, and a bearer token never rides on an `<img>`), so a 404.
    set(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "cross-origin",
    );
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CONTENT_TYPE, served_type(&object));
    set(
        header::CONTENT_DISPOSITION,
        &platform::disposition::content_disposition(&attachment.name, object.inline),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let size = object.size;
    let range = match requested_range(headers, &etag, size) {
        Ok(range) => range,
        Err(()) => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the range lies outside the file's {size} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    let (status, offset, length) = match &range {
        Some(range) => {
            let length = range.end() - range.start() + 1;
            if let Ok(value) =
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", range.start(), range.end()))
            {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, *range.start(), length)
        }
        None => (StatusCode::OK, 0, size),
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = if length == 0 {
        Body::empty()
    } else {
        let chunks = state
            .chat
            .clone()
            .read_attachment(pb::ReadAttachmentRequest {
                caller: Some(caller(user)),
                attachment_id: id.to_string(),
                thumbnail,
                offset,
                length,
            })
            .await
            .map_err(from_chat)?
            .into_inner();
        Body::from_stream(chunks.map(|chunk| chunk.map(|chunk| chunk.data)))
    };
    Ok((status, response_headers, body).into_response())
}

/// The `Content-Type` a download is served with: as chat sniffed it (the
/// `Content-Disposition` makes anything but an image a download).
fn served_type(object: &pb::AttachmentObject) -> &str {
    if object.content_type.is_empty() {
        "application/octet-stream"
    } else {
        &object.content_type
    }
}

/// The one byte range to serve: `Ok(None)` for the whole file (no `Range`, one that
/// does not parse — which HTTP says to ignore —, several ranges, or an `If-Range` that
/// does not match), `Err` when the range lies outside the file.
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<RangeInclusive<u64>>, ()> {
    let Some(range) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range.to_str().ok().map(str::trim) != Some(etag)
    {
        return Ok(None);
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Ok(None);
    };
    if size == 0 {
        return Err(());
    }
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(ranges.into_iter().next()),
        // Several ranges would be a multipart answer: the whole file serves them all.
        Ok(_) => Ok(None),
        Err(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Result<Option<RangeInclusive<u64>>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RANGE,
            HeaderValue::from_str(value).expect("a header value"),
        );
        requested_range(&headers, "\"x\"", size)
    }

    #[test]
    fn one_range_is_served_and_others_are_not() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some(0..=9)));
        assert_eq!(range("bytes=90-", 100), Ok(Some(90..=99)));
        assert_eq!(range("bytes=-10", 100), Ok(Some(90..=99)));
        assert_eq!(
            range("bytes=95-200", 100),
            Ok(Some(95..=99)),
            "an end past the file is cut"
        );
        assert_eq!(
            range("bytes=0-1, 5-6", 100),
            Ok(None),
            "several ranges: the whole file"
        );
        assert_eq!(range("pages=1", 100), Ok(None), "not bytes: ignored");
        assert_eq!(
            range("bytes=200-", 100),
            Err(()),
            "starts past the end: 416"
        );
    }

    #[test]
    fn an_if_range_that_does_not_match_gets_the_whole_file() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        headers.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(requested_range(&headers, "\"x\"", 100), Ok(None));
    }
}
