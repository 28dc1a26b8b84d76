//! The dev mailbox: the `.eml` files of a directory (the mail service writes them in the
//! embedded run), newest first, read as far as a person needs them — the `To`, `From`,
//! `Subject` and `Date` headers and the plain-text part.
//!
//! Only plain file names are ever opened (see [`valid_name`]), and only regular files
//! directly inside the directory: no path leaves it.

use base64::Engine;
use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Most mails listed.
pub const MAX_LISTED: usize = 200;
/// Largest file read; bigger ones are listed without their text.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One mail, as the mailbox shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The file name (`<id>.eml`).
    pub name: String,
    /// The `To` header.
    pub to: String,
    /// The `From` header.
    pub from: String,
    /// The `Subject` header, encoded words decoded.
    pub subject: String,
    /// The `Date` header as written.
    pub date: String,
    /// The plain-text part, transfer encoding undone.
    pub text: String,
}

/// Whether `name` is a mail file name: 1–128 of ASCII letters, digits, `-`, `_` and
/// `.`, ending in `.eml`, not starting with a dot. No separators, so no traversal.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 128
        && name.len() > ".eml".len()
        && name.ends_with(".eml")
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The mails of `dir`, newest first (by file time, then name). A missing directory is an
/// empty mailbox.
pub async fn list(dir: PathBuf) -> std::io::Result<Vec<Mail>> {
    tokio::task::spawn_blocking(move || list_blocking(&dir))
        .await
        .map_err(std::io::Error::other)?
}

fn list_blocking(dir: &Path) -> std::io::Result<Vec<Mail>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files: Vec<(SystemTime, String)> = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_name(&name) {
            continue;
        }
        // `DirEntry::metadata` does not follow symlinks: links are skipped.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name));
    }
    files.sort_by(|a, b| b.cmp(a));
    Ok(files
        .into_iter()
        .take(MAX_LISTED)
        .filter_map(|(_, name)| read_blocking(dir, &name))
        .collect())
}

/// One mail of `dir` by file name; `None` for an invalid name, a missing file, or
/// anything but a regular file directly inside `dir`.
pub async fn read_one(dir: PathBuf, name: String) -> Option<Mail> {
    if !valid_name(&name) {
        return None;
    }
    tokio::task::spawn_blocking(move || read_blocking(&dir, &name))
        .await
        .ok()
        .flatten()
}

fn read_blocking(dir: &Path, name: &str) -> Option<Mail> {
    if !valid_name(name) {
        return None;
    }
    let path = dir.join(name);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > MAX_FILE_BYTES {
        return Some(Mail {
            name: name.to_owned(),
            to: String::new(),
            from: String::new(),
            subject: "(too large to show)".to_owned(),
            date: String::new(),
            text: String::new(),
        });
    }
    let raw = fs::read(&path).ok()?;
    Some(parse(name, &raw))
}

/// Reads a mail: headers, and the first `text/plain` part (the body itself when the mail
/// is not multipart).
pub fn parse(name: &str, raw: &[u8]) -> Mail {
    let raw = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let (headers, body) = split_headers(&raw);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| decode_words(value))
            .unwrap_or_default()
    };
    let text = text_part(&headers, body, 0).unwrap_or_else(|| "(no text part)".to_owned());
    Mail {
        name: name.to_owned(),
        to: header("To"),
        from: header("From"),
        subject: {
            let subject = header("Subject");
            if subject.is_empty() {
                "(no subject)".to_owned()
            } else {
                subject
            }
        },
        date: header("Date"),
        text: text.trim_end().to_owned(),
    }
}

