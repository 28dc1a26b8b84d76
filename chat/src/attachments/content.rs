//! What an uploaded file is, decided from its bytes, and how it may be named and served.
//! No I/O: the callers hand in the first bytes (at most [`SNIFF_BYTES`]) and a name.
//!
//! The declared content type of an upload is never trusted: a file claiming to be a PNG
//! may be an HTML page, and a browser told `text/html` would run its scripts in our origin.
//! So the type comes from the bytes, only four image types (PNG, JPEG, GIF, WebP) are ever
//! shown inline, and everything that could be active content (SVG, HTML, XML, scripts)
//! is served as plain text or opaque bytes, as an attachment (issue 30).

use std::io::Cursor;

/// How many leading bytes [`sniff`] looks at; more are ignored.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// The most pixels an image may have before it is refused (40 megapixels): a
/// decompression bomb is refused from its header, before any decoding.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// The longest file name kept, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The name given to a file whose name leaves nothing after sanitising.
const FALLBACK_NAME: &str = "file";

/// The longest extension [`sanitize_name`] keeps when it shortens a name.
const MAX_KEPT_EXTENSION_CHARS: usize = 16;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const OCTET_STREAM: &str = "application/octet-stream";

/// The image types shown inline and thumbnailed; every other file is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// `image/png`.
    Png,
    /// `image/jpeg`.
    Jpeg,
    /// `image/gif` (the first frame is thumbnailed).
    Gif,
    /// `image/webp`.
    WebP,
}

impl ImageKind {
    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::WebP => "image/webp",
        }
    }

    /// The `image` crate's decoder for it.
    pub fn format(self) -> image::ImageFormat {
        match self {
            Self::Png => image::ImageFormat::Png,
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Gif => image::ImageFormat::Gif,
            Self::WebP => image::ImageFormat::WebP,
        }
    }

    fn from_mime(mime: &str) -> Option<Self> {
        match mime {
            "image/png" => Some(Self::Png),
            "image/jpeg" => Some(Self::Jpeg),
            "image/gif" => Some(Self::Gif),
            "image/webp" => Some(Self::WebP),
            _ => None,
        }
    }
}

/// What a file is, as far as serving it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One of the four image types shown inline.
    Image(ImageKind),
    /// Anything else: always downloaded as an attachment.
    Other,
}

/// The outcome of [`sniff`]: the content type to store and serve, and the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sniffed {
    /// The content type served with the file (never an active type such as HTML or SVG).
    pub content_type: &'static str,
    /// Whether it is one of the inline image types.
    pub kind: Kind,
}

impl Sniffed {
    /// True only for the four image types: everything else gets `Content-Disposition:
    /// attachment`.
    pub fn inline(&self) -> bool {
        matches!(self.kind, Kind::Image(_))
    }

    /// The image type, if it is one.
    pub fn image(&self) -> Option<ImageKind> {
        match self.kind {
            Kind::Image(kind) => Some(kind),
            Kind::Other => None,
        }
    }
}

/// Decides what a file is from its first bytes (at most [`SNIFF_BYTES`] are read).
///
/// Known binary formats keep the type `infer` names (PDF is `application/pdf`); the types
/// a browser could run or render as a page (HTML, XML and so SVG, shell scripts) are
/// treated like any other text: `text/plain` when the bytes are UTF-8 without NUL,
/// else `application/octet-stream`.
pub fn sniff(head: &[u8]) -> Sniffed {
    let head = &head[..head.len().min(SNIFF_BYTES)];
    if let Some(found) = infer::get(head) {
        if let Some(image) = ImageKind::from_mime(found.mime_type()) {
            return Sniffed {
                content_type: image.content_type(),
                kind: Kind::Image(image),
            };
        }
        if !is_active(&found) {
            return Sniffed {
                content_type: found.mime_type(),
                kind: Kind::Other,
            };
        }
    }
    let content_type = if is_text(head) {
        TEXT_PLAIN
    } else {
        OCTET_STREAM
    };
    Sniffed {
        content_type,
        kind: Kind::Other,
    }
}

