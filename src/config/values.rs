//! Scalar config values that are parsed while deserialising, so a bad one is
//! reported by serde_yaml at its exact line and column. Each serialises as
//! the text it was read from (`Display`, which `FromStr` reads back).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

/// Implements `Deserialize` for a value type through its `FromStr`.
macro_rules! from_str_value {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Parsing inside the visitor keeps the value's own position in the error.
                struct Visitor;
                impl<'de> de::Visitor<'de> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $what)
                    }
                    fn visit_str<E: de::Error>(self, raw: &str) -> Result<$ty, E> {
                        raw.parse().map_err(|e| E::custom(format!("invalid {} {raw:?}: {e}", $what)))
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}

/// Implements `Serialize` for a value type as its `Display` text.
macro_rules! display_value {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// A duration written as `2s`, `800ms`, `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Dur)
    }
}
from_str_value!(Dur, "duration");
display_value!(Dur);

/// Whole seconds as `90s`, whole milliseconds as `1500ms`, anything finer as humantime writes it.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}", humantime::format_duration(d))
        }
    }
}

/// A socket address such as `127.0.0.1:8080` or `[::1]:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr(pub SocketAddr);

impl FromStr for Addr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(Addr)
    }
}
from_str_value!(Addr, "address");
display_value!(Addr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A backend base URL: `http://host:port` with an optional path prefix,
/// `unix:/path/to.sock` (nginx's `http://unix:/path/to.sock` too) for HTTP
/// over a Unix socket, as gunicorn and uWSGI are often bound, or
/// `file:/path/to/dir` for files served from a directory, as nginx's `root`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub scheme: http::uri::Scheme,
    /// For a Unix socket, `localhost`: the `Host` a request without one gets.
    pub authority: http::uri::Authority,
    /// Path prefix prepended to every forwarded path, without a trailing slash.
    pub base_path: String,
    /// The Unix socket connected to instead of `authority`.
    pub socket: Option<std::path::PathBuf>,
    /// The directory whose files answer instead of a server.
    pub directory: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0}")]
    Syntax(#[from] http::uri::InvalidUri),
    #[error("scheme must be http, https, unix or file")]
    Scheme,
    #[error("a host is required")]
    Host,
    #[error("query strings and fragments are not allowed in a backend URL")]
    Query,
    #[error("a Unix socket needs an absolute path, as in unix:/run/gunicorn.sock")]
    SocketPath,
    #[error("a Unix socket's path is at most 107 bytes long")]
    SocketPathLength,
    #[error("TLS over a Unix socket is not supported; use unix:/path")]
    SocketTls,
    #[error("a directory needs an absolute path, as in file:/srv/app/static")]
    DirectoryPath,
}

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl BackendUrl {
    /// `unix:/path[:/base]`, the part after the scheme of either spelling.
    fn unix(rest: &str) -> Result<BackendUrl, UrlError> {
        if rest.contains(['?', '#']) {
            return Err(UrlError::Query);
        }
        // nginx's spelling gives a base path after a colon: unix:/x.sock:/app
        let (path, base) = rest.split_once(':').unwrap_or((rest, ""));
        if !path.starts_with('/') || path.len() < 2 || !(base.is_empty() || base.starts_with('/')) {
            return Err(UrlError::SocketPath);
        }
        if path.len() > MAX_SOCKET_PATH {
            return Err(UrlError::SocketPathLength);
        }
        // The base path must be one a request URI can carry.
        let base: http::uri::PathAndQuery = if base.is_empty() { "/".parse()? } else { base.parse()? };
        Ok(BackendUrl {
            scheme: http::uri::Scheme::HTTP,
            authority: http::uri::Authority::from_static("localhost"),
            base_path: base.path().trim_end_matches('/').to_string(),
            socket: Some(path.into()),
            directory: None,
        })
    }

    /// `file:/path` or `file:///path`, the part after `file:`.
    fn directory(rest: &str) -> Result<BackendUrl, UrlError> {
        if rest.contains(['?', '#']) {
            return Err(UrlError::Query);
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(UrlError::DirectoryPath);
        }
        let path = path.trim_end_matches('/');
        Ok(BackendUrl {
            scheme: http::uri::Scheme::HTTP,
            authority: http::uri::Authority::from_static("localhost"),
            base_path: String::new(),
            socket: None,
            directory: Some(if path.is_empty() { "/" } else { path }.into()),
        })
    }
}

