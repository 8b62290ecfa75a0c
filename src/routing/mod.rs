//! Route matching: the first route whose every condition holds wins.

pub mod normalize;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

pub use normalize::{EncodedSlashes, PathError, normalize_path, normalize_path_with};

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
    /// `api.example.com`, compared without case and without a trailing dot
    /// (`api.example.com.` is the same name, fully qualified).
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
        let pattern = without_root_dot(pattern);
        match pattern.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase().into()),
            None => HostMatch::Exact(pattern.to_ascii_lowercase().into()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        let host = without_root_dot(host);
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

/// Narrows the routes a request can match before their matchers run, so a
/// table of a thousand path routes costs about as much as a table of one.
///
/// Routes whose path condition pins the first path segment (`path_prefix:
/// /svc/…`, `path: /healthz`) are filed under that segment; all others
/// (regexes, `/`, prefixes that end inside a segment) are always candidates.
/// Candidates are tried in file order, so first-match-wins is unchanged.
#[derive(Debug, Default, Clone)]
pub struct RouteIndex {
    by_segment: std::collections::HashMap<Box<str>, Vec<u32>>,
    always: Vec<u32>,
}

impl RouteIndex {
    pub fn build<'a>(matchers: impl IntoIterator<Item = &'a Matcher>) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (i, m) in matchers.into_iter().enumerate() {
            match m.path.first_segment() {
                Some(seg) => index.by_segment.entry(seg.into()).or_default().push(i as u32),
                None => index.always.push(i as u32),
            }
        }
        index
    }

    /// The first route, in file order, among the candidates for `path` for which `matches` holds.
    pub fn find(&self, path: &str, mut matches: impl FnMut(usize) -> bool) -> Option<usize> {
        let filed = self.by_segment.get(first_segment(path)).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (filed.iter().peekable(), self.always.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            };
            let i = *next.expect("peeked") as usize;
            if matches(i) {
                return Some(i);
            }
        }
    }
}

/// The first segment of a normalised path: `/api/users` → `api`, `/` → ``.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split_once('/').map_or(rest, |(seg, _)| seg)
}

impl PathMatch {
    /// The first path segment every matching path has, when the condition fixes one.
    fn first_segment(&self) -> Option<&str> {
        match self {
            PathMatch::Prefix(p) => {
                // `/svc/…` fixes the segment; `/sv` (ending inside it) does not.
                let rest = p.strip_prefix('/')?;
                rest.split_once('/').map(|(seg, _)| seg)
            }
            PathMatch::Exact(p) => Some(first_segment(p)),
            PathMatch::Any | PathMatch::Regex(_) => None,
        }
    }
}

/// A fully qualified name's final dot (`example.com.`) dropped: DNS resolves
/// both forms to the same host, so a route must match both.
fn without_root_dot(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
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
    fn a_trailing_dot_names_the_same_host() {
        let exact = HostMatch::parse("admin.example.com");
        assert!(exact.matches("admin.example.com."));
        assert!(exact.matches("ADMIN.Example.COM."));
        assert!(!exact.matches("admin.example.com.."));
        assert!(HostMatch::parse("admin.example.com.").matches("admin.example.com"));
        let wild = HostMatch::parse("*.example.com");
        assert!(wild.matches("a.example.com."));
        assert!(!wild.matches("example.com."));
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
    fn the_index_keeps_first_match_order() {
        let m = |path: PathMatch| Matcher {
            path,
            host: None,
            methods: None,
            headers: vec![],
        };
        let matchers = vec![
            m(PathMatch::Exact("/healthz".into())),
            m(PathMatch::Prefix("/api/v2/".into())),
            m(PathMatch::Regex(Regex::new("^/api/").unwrap())),
            m(PathMatch::Prefix("/api/".into())),
            m(PathMatch::Prefix("/ap".into())),
            m(PathMatch::Any),
        ];
        let index = RouteIndex::build(&matchers);
        let h = HeaderMap::new();
        let find = |path: &str| index.find(path, |i| matchers[i].matches(&view(path, None, &Method::GET, &h)));
        assert_eq!(find("/healthz"), Some(0));
        assert_eq!(find("/api/v2/x"), Some(1));
        assert_eq!(find("/api/v1/x"), Some(2));
        assert_eq!(find("/apx"), Some(4));
        assert_eq!(find("/other"), Some(5));
        // Same answers as a plain scan, for many paths.
        for path in ["/", "/healthz/", "/api", "/api/", "/ap", "/apiv2/", "/api/v2", "/x/y/z"] {
            let scan = matchers.iter().position(|m| m.matches(&view(path, None, &Method::GET, &h)));
            assert_eq!(find(path), scan, "{path}");
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    }
}
