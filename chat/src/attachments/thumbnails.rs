//! Thumbnails of attached images, made by a bounded pool off the request path.
//!
//! Decoding an image is CPU-bound and can take a lot of memory, so it never runs on the
//! async runtime (STYLE.md: no blocking calls there) and never more than `workers` at a
//! time: a burst of uploads waits for a permit instead of taking every core and gigabytes
//! of memory. Each decode is bounded twice: the pixel count from the header is checked
//! first ([`check_pixels`]), and the decoder runs under `image::Limits`, so a file whose
//! header understates what its data would allocate still cannot allocate more.

use super::content::{ImageError, ImageKind, check_pixels};
use bytes::Bytes;
use image::{DynamicImage, ImageReader, Limits, codecs::jpeg::JpegEncoder};
use std::{io::Cursor, sync::Arc};
use tokio::sync::Semaphore;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 400;

/// JPEG quality of thumbnails: small files, no visible blocks at 400 pixels.
const JPEG_QUALITY: u8 = 80;

/// Bytes per pixel the decoder may hold at most (RGBA with 16 bits per channel), on top
/// of which [`ALLOC_SLACK`] covers the decoder's own tables.
const MAX_BYTES_PER_PIXEL: u64 = 8;
const ALLOC_SLACK: u64 = 16 * 1024 * 1024;

/// The longest side any decoder accepts (JPEG's own maximum).
const MAX_SIDE: u32 = 65_535;

/// A thumbnail, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded image.
    pub bytes: Bytes,
    /// `image/png` or `image/jpeg`.
    pub content_type: &'static str,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
}

/// Makes thumbnails, at most `workers` at a time.
#[derive(Debug, Clone)]
pub struct Thumbnailer {
    permits: Arc<Semaphore>,
    max_pixels: u64,
    size: u32,
    #[cfg(test)]
    running: Arc<Running>,
}

impl Thumbnailer {
    /// A pool of `workers` decoders (at least one) refusing images over `max_pixels`.
    pub fn new(workers: usize, max_pixels: u64) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            max_pixels,
            size: THUMBNAIL_SIZE,
            #[cfg(test)]
            running: Arc::default(),
        }
    }

    /// A pool with one decoder per available core.
    pub fn with_available_cores(max_pixels: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self::new(cores, max_pixels)
    }

    /// A thumbnail of `bytes` (a whole image of `kind`): within 400×400, the aspect ratio
    /// kept, never upscaled; PNG when the image has transparency or is a GIF, else JPEG.
    /// Waits for a free decoder first.
    pub async fn make(&self, bytes: Bytes, kind: ImageKind) -> Result<Thumbnail, ImageError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the thumbnailer never closes its semaphore");
        let (max_pixels, size) = (self.max_pixels, self.size);
        #[cfg(test)]
        let _running = self.running.enter();
        tokio::task::spawn_blocking(move || thumbnail(&bytes, kind, max_pixels, size))
            .await
            .unwrap_or_else(|panicked| {
                // A decoder bug on hostile input: that file is refused, the service goes on.
                tracing::warn!(error = %panicked, "an image decoder panicked");
                Err(ImageError::Damaged)
            })
    }
}

/// Decodes (within limits), shrinks and encodes: the blocking part of [`Thumbnailer::make`].
fn thumbnail(
    bytes: &[u8],
    kind: ImageKind,
    max_pixels: u64,
    size: u32,
) -> Result<Thumbnail, ImageError> {
    let (width, height) = super::content::image_dimensions(bytes, kind)?;
    check_pixels(width, height, max_pixels)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(
        max_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(ALLOC_SLACK),
    );
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    reader.limits(limits);
    let image = reader.decode().map_err(|_| ImageError::Damaged)?;
    let image = if image.width() > size || image.height() > size {
        image.thumbnail(size, size)
    } else {
        image
    };
    encode(&image, kind == ImageKind::Gif || image.color().has_alpha())
}

fn encode(image: &DynamicImage, as_png: bool) -> Result<Thumbnail, ImageError> {
    let mut bytes = Cursor::new(Vec::new());
    let content_type = if as_png {
        image
            .to_rgba8()
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(|error| ImageError::Encode(error.to_string()))?;
        "image/png"
    } else {
        image
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))
            .map_err(|error| ImageError::Encode(error.to_string()))?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes: Bytes::from(bytes.into_inner()),
        content_type,
        width: image.width(),
        height: image.height(),
    })
}

/// How many decodes run, and the most that ever ran at once (tests of the pool's bound).
#[cfg(test)]
#[derive(Debug, Default)]
struct Running {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Running {
    fn enter(&self) -> impl Drop + '_ {
        use std::sync::atomic::Ordering;
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Leave(self)
    }
}

#[cfg(test)]
struct Leave<'a>(&'a Running);

