//! What a `proxy_pass` points at (an upstream block, a `host:port`, or a
//! `split_clients` variable) and what it does to the URI.

use crate::config::BackendUrl;

use super::nginx::Directive;
use super::upstreams::Upstreams;

/// A `proxy_pass` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProxyTarget {
    /// The name of an `upstream` block.
    Upstream(String),
    /// A `host:port` named directly.
    Host(String),
    /// `http://$var` of a `split_clients`.
    Split(String),
}

/// Where a route backend sends requests, to recognise a mirror target among
/// a route's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TargetId {
    Upstream(String),
    /// `scheme://host:port`
    Url(String),
}

#[derive(Debug, Clone)]
pub(super) struct ProxyPass {
    pub(super) target: ProxyTarget,
    /// `http` or `https`.
    pub(super) scheme: &'static str,
    /// The URI part, when it replaces the matched location prefix.
    pub(super) uri: Option<String>,
    /// `$request_uri` was appended (the URI is passed unchanged).
    pub(super) request_uri: bool,
}

impl ProxyPass {
    /// Reads `proxy_pass URL`; the error says why it cannot be converted.
    pub(super) fn parse(d: &Directive, upstreams: &Upstreams) -> Result<ProxyPass, String> {
        let Some(url) = d.arg(0).filter(|_| d.args.len() == 1) else {
            return Err("invalid proxy_pass".into());
        };
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = url.strip_prefix("https://") {
            ("https", r)
        } else {
            return Err("only http:// and https:// targets are converted".into());
        };
        let (host, uri) = if let Some(path) = rest.strip_prefix("unix:") {
            // nginx ends a socket's path with a colon: http://unix:/x.sock:/uri
            match path.find(':') {
                Some(i) => (&rest[..5 + i], &path[i + 1..]),
                None => (rest, ""),
            }
        } else {
            match rest.find(['/', '$']) {
                // A variable at the start is the host itself.
                Some(0) if rest.starts_with('$') => match rest[1..].find(['/', '$']) {
                    Some(i) => rest.split_at(i + 1),
                    None => (rest, ""),
                },
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            }
        };
        let (uri, request_uri) = match uri {
            "" => (None, false),
            "$request_uri" => (None, true),
            // The normalised path and the query: what cutover forwards.
            "$uri$is_args$args" => (None, false),
            u if u.contains('$') => return Err("variables in the URI part are not converted".into()),
            u => (Some(u.to_string()), false),
        };
        if host.starts_with("unix:") && scheme == "https" {
            return Err("TLS over a unix socket is not supported".into());
        }
        let target = if let Some(var) = host.strip_prefix('$') {
            let var = var.trim_start_matches('{').trim_end_matches('}');
            if !upstreams.splits.contains_key(var) {
                return Err(format!("${var} is not a split_clients variable"));
            }
            if uri.is_some() {
                return Err("a split with a URI part sends every request to that URI".into());
            }
            ProxyTarget::Split(var.to_string())
        } else if host.contains('$') {
            return Err("variables in the host are not converted".into());
        } else if upstreams.blocks.contains_key(host) {
            ProxyTarget::Upstream(host.to_string())
        } else {
            match normalize_host_port(host, default_port(scheme)) {
                Some(h) => ProxyTarget::Host(h),
                None => return Err(format!("{host:?} is not a host:port")),
            }
        };
        Ok(ProxyPass {
            target,
            scheme,
            uri,
            request_uri,
        })
    }

    /// `scheme://host:port` of a host named directly.
    pub(super) fn url(&self, host_port: &str) -> String {
        format!("{}://{host_port}", self.scheme)
    }
}

pub(super) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `host:port`, with `default` when no port is given, or `unix:/path`;
/// `None` for junk.
pub(super) fn normalize_host_port(s: &str, default: u16) -> Option<String> {
    if s.starts_with("unix:") {
        let url = format!("http://{s}").parse::<BackendUrl>().ok()?;
        return url.base_path.is_empty().then(|| s.to_string());
    }
    if s.is_empty() || s.contains('/') || s.contains('$') {
        return None;
    }
    let with_port = if let Some(rest) = s.strip_prefix('[') {
        let (_, after) = rest.split_once(']')?;
        if after.is_empty() {
            format!("{s}:{default}")
        } else {
            s.to_string()
        }
    } else if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{default}")
    };
    format!("http://{with_port}").parse::<BackendUrl>().ok()?;
    Some(with_port)
}

/// nginx's `$proxy_host` for a `host:port`: the port is dropped when it is
/// the scheme's default; `localhost` for a unix socket.
pub(super) fn proxy_host_of(host_port: &str, scheme: &str) -> String {
    if host_port.starts_with("unix:") {
        return "localhost".into();
    }
    let default = format!(":{}", default_port(scheme));
    host_port.strip_suffix(default.as_str()).unwrap_or(host_port).to_string()
}