/// Types a browser may execute or render as a document of our origin.
fn is_active(found: &infer::Type) -> bool {
    found.matcher_type() == infer::MatcherType::Text
        || ["html", "xml", "svg", "script"]
            .iter()
            .any(|word| found.mime_type().contains(word) && !found.mime_type().contains("openxml"))
}

/// UTF-8 without NUL. The head may cut the last character short: that is still text.
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // `error_len() == None`: an incomplete sequence at the very end, cut by the head.
        Err(error) => error.error_len().is_none() && head.len() - error.valid_up_to() < 4,
    }
}

/// Why an image is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// Its header is cut short, lies, or the data does not decode.
    #[error("the image is damaged")]
    Damaged,
    /// More pixels than allowed: refused before decoding.
    #[error("the image has {width}x{height} pixels, more than the {max_pixels} allowed")]
    TooManyPixels {
        /// Its declared width.
        width: u32,
        /// Its declared height.
        height: u32,
        /// The limit.
        max_pixels: u64,
    },
    /// The thumbnail could not be encoded.
    #[error("the thumbnail could not be encoded: {0}")]
    Encode(String),
}

/// The width and height an image declares, read from its header only (nothing decoded).
///
/// `head` must hold the header: the first 64 KiB are enough for PNG, GIF and WebP, and
/// for JPEGs whose metadata before the frame header is smaller than that.
pub fn image_dimensions(head: &[u8], kind: ImageKind) -> Result<(u32, u32), ImageError> {
    let (width, height) = image::ImageReader::with_format(Cursor::new(head), kind.format())
        .into_dimensions()
        .map_err(|_| ImageError::Damaged)?;
    if width == 0 || height == 0 {
        return Err(ImageError::Damaged);
    }
    Ok((width, height))
}

/// Refuses an image of more than `max_pixels` pixels (see [`DEFAULT_MAX_PIXELS`]).
pub fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            max_pixels,
        });
    }
    Ok(())
}

/// A file name safe to store and show: the last path component only (`/` and `\`), no
/// control or direction-changing characters, no leading dots, trimmed, at most
/// [`MAX_NAME_CHARS`] characters (the extension kept when it is cut), never empty.
pub fn sanitize_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !is_hidden_char(*c)).collect();
    let name = cleaned.trim_start_matches(|c: char| c == '.' || c.is_whitespace());
    let name = shorten(name.trim_end());
    if name.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        name
    }
}

/// Control characters (NUL included) and the invisible ones that reorder or hide text
/// (`evil\u{202e}gnp.exe` shows as `evilexe.png`).
fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Cuts a name to [`MAX_NAME_CHARS`] characters, keeping a short extension.
fn shorten(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_owned();
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension)
        .filter(|extension| {
            !extension.is_empty() && extension.chars().count() <= MAX_KEPT_EXTENSION_CHARS
        });
    let cut = match extension {
        Some(extension) => {
            let stem: String = name
                .chars()
                .take(MAX_NAME_CHARS - extension.chars().count() - 1)
                .collect();
            format!("{}.{extension}", stem.trim_end())
        }
        None => name.chars().take(MAX_NAME_CHARS).collect(),
    };
    cut.trim().to_owned()
}

/// Images for the tests of attachments, made with `image` itself.
#[cfg(test)]
pub(crate) mod samples {
    use super::ImageKind;
    use bytes::Bytes;
    use image::{DynamicImage, Rgba, RgbaImage};
    use std::io::Cursor;