#[cfg(test)]
impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::content::{
        DEFAULT_MAX_PIXELS,
        samples::{encoded, png_declaring},
        sniff,
    };

    fn decoded(thumbnail: &Thumbnail) -> DynamicImage {
        image::load_from_memory(&thumbnail.bytes).expect("a thumbnail decodes")
    }

    #[tokio::test]
    async fn each_inline_type_gets_a_thumbnail_within_400_pixels_keeping_its_shape() {
        let thumbnailer = Thumbnailer::new(2, DEFAULT_MAX_PIXELS);
        for (kind, opaque, expected_type) in [
            (ImageKind::Png, false, "image/png"),
            (ImageKind::Png, true, "image/jpeg"),
            (ImageKind::Jpeg, true, "image/jpeg"),
            (ImageKind::Gif, true, "image/png"),
            (ImageKind::WebP, false, "image/png"),
            (ImageKind::WebP, true, "image/jpeg"),
        ] {
            let thumbnail = thumbnailer
                .make(encoded(kind, 1000, 500, opaque), kind)
                .await
                .unwrap_or_else(|error| panic!("{kind:?} makes a thumbnail: {error}"));
            assert_eq!((thumbnail.width, thumbnail.height), (400, 200), "{kind:?}");
            assert_eq!(thumbnail.content_type, expected_type, "{kind:?}");
            assert_eq!(sniff(&thumbnail.bytes).content_type, expected_type);
            let image = decoded(&thumbnail);
            assert_eq!((image.width(), image.height()), (400, 200));
        }
    }

    #[tokio::test]
    async fn a_tall_image_fits_by_its_height_and_a_small_one_is_never_upscaled() {
        let thumbnailer = Thumbnailer::new(1, DEFAULT_MAX_PIXELS);
        let tall = thumbnailer
            .make(encoded(ImageKind::Png, 300, 1200, true), ImageKind::Png)
            .await
            .expect("a tall PNG makes a thumbnail");
        assert_eq!((tall.width, tall.height), (100, 400));
        let small = thumbnailer
            .make(encoded(ImageKind::Jpeg, 40, 30, true), ImageKind::Jpeg)
            .await
            .expect("a small JPEG makes a thumbnail");
        assert_eq!((small.width, small.height), (40, 30));
    }

    #[tokio::test]
    async fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
        let thumbnailer = Thumbnailer::new(1, 1_000_000);
        let refused = thumbnailer
            .make(encoded(ImageKind::Png, 1001, 1000, true), ImageKind::Png)
            .await;
        assert_eq!(
            refused,
            Err(ImageError::TooManyPixels {
                width: 1001,
                height: 1000,
                max_pixels: 1_000_000
            })
        );
        // A 30,000 x 30,000 header with almost no data behind it: refused, not decoded.
        let bomb = png_declaring(30_000, 30_000);
        let refused = Thumbnailer::new(1, DEFAULT_MAX_PIXELS)
            .make(bomb, ImageKind::Png)
            .await;
        assert!(
            matches!(
                refused,
                Err(ImageError::TooManyPixels {
                    width: 30_000,
                    height: 30_000,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_damaged_image_is_refused_as_damaged() {
        let thumbnailer = Thumbnailer::new(1, DEFAULT_MAX_PIXELS);
        for kind in [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Gif,
            ImageKind::WebP,
        ] {
            let whole = encoded(kind, 200, 200, true);
            // The header is intact, the data behind it cut off. A JPEG cut in its scan
            // still decodes (the rest is grey, as in browsers): cut it before the scan.
            let end = match kind {
                ImageKind::Jpeg => whole
                    .windows(2)
                    .position(|marker| marker == [0xff, 0xda])
                    .expect("a JPEG has a start of scan"),
                _ => whole.len() / 3,
            };
            let cut = whole.slice(..end);
            assert_eq!(
                thumbnailer.make(cut, kind).await,
                Err(ImageError::Damaged),
                "{kind:?}"
            );
        }
        assert_eq!(
            thumbnailer
                .make(Bytes::from_static(b"not an image"), ImageKind::Png)
                .await,
            Err(ImageError::Damaged)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_pool_size_decode_at_once() {
        const WORKERS: usize = 2;
        let thumbnailer = Thumbnailer::new(WORKERS, DEFAULT_MAX_PIXELS);
        let image = encoded(ImageKind::Png, 1500, 1500, true);
        let jobs: Vec<_> = (0..=WORKERS)
            .map(|_| {
                let (thumbnailer, image) = (thumbnailer.clone(), image.clone());
                tokio::spawn(async move { thumbnailer.make(image, ImageKind::Png).await })
            })
            .collect();
        for job in jobs {
            let thumbnail = job
                .await
                .expect("the job does not panic")
                .expect("every job of the burst gets its thumbnail");
            assert_eq!((thumbnail.width, thumbnail.height), (400, 400));
        }
        let peak = thumbnailer
            .running
            .peak
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..=WORKERS).contains(&peak),
            "{peak} decodes ran at once with {WORKERS} workers"
        );
        assert_eq!(thumbnailer.permits.available_permits(), WORKERS);
    }
}