/// Header fields (unfolded) and the rest.
fn split_headers(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match raw.find("\n\n") {
        Some(at) => (&raw[..at], &raw[at + 2..]),
        None => (raw, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map_or("", |(_, value)| value.as_str())
}

/// A parameter of a structured header (`boundary="x"`), unquoted.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn text_part(headers: &[(String, String)], body: &str, depth: u8) -> Option<String> {
    let content_type = find(headers, "Content-Type");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("text/plain")
        .trim()
        .to_ascii_lowercase();
    let media = if media.is_empty() {
        "text/plain".to_owned()
    } else {
        media
    };
    if media.starts_with("multipart/") {
        if depth > 4 {
            return None;
        }
        let boundary = parameter(content_type, "boundary")?;
        let delimiter = format!("--{boundary}");
        let parts = body.split(delimiter.as_str()).skip(1);
        for part in parts {
            if part.starts_with("--") {
                break;
            }
            let part = part.strip_prefix('\n').unwrap_or(part);
            let (part_headers, part_body) = split_headers(part);
            if let Some(text) = text_part(&part_headers, part_body, depth + 1) {
                return Some(text);
            }
        }
        return None;
    }
    if media != "text/plain" {
        return None;
    }
    let encoding = find(headers, "Content-Transfer-Encoding").to_ascii_lowercase();
    Some(match encoding.as_str() {
        "quoted-printable" => quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_or_else(
                    |_| body.to_owned(),
                    |bytes| String::from_utf8_lossy(&bytes).into_owned(),
                )
        }
        _ => body.to_owned(),
    })
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// Undoes quoted-printable: `=XX` bytes and `=` soft line breaks (`_` as a space when
/// `underscores`, as in encoded words).
fn qp_bytes(text: &str, underscores: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'=');
                    i += 1;
                }
            },
            b'_' if underscores => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fn quoted_printable(text: &str) -> String {
    String::from_utf8_lossy(&qp_bytes(text, false)).into_owned()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`); whitespace
/// between two encoded words is dropped.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let decoded = rest[start + 2..]
            .split_once('?')
            .and_then(|(_charset, tail)| {
                let (encoding, tail) = tail.split_once('?')?;
                let (text, after) = tail.split_once("?=")?;
                let bytes = match encoding.to_ascii_lowercase().as_str() {
                    "b" => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?,
                    "q" => qp_bytes(text, true),
                    _ => return None,
                };
                Some((String::from_utf8_lossy(&bytes).into_owned(), after))
            });
        match decoded {
            Some((word, after)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&word);
                rest = after;
                last_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "From: microchat <no-reply@microchat.localhost>\r\nTo: ada@example.com\r\nSubject: =?utf-8?b?V2VsY29tZSwgYWRh?= =?utf-8?q?_=E2=9C=93?=\r\nDate: Tue, 01 Dec 2026 18:38:32 +0000\r\nContent-Type: multipart/alternative;\r\n boundary=\"XYZ\"\r\n\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHi ada, caf=C3=A9 is a very long line that wraps=\r\n here.\r\n--XYZ\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n--XYZ--\r\n";

    #[test]
    fn parses_lettre_mail() {
        let mail = parse("a.eml", SAMPLE.as_bytes());
        assert_eq!(mail.to, "ada@example.com");
        assert_eq!(mail.subject, "Welcome, ada ✓");
        assert_eq!(mail.date, "Tue, 01 Dec 2026 18:38:32 +0000");
        assert_eq!(
            mail.text,
            "Hi ada, café is a very long line that wraps here."
        );
    }

    #[test]
    fn plain_and_base64_bodies() {
        let mail = parse("b.eml", b"Subject: hi\n\nplain body\n");
        assert_eq!(mail.text, "plain body");
        let mail = parse(
            "c.eml",
            b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVs\nbG8=\n",
        );
        assert_eq!(mail.text, "hello");
        assert_eq!(mail.subject, "(no subject)");
        let mail = parse("d.eml", b"Content-Type: text/html\n\n<p>x</p>");
        assert_eq!(mail.text, "(no text part)");
    }

    #[test]
    fn names() {
        for good in ["0196-abc.eml", "a.b.eml", "X_1.eml"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".eml",
            "../x.eml",
            "..eml",
            "a/b.eml",
            "a\\b.eml",
            ".hidden.eml",
            "a.txt",
            "a..eml",
            "%2e%2e.eml",
            "a b.eml",
            "é.eml",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&format!("{}.eml", "a".repeat(125))));
    }
}
