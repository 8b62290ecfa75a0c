//! Access log lines as requests to replay: nginx's `combined` format (and
//! the formats that begin like it, such as nginx's `main`) and cutover's own
//! JSON lines, told apart line by line.
//!
//! A log is untrusted input: whoever sent the logged requests wrote most of
//! it. Lines are read with a bound on their length, and a line is either a
//! method and a request target as logged, or a [`LineError`]. Whether the
//! target can be replayed at all (an origin-form path the `http` crate
//! accepts) is decided by [`Entry::origin_form`].

use std::io::BufRead;

use http::{Method, Uri};
use time::OffsetDateTime;

/// Longer lines are skipped as malformed, without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longer request targets are not replayed (nginx's default limit for a request line is 8 KiB).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// A request as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub method: Method,
    /// The request target, unescaped; not yet checked.
    pub target: Vec<u8>,
    /// When the request was logged, when the line says so readably.
    pub time: Option<OffsetDateTime>,
}

/// Why a line is not a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("no [time] followed by a quoted request")]
    NotCombined,
    #[error("the request is not METHOD TARGET [PROTOCOL]")]
    BadRequestLine,
    #[error("not a method name")]
    BadMethod,
    #[error("not a JSON object with a method and a uri")]
    BadJson,
}

impl Entry {
    /// The target as an origin-form URI (`/path?query`), or `None` when it
    /// is anything else (absolute-form, `*`, an authority, bytes a request
    /// line cannot carry, or longer than [`MAX_TARGET_BYTES`]).
    pub fn origin_form(&self) -> Option<Uri> {
        if self.target.len() > MAX_TARGET_BYTES || !self.target.starts_with(b"/") {
            return None;
        }
        let uri = Uri::try_from(self.target.as_slice()).ok()?;
        (uri.scheme().is_none() && uri.authority().is_none()).then_some(uri)
    }
}