    /// A `width` x `height` gradient of `kind`; with `opaque`, without an alpha channel.
    pub(crate) fn encoded(kind: ImageKind, width: u32, height: u32, opaque: bool) -> Bytes {
        let channel = |value: u32| u8::try_from(value % 256).expect("below 256");
        let image = DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
            Rgba([channel(x), channel(y), channel(x + y), 128])
        }));
        let image = if opaque || kind == ImageKind::Jpeg {
            DynamicImage::ImageRgb8(image.to_rgb8())
        } else {
            image
        };
        let mut bytes = Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, kind.format())
            .expect("a test image encodes");
        Bytes::from(bytes.into_inner())
    }

    /// A valid 1 x 1 PNG whose header declares `width` x `height` (with a correct CRC).
    pub(crate) fn png_declaring(width: u32, height: u32) -> Bytes {
        let mut png = encoded(ImageKind::Png, 1, 1, true).to_vec();
        // The IHDR chunk: length 8..12, type 12..16, width, height, 5 bytes, CRC 29..33.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(png)
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use samples::{encoded, png_declaring};

    #[test]
    fn the_four_image_types_are_images_shown_inline() {
        for kind in [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Gif,
            ImageKind::WebP,
        ] {
            let sniffed = sniff(&encoded(kind, 3, 2, true));
            assert_eq!(sniffed.kind, Kind::Image(kind));
            assert_eq!(sniffed.content_type, kind.content_type());
            assert!(sniffed.inline(), "{kind:?} is shown inline");
            assert_eq!(sniffed.image(), Some(kind));
        }
    }

    #[test]
    fn a_pdf_is_a_download() {
        let sniffed = sniff(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n");
        assert_eq!(sniffed.content_type, "application/pdf");
        assert_eq!(sniffed.kind, Kind::Other);
        assert!(!sniffed.inline());
    }

    #[test]
    fn other_known_formats_keep_their_type_but_are_never_inline() {
        let zip = sniff(b"PK\x03\x04\x14\x00\x00\x00\x08\x00");
        assert_eq!(zip.content_type, "application/zip");
        assert!(!zip.inline());
        // BMP and TIFF are images, but not of the four served inline.
        let bmp = sniff(b"BM\x3e\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00");
        assert_eq!(bmp.kind, Kind::Other);
        assert!(!bmp.inline());
    }

    #[test]
    fn active_content_is_never_an_image_nor_inline() {
        let svg = b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        let html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>";
        let script = b"#!/bin/sh\nrm -rf /\n";
        let xml = b"<?xml version=\"1.0\"?><note/>";
        for active in [&svg[..], html, script, xml] {
            let sniffed = sniff(active);
            assert_eq!(sniffed.content_type, TEXT_PLAIN, "{active:?}");
            assert!(!sniffed.inline());
        }
        let mut binary_html = html.to_vec();
        binary_html.push(0);
        assert_eq!(sniff(&binary_html).content_type, OCTET_STREAM);
    }

    #[test]
    fn utf8_text_is_plain_text_and_anything_else_is_opaque_bytes() {
        assert_eq!(
            sniff("a log line\nZürich 日本\n".as_bytes()).content_type,
            TEXT_PLAIN
        );
        assert_eq!(sniff(b"text with a \0 NUL").content_type, OCTET_STREAM);
        assert_eq!(
            sniff(b"\xff\xfe not utf-8 \xc3\x28").content_type,
            OCTET_STREAM
        );
        assert_eq!(sniff(b"").content_type, OCTET_STREAM);
    }

    #[test]
    fn text_cut_inside_a_character_at_the_end_of_the_head_is_still_text() {
        let mut head = "é".repeat(SNIFF_BYTES / 2).into_bytes();
        head.truncate(SNIFF_BYTES - 1); // ends in the first byte of an `é`
        assert_eq!(sniff(&head).content_type, TEXT_PLAIN);
        // Past the head, bytes are not looked at.
        let mut long = "a".repeat(SNIFF_BYTES).into_bytes();
        long.push(0);
        assert_eq!(sniff(&long).content_type, TEXT_PLAIN);
    }

    #[test]
    fn dimensions_come_from_the_header() {
        for kind in [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Gif,
            ImageKind::WebP,
        ] {
            assert_eq!(
                image_dimensions(&encoded(kind, 31, 17, true), kind),
                Ok((31, 17))
            );
        }
        assert_eq!(
            image_dimensions(&png_declaring(30_000, 30_000), ImageKind::Png),
            Ok((30_000, 30_000))
        );
    }

    #[test]
    fn a_header_cut_short_or_lying_is_damaged() {
        let png = encoded(ImageKind::Png, 8, 8, true);
        assert_eq!(
            image_dimensions(&png[..12], ImageKind::Png),
            Err(ImageError::Damaged)
        );
        let mut lying = png_declaring(640, 480).to_vec();
        lying[20] ^= 0xff; // the IHDR's CRC no longer matches what it declares
        assert_eq!(
            image_dimensions(&lying, ImageKind::Png),
            Err(ImageError::Damaged)
        );
        assert_eq!(
            image_dimensions(&png_declaring(0, 480), ImageKind::Png),
            Err(ImageError::Damaged)
        );
        assert_eq!(
            image_dimensions(b"GIF89a\x01", ImageKind::Gif),
            Err(ImageError::Damaged)
        );
        // A PNG declared as a JPEG does not decode as one.
        assert_eq!(
            image_dimensions(&png, ImageKind::Jpeg),
            Err(ImageError::Damaged)
        );
    }

    #[test]
    fn a_thirty_thousand_pixel_square_is_refused_by_its_header() {
        let (width, height) = image_dimensions(&png_declaring(30_000, 30_000), ImageKind::Png)
            .expect("a valid header");
        assert_eq!(
            check_pixels(width, height, DEFAULT_MAX_PIXELS),
            Err(ImageError::TooManyPixels {
                width: 30_000,
                height: 30_000,
                max_pixels: DEFAULT_MAX_PIXELS
            })
        );
        assert_eq!(check_pixels(8_000, 5_000, DEFAULT_MAX_PIXELS), Ok(()));
        assert!(check_pixels(8_000, 5_001, DEFAULT_MAX_PIXELS).is_err());
        assert!(check_pixels(u32::MAX, u32::MAX, u64::MAX).is_ok());
    }

    #[test]
    fn a_name_keeps_only_its_last_path_component() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_name("a/b\\c/d.txt"), "d.txt");
        assert_eq!(sanitize_name("dir/"), "file");
    }

    #[test]
    fn dots_blanks_and_nothing_become_file() {
        for raw in [
            "", ".", "..", "...", "   ", "../..", "\0\0", "/", "\\", " . ",
        ] {
            assert_eq!(sanitize_name(raw), "file", "{raw:?}");
        }
        assert_eq!(sanitize_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_name("  .. hidden.txt  "), "hidden.txt");
    }

    #[test]
    fn control_and_reordering_characters_are_removed_and_unicode_kept() {
        assert_eq!(sanitize_name("a\0b\r\n\tc.txt"), "abc.txt");
        assert_eq!(sanitize_name("evil\u{202e}gnp.exe"), "evilgnp.exe");
        assert_eq!(
            sanitize_name("Übersicht 日本語 🎉.png"),
            "Übersicht 日本語 🎉.png"
        );
    }

    #[test]
    fn a_long_name_is_cut_to_200_characters_keeping_its_extension() {
        let long = format!("{}.pdf", "ä".repeat(300));
        let name = sanitize_name(&long);
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
        assert!(name.ends_with(".pdf"));
        assert!(name.starts_with('ä'));

        let no_extension = "日".repeat(300);
        assert_eq!(sanitize_name(&no_extension).chars().count(), MAX_NAME_CHARS);

        let long_extension = format!("a.{}", "x".repeat(300));
        assert_eq!(
            sanitize_name(&long_extension).chars().count(),
            MAX_NAME_CHARS
        );
        assert_eq!(sanitize_name(&"a".repeat(200)), "a".repeat(200));
    }

    #[test]
    fn sanitized_names_hold_their_promises_on_awkward_inputs() {
        // Property-style: every name built from awkward pieces is non-empty, short, and
        // free of separators, controls and leading dots.
        let pieces = [
            "", ".", "..", "/", "\\", "\0", " ", "\u{202e}", "é", "日本", "🎉", "a", ".txt", "\n",
            "\u{7f}", "\u{85}",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for repeat in [1, 70] {
                        let raw = format!("{a}{b}{c}").repeat(repeat);
                        let name = sanitize_name(&raw);
                        assert!(!name.is_empty(), "{raw:?}");
                        assert!(name.chars().count() <= MAX_NAME_CHARS, "{raw:?}");
                        assert!(!name.contains(['/', '\\']), "{raw:?}");
                        assert!(!name.chars().any(is_hidden_char), "{raw:?}");
                        assert!(!name.starts_with('.'), "{raw:?}");
                        assert_eq!(name, name.trim(), "{raw:?}");
                        assert_eq!(sanitize_name(&name), name, "idempotent for {raw:?}");
                    }
                }
            }
        }
    }
}
