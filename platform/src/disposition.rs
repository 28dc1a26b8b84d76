//! How a download names its file: the `Content-Disposition` header (RFC 6266), for the
//! broker's attachment downloads (chat decides what is inline and sanitises the names;
//! docs/ARCHITECTURE.md, "Attachments").

/// A `Content-Disposition` header value (RFC 6266): an ASCII `filename` for old clients
/// and the exact name as `filename*` in UTF-8 (RFC 5987). `inline` for what pages show in
/// place (chat says which: only the four image types), `attachment` for the rest.
pub fn content_disposition(name: &str, inline: bool) -> String {
    let disposition = if inline { "inline" } else { "attachment" };
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("report.pdf", false),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            content_disposition("Grüße \"x\"\\.png", true),
            "inline; filename=\"Gr__e _x__.png\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22%5C.png"
        );
        let header = content_disposition("a;b\r\nc 日.txt", false);
        assert!(header.is_ascii());
        assert!(!header.chars().any(|c| c.is_ascii_control()));
        assert!(header.ends_with("filename*=UTF-8''a%3Bb%0D%0Ac%20%E6%97%A5.txt"));
    }
}
