//! The `multipart/mixed` bodies of the federation media endpoints (RFC 2046): two parts, the
//! media's metadata as JSON (`{}` for now), then the media itself (or a `Location` header naming
//! where it is). Parsing never trusts the peer: every length is checked against the body, and a
//! malformed body is an error, never a panic.

use crate::util::random_string;

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;
/// The most parts a body may have before it is refused.
const MAX_PARTS: usize = 8;
/// The most header lines one part may have.
const MAX_HEADERS: usize = 32;

/// One part of a multipart body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl Part<'_> {
    /// The first value of a header (`name` in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A random boundary (alphanumeric, so it needs no quoting).
pub fn new_boundary() -> String {
    random_string(32)
}

/// The `Content-Type` of a body with `boundary`.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// Everything of a media answer before the media's bytes: the metadata part and the headers of
/// the media part.
pub fn media_head(boundary: &str, content_type: &str, disposition: &str) -> Vec<u8> {
    format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    )
    .into_bytes()
}

/// Everything of a media answer after the media's bytes.
pub fn media_tail(boundary: &str) -> Vec<u8> {
    format!("\r\n--{boundary}--\r\n").into_bytes()
}

/// The boundary named in a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return Err(format!(
            "the content type is {essence:?}, not multipart/mixed"
        ));
    }
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.is_empty() || value.len() > MAX_BOUNDARY {
                return Err("the multipart boundary is empty or too long".into());
            }
            return Ok(value.to_owned());
        }
    }
    Err("the multipart body has no boundary".into())
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    let first = needle[0];
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let rest = haystack.get(at..)?;
        let offset = rest.iter().position(|b| *b == first)?;
        at += offset;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Splits a body into its parts.
pub fn parse<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    // The first delimiter starts the body or a line (after a preamble).
    let mut at = if body.starts_with(&delimiter) {
        0
    } else {
        let mut line_delimiter = b"\n".to_vec();
        line_delimiter.extend_from_slice(&delimiter);
        find(body, &line_delimiter, 0).ok_or("no multipart boundary in the body")? + 1
    };
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        let rest = body.get(after..).ok_or("the body ends in a boundary")?;
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if parts.len() == MAX_PARTS {
            return Err("too many parts in the multipart body".into());
        }
        // The rest of the delimiter line (transport padding) ends with a line break.
        let line_end = find(body, b"\n", after).ok_or("a boundary line does not end")?;
        let start = line_end + 1;
        let mut next_delimiter = b"\r\n".to_vec();
        next_delimiter.extend_from_slice(&delimiter);
        let (end, next) = match find(body, &next_delimiter, start) {
            Some(end) => (end, end + 2),
            None => {
                let mut bare = b"\n".to_vec();
                bare.extend_from_slice(&delimiter);
                let end = find(body, &bare, start).ok_or("a part does not end")?;
                (end, end + 1)
            }
        };
        let content = body.get(start..end).ok_or("a part is out of the body")?;
        parts.push(parse_part(content)?);
        at = next;
    }
}

/// A part's headers (up to the first empty line) and body.
fn parse_part(part: &[u8]) -> Result<Part<'_>, String> {
    let mut headers = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find(part, b"\n", at).ok_or("a part has no empty line after its headers")?;
        let line = part
            .get(at..line_end)
            .ok_or("a header line is out of the part")?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = line_end + 1;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err("too many headers in a part".into());
        }
        let line = std::str::from_utf8(line).map_err(|_| "a header is not UTF-8")?;
        let (name, value) = line
            .split_once(':')
            .ok_or("a header line without a colon")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let body = part.get(at..).ok_or("a part body is out of the part")?;
    Ok(Part { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_we_write_we_read() {
        let boundary = new_boundary();
        let bytes = b"\x89PNG\r\n--not-the-boundary\r\n\x00\xff";
        let mut body = media_head(&boundary, "image/png", "inline; filename=\"a.png\"");
        body.extend_from_slice(bytes);
        body.extend_from_slice(&media_tail(&boundary));
        let found = boundary_of(&content_type(&boundary)).unwrap();
        let parts = parse(&found, &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-type"), Some("application/json"));
        assert_eq!(parts[0].body, b"{}");
        assert_eq!(parts[1].header("content-type"), Some("image/png"));
        assert_eq!(
            parts[1].header("content-disposition"),
            Some("inline; filename=\"a.png\"")
        );
        assert_eq!(parts[1].body, bytes);
    }

    #[test]
    fn other_servers_bodies_are_read() {
        // A preamble, a quoted boundary, bare line breaks, a Location part.
        let body = b"preamble\r\n--b0\r\nContent-Type: application/json\r\n\r\n{}\r\n--b0\r\n\
                     Location: https://cdn.example.org/x\r\n\r\n\r\n--b0--";
        let parts = parse(
            &boundary_of("Multipart/Mixed; boundary=\"b0\"").unwrap(),
            body,
        )
        .unwrap();
        assert_eq!(
            parts[1].header("location"),
            Some("https://cdn.example.org/x")
        );
        assert!(parts[1].body.is_empty());
        let bare = b"--b\nContent-Type: application/json\n\n{}\n--b\n\nxyz\n--b--\n";
        let parts = parse("b", bare).unwrap();
        assert_eq!(parts[1].body, b"xyz");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(boundary_of("application/json").is_err());
        assert!(boundary_of("multipart/mixed").is_err());
        assert!(boundary_of("multipart/mixed; boundary=").is_err());
        assert!(boundary_of(&format!("multipart/mixed; boundary={}", "x".repeat(71))).is_err());
        for body in [
            &b""[..],
            b"--b",
            b"--b\r\n",
            b"--bX\r\n--b",
            b"--b\r\nno empty line\r\n--b--",
            b"--b\r\nno colon\r\n\r\nx\r\n--b--",
            b"nothing here",
            b"--b\r\n\r\nunterminated part",
        ] {
            assert!(
                parse("b", body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let many: String = (0..20).map(|_| "--b\r\n\r\nx\r\n").collect::<String>() + "--b--";
        assert!(parse("b", many.as_bytes()).is_err());
    }
}
