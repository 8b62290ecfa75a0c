//! Request checks: what must hold before a request is routed. Each failed
//! check is a [`Refusal`]; the request never reaches a backend.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri, Version};

use super::refusal::Refusal;
use crate::config::ServerSettings;
use crate::routing::{PathError, normalize_path_with};
use crate::upstream::{ClientFault, Failure, Target};

/// What the checks established about a request.
pub struct Checked {
    /// The host the client asked for: the request target's authority, else `Host`.
    pub client_host: Option<HeaderValue>,
    /// The normalised path, when it differs from the path as sent.
    normalised: Option<String>,
}

impl Checked {
    /// What the client asked for, as the backends are sent it; `uri` is the
    /// client's. With no authority in the request target, the `Host`
    /// header is the client host.
    pub fn target(&self, uri: &Uri) -> Target<'_> {
        Target {
            normalised: self.normalised.as_deref(),
            client_host: self.client_host.as_ref(),
            host_in_headers: self.client_host.is_some() && uri.authority().is_none(),
        }
    }
}

/// Checks the request's host and path.
pub fn check<B>(req: &Request<B>, server: &ServerSettings) -> Result<Checked, Refusal> {
    let client_host = client_host(req)?;
    let normalised = match normalize_path_with(req.uri().path(), server.encoded_slashes) {
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Ok(std::borrow::Cow::Owned(path)) => Some(path),
        Err(e) => {
            return Err(Refusal::BadRequest(match (req.uri().path(), e) {
                ("*", _) => "asterisk-form targets (OPTIONS *) are not forwarded",
                ("", _) => "authority-form targets (CONNECT) are not forwarded",
                (_, PathError::EncodedSlash) => "encoded slash (%2F) in the request path",
                (_, PathError::EncodedNul) => "encoded NUL (%00) in the request path",
                _ => "malformed request path",
            }));
        }
    };
    Ok(Checked { client_host, normalised })
}

/// Refuses a body whose declared length is over `server.max_body_bytes`
/// before anything is sent (a streaming body is counted as it is read).
pub fn body_size(headers: &HeaderMap, server: &ServerSettings) -> Result<(), Failure> {
    match (server.max_body_bytes, content_length(headers)) {
        (Some(limit), Some(len)) if len > limit => Err(Failure::Client(ClientFault::BodyTooLarge)),
        _ => Ok(()),
    }
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The host the client asked for: the request target's authority, else `Host`.
/// HTTP/1.1 requires exactly one `Host` (RFC 9112 §3.2).
fn client_host<B>(req: &Request<B>) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    if let Some(h) = &host
        && !h.to_str().is_ok_and(valid_host)
    {
        return Err(Refusal::BadRequest("invalid Host header"));
    }
    if let Some(authority) = req.uri().authority() {
        if !valid_host(authority.as_str()) {
            return Err(Refusal::BadRequest("invalid authority in the request target"));
        }
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(Refusal::BadRequest("missing Host header"));
    }
    Ok(host)
}