impl FromStr for BackendUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("http://unix:")) {
            return BackendUrl::unix(rest);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return BackendUrl::directory(rest);
        }
        if s.starts_with("https://unix:") {
            return Err(UrlError::SocketTls);
        }
        let uri: http::Uri = s.parse()?;
        let scheme = uri.scheme().cloned().ok_or(UrlError::Scheme)?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(UrlError::Scheme);
        }
        let authority = uri.authority().cloned().ok_or(UrlError::Host)?;
        if authority.host().is_empty() {
            return Err(UrlError::Host);
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(UrlError::Query);
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(BackendUrl {
            scheme,
            authority,
            base_path,
            socket: None,
            directory: None,
        })
    }
}
from_str_value!(BackendUrl, "URL");
display_value!(BackendUrl);

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.directory {
            return write!(f, "file:{}", dir.display());
        }
        match &self.socket {
            Some(path) if self.base_path.is_empty() => write!(f, "unix:{}", path.display()),
            Some(path) => write!(f, "unix:{}:{}", path.display(), self.base_path),
            None => write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path),
        }
    }
}

/// A listener's `redirect_https`: `true` (to port 443), `false`, or the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RedirectHttps {
    On(bool),
    Port(u16),
}

impl<'de> Deserialize<'de> for RedirectHttps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RedirectHttps;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a port")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<RedirectHttps, E> {
                Ok(RedirectHttps::On(on))
            }
            fn visit_u64<E: de::Error>(self, port: u64) -> Result<RedirectHttps, E> {
                match u16::try_from(port) {
                    Ok(port) if port > 0 => Ok(RedirectHttps::Port(port)),
                    _ => Err(E::custom(format!("{port} is not a port"))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl RedirectHttps {
    /// The port redirected to, if the listener redirects.
    pub fn port(self) -> Option<u16> {
        match self {
            RedirectHttps::On(on) => on.then_some(443),
            RedirectHttps::Port(port) => Some(port),
        }
    }
}

/// A regular expression, compiled once at load.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl FromStr for Pattern {
    type Err = regex::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        regex::Regex::new(s).map(Pattern)
    }
}
from_str_value!(Pattern, "regex");
display_value!(Pattern);

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// An HTTP header name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderNameValue(pub http::HeaderName);

impl FromStr for HeaderNameValue {
    type Err = http::header::InvalidHeaderName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        http::HeaderName::from_bytes(s.trim().as_bytes()).map(HeaderNameValue)
    }
}
from_str_value!(HeaderNameValue, "header name");
display_value!(HeaderNameValue);

impl fmt::Display for HeaderNameValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// An HTTP method, upper-cased as written on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodValue(pub http::Method);

impl FromStr for MethodValue {
    type Err = http::method::InvalidMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        http::Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes()).map(MethodValue)
    }
}
from_str_value!(MethodValue, "method");
display_value!(MethodValue);

