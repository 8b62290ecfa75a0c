//! The proxy settings nginx inherits from `http` to `server` to `location`:
//! timeouts, the Host sent upstream, mirrors, the request body limit, gzip
//! and the TLS of https backends. Each level starts from its parent's settings and
//! overrides what it writes itself.

use std::time::Duration;

use super::nginx::{Directive, Pos};
use super::report::Report;

/// A setting's value and the directive that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sourced<T> {
    pub(super) value: T,
    pub(super) at: Pos,
    /// The directive as written.
    pub(super) text: String,
}

impl<T> Sourced<T> {
    fn new(value: T, d: &Directive) -> Sourced<T> {
        Sourced {
            value,
            at: d.at.clone(),
            text: d.text(),
        }
    }

    /// `file:line directive args`, for a comment naming where a value came from.
    pub(super) fn origin(&self) -> String {
        format!("{} {}", self.at, self.text)
    }
}

/// nginx's gzip directives in effect at a level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GzipSettings {
    pub(super) on: Option<Sourced<bool>>,
    /// `gzip_types`, lowercase (nginx adds `text/html` to them).
    pub(super) types: Option<Sourced<Vec<String>>>,
    pub(super) min_length: Option<Sourced<u64>>,
    pub(super) level: Option<Sourced<u32>>,
}

/// What a location sends as Host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum HostSetting {
    /// No `proxy_set_header Host`: nginx sends `$proxy_host`.
    #[default]
    ProxyHost,
    /// `$host` / `$http_host`: the client's Host, cutover's default.
    Client,
    Literal(Sourced<String>),
    /// A value cutover cannot send (listed where it was written).
    Unsupported,
}

/// The settings in effect at one level.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub(super) connect_timeout: Option<Sourced<Duration>>,
    pub(super) read_timeout: Option<Sourced<Duration>>,
    pub(super) host: HostSetting,
    /// `mirror` URIs.
    pub(super) mirrors: Vec<Sourced<String>>,
    /// `client_max_body_size` in bytes (0: no limit).
    pub(super) body_limit: Option<Sourced<u64>>,
    /// `proxy_ssl_verify on`.
    pub(super) ssl_verify: bool,
    /// `proxy_ssl_trusted_certificate`, the path as written.
    pub(super) ssl_trusted: Option<Sourced<String>>,
    /// `proxy_ssl_name` with a literal value.
    pub(super) ssl_name: Option<Sourced<String>>,
    pub(super) gzip: GzipSettings,
}

impl Settings {
    /// The settings of a level whose directives are `dirs`, inheriting `parent`'s.
    pub(super) fn at_level(parent: &Settings, dirs: &[Directive], report: &mut Report) -> Settings {
        let mut s = parent.clone();
        // proxy_set_header is inherited only by levels that set none themselves.
        if dirs.iter().any(|d| d.name == "proxy_set_header") {
            s.host = HostSetting::ProxyHost;
        }
        let mut mirrors_here: Option<Vec<Sourced<String>>> = None;
        for d in dirs {
            match d.name.as_str() {
                "proxy_set_header" => proxy_set_header(d, &mut s, report),
                "proxy_connect_timeout" | "proxy_read_timeout" => match d.arg(0).and_then(parse_nginx_time) {
                    Some(t) if d.args.len() == 1 && !t.is_zero() => {
                        let v = Some(Sourced::new(t, d));
                        if d.name == "proxy_connect_timeout" {
                            s.connect_timeout = v;
                        } else {
                            s.read_timeout = v;
                        }
                    }
                    _ => report.skip(d, "not a time nginx would accept"),
                },
                "mirror" => match d.arg(0) {
                    Some("off") if d.args.len() == 1 => mirrors_here = Some(Vec::new()),
                    Some(uri) if d.args.len() == 1 => {
                        mirrors_here.get_or_insert_with(Vec::new).push(Sourced::new(uri.to_string(), d));
                    }
                    _ => report.skip(d, "invalid mirror directive"),
                },
                "client_max_body_size" => match d.arg(0).and_then(parse_nginx_size) {
                    Some(n) if d.args.len() == 1 => s.body_limit = Some(Sourced::new(n, d)),
                    _ => report.skip(d, "not a size nginx would accept"),
                },
                "proxy_ssl_verify" => match d.arg(0) {
                    Some("on") => s.ssl_verify = true,
                    Some("off") => s.ssl_verify = false,
                    _ => report.skip(d, "invalid proxy_ssl_verify"),
                },
                "proxy_ssl_trusted_certificate" => match d.arg(0) {
                    Some(path) if d.args.len() == 1 && !path.contains('$') => {
                        s.ssl_trusted = Some(Sourced::new(path.to_string(), d));
                    }
                    _ => report.skip(d, "not a file cutover can read"),
                },
                "proxy_ssl_name" => match d.arg(0) {
                    Some("$proxy_host") => s.ssl_name = None,
                    Some(name) if d.args.len() == 1 && !name.contains('$') => s.ssl_name = Some(Sourced::new(name.to_string(), d)),
                    _ => report.skip(d, "cutover sends the URL's host or a fixed tls.server_name; this value is neither"),
                },
                "gzip" => match d.arg(0) {
                    Some(v @ ("on" | "off")) if d.args.len() == 1 => s.gzip.on = Some(Sourced::new(v == "on", d)),
                    _ => report.skip(d, "invalid gzip"),
                },
                "gzip_types" => {
                    let types = d.args.iter().map(|a| a.text.to_ascii_lowercase()).collect();
                    s.gzip.types = Some(Sourced::new(types, d));
                }
                "gzip_min_length" => match d.arg(0).and_then(parse_nginx_size) {
                    Some(n) if d.args.len() == 1 => s.gzip.min_length = Some(Sourced::new(n, d)),
                    _ => report.skip(d, "not a size nginx would accept"),
                },
                "gzip_comp_level" => match d.arg(0).and_then(|l| l.parse::<u32>().ok()) {
                    Some(l) if d.args.len() == 1 && (1..=9).contains(&l) => s.gzip.level = Some(Sourced::new(l, d)),
                    _ => report.skip(d, "not a level from 1 to 9"),
                },
                // cutover always sends SNI to https backends.
                "proxy_ssl_server_name" => {}
                // cutover speaks HTTP/1.1 to backends, with keep-alive.
                "proxy_http_version" => {}
                _ => {}
            }
        }
        if let Some(m) = mirrors_here {
            s.mirrors = m;
        }
        s
    }
}

