//! Serving media files: byte ranges, `Content-Disposition` (inline only for types that cannot
//! run script, with a sanitised RFC 6266 / RFC 5987 file name) and the security headers every
//! media response carries. The files are streamed from disk, never read whole.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::error::{Error, Result};
use crate::service::media::Servable;

/// The `Content-Security-Policy` of every media response: nothing in it may run.
pub const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self';";

/// Types served `inline` (the specification's list of types that cannot cause cross-site
/// scripting); everything else is an `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The size of the chunks a file is streamed in.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// The longest file name put in `Content-Disposition`, in characters.
const MAX_FILENAME_CHARS: usize = 255;

/// What a `Range` header asks for, for a file of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range (or one we ignore, as RFC 9110 allows: malformed, several ranges).
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// No byte of the range is in the file: 416.
    Unsatisfiable,
}

/// Parses a single byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Longer than u64: as good as infinite.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-n: the last n bytes.
        (true, None, Some(n)) => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), None) if last.trim().is_empty() => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start,
                    end: size - 1,
                }
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        _ => RangeRequest::Full,
    }
}

/// A file name safe to put in a header: no control characters, quotes, backslashes or path
/// separators, no leading dots or surrounding spaces, at most 255 characters.
pub fn sanitise_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\' | '/' | ';'))
        .take(MAX_FILENAME_CHARS)
        .collect();
    cleaned.trim().trim_start_matches('.').trim().to_owned()
}

/// The type without parameters, lowercase.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether content of this type may be served `inline`.
pub fn is_inline_type(content_type: &str) -> bool {
    INLINE_TYPES.contains(&essence(content_type).as_str())
}

/// RFC 5987 `attr-char`s are kept, every other byte is percent-encoded.
fn rfc5987(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Content-Disposition` of a download: `inline` for the safe types, `attachment`
/// otherwise, with the sanitised file name (ASCII in `filename`, UTF-8 in `filename*`).
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline_type(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let name = filename.map(sanitise_filename).unwrap_or_default();
    if name.is_empty() {
        return kind.to_owned();
    }
    if name.is_ascii() {
        return format!("{kind}; filename=\"{name}\"");
    }
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    format!(
        "{kind}; filename=\"{fallback}\"; filename*=utf-8''{}",
        rfc5987(&name)
    )
}

/// Adds the headers every media response carries, errors included.
pub fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
}

fn io_error(e: std::io::Error) -> Error {
    Error::internal(format!("reading media: {e}"))
}

/// Streams a file (or the asked byte range of it) with its type and disposition.
pub async fn file_response(
    file: &Servable,
    disposition: &str,
    range: Option<&str>,
) -> Result<Response> {
    let content_type = HeaderValue::from_str(&file.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(disposition)
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let size = file.size;
    let (status, start, length) = match parse_range(range, size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut response = (
                StatusCode::RANGE_NOT_SATISFIABLE,
                axum::Json(json!({
                    "errcode": "M_UNKNOWN",
                    "error": format!("the range is not satisfiable (the content has {size} bytes)"),
                })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(response);
        }
    };
    let mut handle = match tokio::fs::File::open(&file.path).await {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(path = %file.path.display(), "a media file is missing");
            return Err(Error::NotFound("media not found".into()));
        }
        Err(e) => return Err(io_error(e)),
    };
    if start > 0 {
        handle
            .seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io_error)?;
    }
    let body = Body::from_stream(ReaderStream::with_capacity(
        handle.take(length),
        STREAM_CHUNK_BYTES,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + length - 1))
    {
        headers.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_byte_ranges_are_parsed() {
        use RangeRequest::*;
        let p = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(p("bytes=0-9"), Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=50-1000"), Partial { start: 50, end: 99 });
        assert_eq!(
            p("bytes=0-99999999999999999999999"),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(p("bytes=100-"), Unsatisfiable);
        assert_eq!(p("bytes=100-200"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Ignored: not bytes, malformed, several ranges, reversed.
        for ignored in [
            "items=0-1",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "bytes=9-1",
            "bytes=-",
            "bytes",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(p(ignored), Full, "{ignored}");
        }
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitise_filename("photo.png"), "photo.png");
        assert_eq!(sanitise_filename("../../etc/passwd"), "etcpasswd");
        assert_eq!(sanitise_filename("a\"b\\c\r\nd;e"), "abcde");
        assert_eq!(sanitise_filename(".."), "");
        assert_eq!(sanitise_filename(&"x".repeat(1000)).len(), 255);
        assert_eq!(sanitise_filename("  résumé.pdf "), "résumé.pdf");
    }

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(
            content_disposition("image/png", Some("cat.png")),
            "inline; filename=\"cat.png\""
        );
        assert_eq!(content_disposition("IMAGE/JPEG; q=1", None), "inline");
        assert_eq!(
            content_disposition("image/svg+xml", Some("x.svg")),
            "attachment; filename=\"x.svg\""
        );
        assert!(content_disposition("text/html", None).starts_with("attachment"));
        assert!(content_disposition("application/octet-stream", None).starts_with("attachment"));
        assert_eq!(
            content_disposition("application/pdf", Some("résumé \"1\".pdf")),
            "attachment; filename=\"r_sum_ 1.pdf\"; filename*=utf-8''r%C3%A9sum%C3%A9%201.pdf"
        );
    }
}