impl fmt::Display for MethodValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A CIDR block (`10.0.0.0/8`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = ipnet::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(Cidr(ipnet::IpNet::from(ip))),
            Err(_) => s.parse().map(Cidr),
        }
    }
}
from_str_value!(Cidr, "CIDR");
display_value!(Cidr);

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_keep_a_base_path_without_trailing_slash() {
        let url: BackendUrl = "http://127.0.0.1:8000/legacy/".parse().unwrap();
        assert_eq!(url.authority.as_str(), "127.0.0.1:8000");
        assert_eq!(url.base_path, "/legacy");
        assert!("ftp://x".parse::<BackendUrl>().is_err());
        assert!("127.0.0.1:8000".parse::<BackendUrl>().is_err());
        assert!("http://x/?a=1".parse::<BackendUrl>().is_err());
    }

    #[test]
    fn unix_socket_urls_take_both_spellings_and_refuse_what_cannot_connect() {
        let url: BackendUrl = "unix:/run/gunicorn.sock".parse().unwrap();
        assert_eq!(url.socket.as_deref(), Some(std::path::Path::new("/run/gunicorn.sock")));
        assert_eq!((url.authority.as_str(), url.base_path.as_str()), ("localhost", ""));
        let nginx: BackendUrl = "http://unix:/run/gunicorn.sock:/app/".parse().unwrap();
        assert_eq!(nginx.socket, url.socket);
        assert_eq!(nginx.base_path, "/app");
        for (bad, why) in [
            ("unix:run/gunicorn.sock", "absolute path"),
            ("unix:", "absolute path"),
            ("unix:/x.sock:app", "absolute path"),
            ("unix:/x.sock?a=1", "query strings"),
            ("https://unix:/x.sock", "TLS over a Unix socket"),
        ] {
            let err = bad.parse::<BackendUrl>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("unix:/{}", "s".repeat(107));
        assert!(long.parse::<BackendUrl>().unwrap_err().to_string().contains("107 bytes"));
    }

    #[test]
    fn file_urls_name_an_absolute_directory() {
        for spelling in ["file:/srv/app/static/", "file:///srv/app/static"] {
            let url: BackendUrl = spelling.parse().unwrap();
            assert_eq!(
                url.directory.as_deref(),
                Some(std::path::Path::new("/srv/app/static")),
                "{spelling}"
            );
            assert_eq!(url.to_string(), "file:/srv/app/static");
        }
        for (bad, why) in [("file:static", "absolute path"), ("file:/srv?a=1", "query strings")] {
            let err = bad.parse::<BackendUrl>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_accept_human_units() {
        assert_eq!("800ms".parse::<Dur>().unwrap().0, Duration::from_millis(800));
        assert_eq!("1m30s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert!("soon".parse::<Dur>().is_err());
    }

    #[test]
    fn values_serialise_as_text_that_reads_back_the_same() {
        fn round_trip<T: FromStr + fmt::Display + PartialEq + fmt::Debug>(text: &str, written: &str)
        where
            T::Err: fmt::Debug,
        {
            let value: T = text.parse().unwrap();
            assert_eq!(value.to_string(), written, "{text}");
            assert_eq!(written.parse::<T>().unwrap(), value, "{written}");
        }
        round_trip::<Dur>("90s", "90s");
        round_trip::<Dur>("1m30s", "90s");
        round_trip::<Dur>("1500ms", "1500ms");
        round_trip::<Dur>("2h", "7200s");
        round_trip::<Dur>("1ms 500us", "1ms 500us");
        round_trip::<Addr>("[::]:8080", "[::]:8080");
        round_trip::<BackendUrl>("https://billing.internal:443/base/", "https://billing.internal:443/base");
        round_trip::<BackendUrl>("http://unix:/run/app.sock:/base/", "unix:/run/app.sock:/base");
        round_trip::<BackendUrl>("unix:/run/app.sock", "unix:/run/app.sock");
        round_trip::<BackendUrl>("file:///srv/static/", "file:/srv/static");
        round_trip::<HeaderNameValue>("X-User-Id", "x-user-id");
        round_trip::<MethodValue>("get", "GET");
        round_trip::<Cidr>("10.0.0.1", "10.0.0.1/32");
        let pattern: Pattern = r"^/a\.php$".parse().unwrap();
        assert_eq!(pattern.to_string(), r"^/a\.php$");
    }
}
