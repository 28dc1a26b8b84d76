//! An uploaded file's first bytes and its name: what the content checks of attachments
//! read before anything else (chat's `attachments::content`), and the header a download
//! names it in (`platform::disposition`).
#![no_main]

use chat::attachments::content::{
    Kind, MAX_NAME_CHARS, image_dimensions, sanitize_name, sniff,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let sniffed = sniff(bytes);
    // Only the four image kinds are ever shown inline.
    assert_eq!(sniffed.inline(), matches!(sniffed.kind, Kind::Image(_)));
    if let Kind::Image(kind) = sniffed.kind {
        let _ = image_dimensions(bytes, kind);
    }

    let raw = String::from_utf8_lossy(bytes);
    let name = sanitize_name(&raw);
    assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS, "{name:?}");
    assert!(!name.contains(['/', '\\', '\0']) && !name.starts_with('.'), "{name:?}");
    assert_eq!(sanitize_name(&name), name, "sanitising is idempotent");
    let header = platform::disposition::content_disposition(&name, sniffed.inline());
    assert!(header.bytes().all(|byte| (b' '..=b'~').contains(&byte)), "{header:?}");
});