/// Reads one request from a log line (without its line ending).
pub fn parse_line(line: &[u8]) -> Result<Entry, LineError> {
    let line = line.trim_ascii();
    if line.starts_with(b"{") {
        parse_json(line)
    } else {
        parse_combined(line)
    }
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status ...`: the
/// fields after the request are not needed. nginx escapes `"`, `\`, control
/// bytes and bytes ≥ 0x7f as `\xHH`, so the request ends at the next `"`.
fn parse_combined(line: &[u8]) -> Result<Entry, LineError> {
    let open = line.iter().position(|&b| b == b'[').ok_or(LineError::NotCombined)?;
    let close = open + line[open..].iter().position(|&b| b == b']').ok_or(LineError::NotCombined)?;
    let rest = line[close + 1..].strip_prefix(b" \"").ok_or(LineError::NotCombined)?;
    let end = rest.iter().position(|&b| b == b'"').ok_or(LineError::NotCombined)?;
    // Split before unescaping: an escaped space is part of its field.
    let mut parts = rest[..end].split(|&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(LineError::BadRequestLine);
    };
    if target.is_empty() || parts.next().is_some_and(|p| !p.starts_with(b"HTTP/")) || parts.next().is_some() {
        return Err(LineError::BadRequestLine);
    }
    Ok(Entry {
        method: Method::from_bytes(&unescape(method)).map_err(|_| LineError::BadMethod)?,
        target: unescape(target),
        time: std::str::from_utf8(&line[open + 1..close]).ok().and_then(time_local),
    })
}

/// nginx's `\xHH` escapes back to bytes; anything else is kept as it is.
fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let hex = escaped
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (escaped[i], escaped.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `22/Nov/2026:01:31:56 +0100`.
fn time_local(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(text, format).ok()
}

/// A line of cutover's JSON access log: `method`, `uri` (the target as
/// sent) and `time` (RFC 3339) are read; other fields are ignored.
fn parse_json(line: &[u8]) -> Result<Entry, LineError> {
    #[derive(serde::Deserialize)]
    struct JsonLine {
        method: String,
        uri: String,
        #[serde(default)]
        time: Option<String>,
    }
    let parsed: JsonLine = serde_json::from_slice(line).map_err(|_| LineError::BadJson)?;
    if parsed.uri.is_empty() {
        return Err(LineError::BadJson);
    }
    Ok(Entry {
        method: Method::from_bytes(parsed.method.as_bytes()).map_err(|_| LineError::BadMethod)?,
        target: parsed.uri.into_bytes(),
        time: parsed
            .time
            .and_then(|t| OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()),
    })
}

/// What [`LineReader::next_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// A line over [`MAX_LINE_BYTES`], skipped.
    TooLong,
}

/// Lines of at most [`MAX_LINE_BYTES`], however long the file's lines are:
/// the rest of a longer one is read past, never kept.
pub struct LineReader<R> {
    inner: R,
    line: Vec<u8>,
    /// Bytes read so far, line endings included.
    pub bytes: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner,
            line: Vec::new(),
            bytes: 0,
        }
    }

    /// The next line without its line ending; `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if !too_long && self.line.len() + chunk.len() <= MAX_LINE_BYTES {
                self.line.extend_from_slice(chunk);
            } else {
                too_long = true;
                self.line.clear();
            }
            let used = done.unwrap_or(available.len());
            self.inner.consume(used);
            self.bytes += used as u64;
            if done.is_some() {
                break;
            }
        }
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        Ok(Some(Line::Text(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn combined(request: &str) -> String {
        format!("203.0.113.9 - - [22/Nov/2026:01:31:56 +0100] \"{request}\" 200 612 \"-\" \"curl/8.5.0\"")
    }

    #[test]
    fn a_combined_line_gives_method_target_and_time() {
        let entry = parse_line(combined("GET /api/users/?page=2 HTTP/1.1").as_bytes()).unwrap();
        assert_eq!(entry.method, Method::GET);
        assert_eq!(entry.origin_form().unwrap(), "/api/users/?page=2");
        assert_eq!(entry.time, Some(time::macros::datetime!(2026-11-22 01:31:56 +01:00)));
        // nginx's `main` format adds fields after the user agent; HTTP/0.9 has no protocol.
        let main = format!("{} \"198.51.100.7\"", combined("HEAD /a HTTP/1.0"));
        assert_eq!(parse_line(main.as_bytes()).unwrap().method, Method::HEAD);
        assert_eq!(parse_line(combined("GET /old").as_bytes()).unwrap().target, b"/old");
    }

    #[test]
    fn what_cutover_writes_is_read_back() {
        use crate::access_log::{LogRecord, Outcome, combined_line};
        let record = LogRecord {
            peer: "127.0.0.1".parse().unwrap(),
            method: Method::OPTIONS,
            uri: "/api/caf%C3%A9?q=1".parse().unwrap(),
            version: http::Version::HTTP_11,
            authorization: None,
            referer: Some(http::HeaderValue::from_static("https://example.com/\"quoted\"")),
            user_agent: Some(http::HeaderValue::from_bytes(b"agent \xff").unwrap()),
            request_id: None,
            route: None,
            backend: None,
        };
        let outcome = Outcome {
            status: 204,
            body_bytes: 0,
            duration: std::time::Duration::ZERO,
            upstream_status: None,
        };
        let line = combined_line(&record, &outcome, time::macros::datetime!(2026-11-22 01:31:56 UTC));
        let entry = parse_line(line.trim_end().as_bytes()).unwrap();
        assert_eq!((entry.origin_form().unwrap(), entry.method), (record.uri.clone(), Method::OPTIONS));
        let json =
            r#"{"time":"2026-11-22T01:31:56.5Z","remote_addr":"127.0.0.1","method":"GET","uri":"/api/x?y=1","status":200,"extra":null}"#;
        let entry = parse_line(json.as_bytes()).unwrap();
        assert_eq!(entry.origin_form().unwrap(), "/api/x?y=1");
        assert!(entry.time.is_some());
    }

    #[test]
    fn broken_lines_are_errors_not_requests() {
        let cases: &[(&str, LineError)] = &[
            ("", LineError::NotCombined),
            ("garbage", LineError::NotCombined),
            ("1.2.3.4 - - [22/Nov/2026:01:31:56 +0000] \"GET / HTTP/1.1", LineError::NotCombined),
            (&combined("-"), LineError::BadRequestLine),
            (&combined(""), LineError::BadRequestLine),
            (&combined("GET /a b HTTP/1.1"), LineError::BadRequestLine),
            (&combined("GET /a HTTP/1.1 x"), LineError::BadRequestLine),
            (&combined("\\x16\\x03\\x01 /a HTTP/1.1"), LineError::BadMethod),
            ("{\"method\": \"GET\"}", LineError::BadJson),
            ("{\"method\": \"GET\", \"uri\": \"\"}", LineError::BadJson),
            ("{\"method\": \"G T\", \"uri\": \"/\"}", LineError::BadMethod),
            ("{not json", LineError::BadJson),
        ];
        for (line, error) in cases {
            assert_eq!(parse_line(line.as_bytes()), Err(*error), "{line:?}");
        }
        // A time nginx would not write is not needed to replay the request.
        let odd_time = "1.2.3.4 - - [yesterday] \"GET /a HTTP/1.1\" 200 1 \"-\" \"-\"";
        assert_eq!(parse_line(odd_time.as_bytes()).unwrap().time, None);
    }

    #[test]
    fn only_an_origin_form_target_is_replayed() {
        let target = |t: &[u8]| {
            Entry {
                method: Method::GET,
                target: t.to_vec(),
                time: None,
            }
            .origin_form()
        };
        assert!(target(b"/a/b?c=d").is_some());
        for bad in [
            &b"http://evil.example/a"[..],
            b"evil.example:443",
            b"*",
            b"/a\r\nX-Injected: 1",
            b"/a\nGET /b",
            b"/a b",
            b"/a\0",
        ] {
            assert!(target(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(target(format!("/{}", "a".repeat(MAX_TARGET_BYTES)).as_bytes()).is_none());
        // A CRLF logged escaped is unescaped, then refused.
        let smuggled = parse_line(combined("GET /a\\x0D\\x0AX-Injected:\\x201 HTTP/1.1").as_bytes()).unwrap();
        assert_eq!(smuggled.target, b"/a\r\nX-Injected: 1");
        assert!(smuggled.origin_form().is_none());
    }

    #[test]
    fn lines_are_bounded_and_the_rest_of_a_long_one_is_skipped() {
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        let text = format!("first\r\n{long}\nlast");
        let mut reader = LineReader::new(std::io::BufReader::with_capacity(1024, text.as_bytes()));
        assert_eq!(reader.next_line().unwrap(), Some(Line::Text(b"first")));
        assert_eq!(reader.next_line().unwrap(), Some(Line::TooLong));
        assert_eq!(reader.next_line().unwrap(), Some(Line::Text(b"last")));
        assert_eq!(reader.next_line().unwrap(), None);
        assert_eq!(reader.bytes, text.len() as u64);
        let exact = "y".repeat(MAX_LINE_BYTES);
        let mut reader = LineReader::new(std::io::BufReader::with_capacity(1000, exact.as_bytes()));
        assert_eq!(reader.next_line().unwrap(), Some(Line::Text(exact.as_bytes())));
    }
}
