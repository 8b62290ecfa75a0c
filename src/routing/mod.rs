//! Route matching: the first route whose every condition holds wins.

pub mod normalize;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

pub use normalize::{PathError, normalize_path};

/// What a route matches on, compiled at load.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: PathMatch,
    pub host: Option<HostMatch>,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<(HeaderName, HeaderMatch)>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(Regex),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`, compared without case.
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`: one or more labels before it.
    Suffix(Box<str>),
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Present,
    Absent,
    Exact(HeaderValue),
    Regex(Regex),
}

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    /// The normalised path, without the query.
    pub path: &'a str,
    /// The host without port, as sent (case preserved).
    pub host: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl Matcher {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path.matches(req.path)
            && self.host.as_ref().is_none_or(|h| req.host.is_some_and(|host| h.matches(host)))
            && self.methods.as_ref().is_none_or(|m| m.contains(req.method))
            && self.headers.iter().all(|(name, m)| m.matches(req.headers.get_all(name)))
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Prefix(p) => path.starts_with(&**p),
            PathMatch::Exact(p) => path == &**p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl HostMatch {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(pattern: &str) -> HostMatch {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase().into()),
            None => HostMatch::Exact(pattern.to_ascii_lowercase().into()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len() && host.is_char_boundary(host.len() - s.len()) && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

impl HeaderMatch {
    fn matches(&self, values: http::header::GetAll<'_, HeaderValue>) -> bool {
        let mut values = values.iter();
        match self {
            HeaderMatch::Present => values.next().is_some(),
            HeaderMatch::Absent => values.next().is_none(),
            HeaderMatch::Exact(v) => values.any(|x| x == v),
            HeaderMatch::Regex(r) => values.any(|x| x.to_str().is_ok_and(|s| r.is_match(s))),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        match &self.path {
            PathMatch::Any => parts.push("any path".to_string()),
            PathMatch::Prefix(p) => parts.push(format!("path_prefix {p}")),
            PathMatch::Exact(p) => parts.push(format!("path {p}")),
            PathMatch::Regex(r) => parts.push(format!("path_regex {}", r.as_str())),
        }
        match &self.host {
            Some(HostMatch::Exact(h)) => parts.push(format!("host {h}")),
            Some(HostMatch::Suffix(s)) => parts.push(format!("host *{s}")),
            None => {}
        }
        if let Some(methods) = &self.methods {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            parts.push(format!("methods {}", names.join(",")));
        }
        for (name, m) in &self.headers {
            parts.push(match m {
                HeaderMatch::Present => format!("header {name} present"),
                HeaderMatch::Absent => format!("header {name} absent"),
                HeaderMatch::Exact(v) => format!("header {name} = {v:?}"),
                HeaderMatch::Regex(r) => format!("header {name} ~ {}", r.as_str()),
            });
        }
        f.write_str(&parts.join(", "))
    }
}

/// Strips the port from a `Host` header or `:authority` value.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port after them.
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, host: Option<&'a str>, method: &'a Method, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            host,
            method,
            headers,
        }
    }

    #[test]
    fn host_patterns_match_exact_and_wildcard() {
        assert!(HostMatch::parse("api.example.com").matches("API.example.com"));
        assert!(!HostMatch::parse("api.example.com").matches("example.com"));
        let wild = HostMatch::parse("*.example.com");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
    }

    #[test]
    fn every_condition_must_hold() {
        let m = Matcher {
            path: PathMatch::Prefix("/api/".into()),
            host: None,
            methods: Some(vec![Method::GET]),
            headers: vec![(HeaderName::from_static("x-beta"), HeaderMatch::Exact(HeaderValue::from_static("1")))],
        };
        let mut h = HeaderMap::new();
        assert!(!m.matches(&view("/api/x", None, &Method::GET, &h)));
        h.insert("x-beta", HeaderValue::from_static("1"));
        assert!(m.matches(&view("/api/x", None, &Method::GET, &h)));
        assert!(!m.matches(&view("/api/x", None, &Method::POST, &h)));
        assert!(!m.matches(&view("/apix", None, &Method::GET, &h)));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    }
}