/// The directives [`Settings::at_level`] handles.
pub(super) fn is_setting(name: &str) -> bool {
    matches!(
        name,
        "proxy_set_header"
            | "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "mirror"
            | "proxy_http_version"
            | "client_max_body_size"
            | "proxy_ssl_verify"
            | "proxy_ssl_trusted_certificate"
            | "proxy_ssl_name"
            | "proxy_ssl_server_name"
            | "gzip"
            | "gzip_types"
            | "gzip_min_length"
            | "gzip_comp_level"
    )
}

fn proxy_set_header(d: &Directive, s: &mut Settings, report: &mut Report) {
    let (Some(name), Some(value), 2) = (d.arg(0), d.arg(1), d.args.len()) else {
        report.skip(d, "invalid proxy_set_header");
        return;
    };
    let lname = name.to_ascii_lowercase();
    let builtin = match lname.as_str() {
        "host" => {
            s.host = match value {
                "$host" | "$http_host" => HostSetting::Client,
                "$proxy_host" => HostSetting::ProxyHost,
                v if !v.contains('$') && !v.is_empty() && http::HeaderValue::from_str(v).is_ok() => {
                    HostSetting::Literal(Sourced::new(v.to_string(), d))
                }
                _ => {
                    report.skip(d, "cutover sends the client's Host or a fixed host_header; this value is neither");
                    HostSetting::Unsupported
                }
            };
            return;
        }
        "x-forwarded-for" => matches!(value, "$proxy_add_x_forwarded_for" | "$remote_addr"),
        "x-forwarded-proto" => value == "$scheme",
        "x-forwarded-host" => matches!(value, "$host" | "$http_host" | "$server_name"),
        "upgrade" => value == "$http_upgrade",
        "connection" => matches!(value, "$connection_upgrade" | "upgrade" | "Upgrade" | ""),
        "x-request-id" => value == "$request_id",
        "x-real-ip" => value == "$remote_addr",
        _ => false,
    };
    if builtin {
        if lname == "x-real-ip" {
            report.note(
                "cutover sets X-Real-IP itself to the client's address, replacing any a client sent; behind a proxy in \
                 trusted_proxies it is the client that proxy forwarded for (nginx's $remote_addr with the realip module)",
            );
        }
        if lname.starts_with("x-forwarded") {
            report.note(
                "cutover sets X-Forwarded-For, -Proto and -Host itself; it extends a client's X-Forwarded-For only when the \
                 peer is in trusted_proxies (nginx's $proxy_add_x_forwarded_for always extends it)",
            );
        }
        return;
    }
    let reason = if lname == "x-real-ip" {
        "cutover sets X-Real-IP to the client's address; this value is not that"
    } else {
        "cutover does not add request headers"
    };
    report.skip(d, reason);
}

/// nginx's time syntax: `60`, `60s`, `500ms`, `1m30s`, `1h`, `2d`.
fn parse_nginx_time(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms_per)?)?;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total))
}

/// nginx's size syntax: `1024`, `8k`, `20M`, `1g`.
fn parse_nginx_size(text: &str) -> Option<u64> {
    let (digits, factor) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sizes_parse() {
        assert_eq!(parse_nginx_size("20M"), Some(20 << 20));
        assert_eq!(parse_nginx_size("8k"), Some(8192));
        assert_eq!(parse_nginx_size("1024"), Some(1024));
        assert_eq!(parse_nginx_size("0"), Some(0));
        assert_eq!(parse_nginx_size("big"), None);
    }

    #[test]
    fn nginx_times_parse() {
        assert_eq!(parse_nginx_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_nginx_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_nginx_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_nginx_time("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_nginx_time("soon"), None);
    }
}