/// `host[:port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a host name or IPv4
/// address, or an IP literal in brackets, then an optional port of digits.
/// Userinfo (`user@host`) is refused: a backend could read it as another
/// host. A name is what DNS can hold: letters, digits, `-` and `_` in
/// non-empty labels, and at most a final dot. RFC 3986 would also allow
/// `%` escapes and sub-delims (`,;=!$&'()*+`), which no host name has and
/// which split or end values downstream (`a,b` in `X-Forwarded-Host` reads
/// as two hosts); nginx passes them on, we do not. Checked byte by byte: it
/// runs on every request.
fn valid_host(s: &str) -> bool {
    let bytes = s.as_bytes();
    let host_len = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(end) if end > 1 && bytes[1..end].iter().all(|&b| is_ip_literal_byte(b)) => end + 1,
            _ => return false,
        }
    } else {
        let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
        // A dot before every label and none after another: no empty label.
        let mut prev = b'.';
        for &b in &bytes[..end] {
            if !is_host_name_byte(b) || (b == b'.' && prev == b'.') {
                return false;
            }
            prev = b;
        }
        if end == 0 {
            return false;
        }
        end
    };
    match &bytes[host_len..] {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Letters, digits, `-`, `_` and `.`.
fn is_host_name_byte(b: u8) -> bool {
    HOST_NAME[b as usize]
}

/// Inside `[...]`: IPv6 (with an optional zone) or IPvFuture.
fn is_ip_literal_byte(b: u8) -> bool {
    IP_LITERAL[b as usize]
}

/// Every request's `Host` is checked byte by byte: a table lookup per byte
/// instead of a scan of the punctuation list.
static HOST_NAME: [bool; 256] = byte_class(b"-._");
static IP_LITERAL: [bool; 256] = byte_class(b":.%-_~");

/// ASCII letters and digits, and `extra`.
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut b = 0;
    while b < 256 {
        class[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        class[extra[i] as usize] = true;
        i += 1;
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_numeric_port() {
        for host in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "my_host",
            "xn--bcher-kva.example",
            "[::1]",
            "[::1]:8080",
            "[fe80::1%25eth0]:80",
            "host:",
            "example.com.",
            "example.com.:443",
        ] {
            assert!(valid_host(host), "{host} should be accepted");
        }
        for host in [
            "",
            ":80",
            "user@example.com",
            "example.com:80@evil",
            "example.com:http",
            "example.com:80:90",
            "exa mple.com",
            "example.com/path",
            "example.com?q",
            "::1",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8o",
            "ex\"ample",
            "a,b",
            "example.com,evil.example",
            "a;b",
            "a=b",
            "a!b",
            "a$b",
            "a&b",
            "a'b",
            "a(b)",
            "a*b",
            "a+b",
            "a~b",
            "a%2Fb",
            ".example.com",
            "example..com",
            "example.com..",
            ".",
            ".:80",
        ] {
            assert!(!valid_host(host), "{host:?} should be refused");
        }
    }

    fn server() -> ServerSettings {
        crate::config::Config::parse(
            std::path::Path::new("cutover.yaml"),
            "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\nbackends:\n  b: { url: \"http://127.0.0.1:1\" }\nroutes:\n  - { name: r, backends: { b: {} } }\n".to_string(),
        )
        .unwrap()
        .server
    }

    fn refusal(req: Request<()>) -> Option<String> {
        check(&req, &server()).err().map(|r| match r {
            Refusal::BadRequest(why) => why.to_string(),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn requests_without_one_valid_host_or_with_a_path_that_cannot_be_routed_are_refused() {
        let get = |uri: &str| Request::get(uri).header(header::HOST, "app");
        assert_eq!(refusal(get("/a/../b").body(()).unwrap()), None);
        assert_eq!(refusal(Request::get("/").body(()).unwrap()).as_deref(), Some("missing Host header"));
        assert_eq!(
            refusal(get("/").header(header::HOST, "other").body(()).unwrap()).as_deref(),
            Some("more than one Host header")
        );
        assert_eq!(
            refusal(get("/a%2Fb").body(()).unwrap()).as_deref(),
            Some("encoded slash (%2F) in the request path")
        );
        assert_eq!(
            refusal(get("*").body(()).unwrap()).as_deref(),
            Some("asterisk-form targets (OPTIONS *) are not forwarded")
        );
        // HTTP/1.0 may omit Host.
        assert_eq!(refusal(Request::get("/").version(Version::HTTP_10).body(()).unwrap()), None);
    }

    #[test]
    fn the_path_is_the_normalised_one_and_the_host_the_target_authority_first() {
        let req = Request::get("http://shop.example/a/./b")
            .header(header::HOST, "app")
            .body(())
            .unwrap();
        let server = server();
        let checked = check(&req, &server).unwrap();
        let target = checked.target(req.uri());
        assert_eq!(target.path(req.uri()), "/a/b");
        assert_eq!(target.client_host, Some(&HeaderValue::from_static("shop.example")));
        assert!(!target.host_in_headers, "the authority replaced the header");
        let req = Request::get("/a/b").header(header::HOST, "app").body(()).unwrap();
        let checked = check(&req, &server).unwrap();
        let target = checked.target(req.uri());
        assert_eq!((target.path(req.uri()), target.normalised), ("/a/b", None));
        assert!(target.host_in_headers);
    }
}
