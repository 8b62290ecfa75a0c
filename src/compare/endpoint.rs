//! Endpoints: what parity groups comparisons by within a route. An endpoint
//! is a method and a path template, `GET /api/users/{id}/`: given in
//! `compare.endpoints` (the first template that matches wins), else learned
//! from the path, with id-like segments (numbers, UUIDs, long hex, long
//! tokens mixing letters and digits) standing as `{id}`.

use super::MAX_PATH_CHARS;
use super::redact::Redactor;

/// Endpoints learned per route; requests of any further one count as [`OTHER`].
pub const MAX_LEARNED: usize = 200;

/// The endpoint of the requests past [`MAX_LEARNED`].
pub const OTHER: &str = "other";

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Any,
}

/// A path template from `compare.endpoints`, such as `/api/users/{id}/orders/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err(format!("endpoint {text:?} must be a path starting with '/'"));
        }
        if text.contains(['?', '#']) {
            return Err(format!("endpoint {text:?} is a path: no query or fragment"));
        }
        let segments = text
            .split('/')
            .skip(1)
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Ok(Segment::Any),
                _ if s.contains(['{', '}']) => Err(format!("endpoint {text:?}: a placeholder is a whole segment, such as {{id}}")),
                _ => Ok(Segment::Literal(s.to_string())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Template {
            text: text.to_string(),
            segments,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').skip(1);
        let all = self.segments.iter().all(|segment| match (segment, parts.next()) {
            (Segment::Literal(l), Some(p)) => l == p,
            (Segment::Any, Some(p)) => !p.is_empty(),
            (_, None) => false,
        });
        all && parts.next().is_none()
    }
}

/// The endpoint a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `GET /api/users/{id}/`.
    pub name: String,
    /// Named by a configured template: such endpoints are always kept apart.
    pub configured: bool,
}

/// A route's endpoint templates, compiled from `compare.endpoints`.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    templates: Vec<Template>,
}

impl Endpoints {
    pub fn new(templates: Vec<Template>) -> Endpoints {
        Endpoints { templates }
    }

    /// The endpoint of a `method` request for `path` (the normalised path, no query).
    pub fn of(&self, method: &str, path: &str) -> Endpoint {
        match self.templates.iter().find(|t| t.matches(path)) {
            Some(t) => Endpoint {
                name: named(method, &t.text),
                configured: true,
            },
            None => Endpoint {
                name: named(method, &learned(path)),
                configured: false,
            },
        }
    }
}

/// `METHOD path`. Built without `format!`: it runs for every comparison.
fn named(method: &str, path: &str) -> String {
    let mut name = String::with_capacity(method.len() + 1 + path.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(path);
    name
}

/// `path` with its id-like segments as `{id}`, credentials hidden, cut at
/// [`MAX_PATH_CHARS`].
fn learned(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(MAX_PATH_CHARS));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if id_like(segment) { "{id}" } else { segment });
        if out.len() > MAX_PATH_CHARS {
            break;
        }
    }
    let out = Redactor::hide_credentials_in(out);
    if out.chars().count() <= MAX_PATH_CHARS {
        return out;
    }
    super::truncate(&out, MAX_PATH_CHARS)
}

/// Whether a path segment names one resource among many rather than a
/// kind of resource: `42`, `2026-11-22`, a UUID, 16 hex digits or more,
/// or 20 characters or more of a token that mixes letters and digits
/// (ULIDs, Mongo ids, base64url keys).
pub fn id_like(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if !has_digit && bytes.len() < 16 {
        return false;
    }
    let numeric = bytes.iter().all(|b| b.is_ascii_digit() || b"-_.:".contains(b));
    let uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    let hex = bytes.len() >= 16 && bytes.iter().all(u8::is_ascii_hexdigit);
    let token = bytes.len() >= 20
        && has_digit
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(b));
    numeric || uuid || hex || token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_like_segments_are_learned_as_placeholders() {
        let endpoints = Endpoints::default();
        for (path, endpoint) in [
            ("/api/users/42/", "GET /api/users/{id}/"),
            ("/api/users/7/orders/2026-11-22", "GET /api/users/{id}/orders/{id}"),
            ("/api/docs/3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b", "GET /api/docs/{id}"),
            ("/blobs/d41d8cd98f00b204e9800998ecf8427e/raw", "GET /blobs/{id}/raw"),
            ("/o/507f1f77bcf86cd799439011", "GET /o/{id}"),
            ("/u/01ARZ3NDEKTSV4RRFFQ69G5FAV", "GET /u/{id}"),
            ("/api/v2/users/", "GET /api/v2/users/"),
            ("/api/status/", "GET /api/status/"),
            ("/api/categories/electronics/", "GET /api/categories/electronics/"),
            ("/", "GET /"),
        ] {
            assert_eq!(endpoints.of("GET", path).name, endpoint, "{path}");
        }
        assert_eq!(
            endpoints.of("GET", "/reset/sk_live_4eC39HqLyjWDarjtT1zdp7dc/x").name,
            "GET /reset/{id}/x"
        );
        let long = format!("/{}", "segment/".repeat(100));
        assert!(endpoints.of("GET", &long).name.chars().count() <= MAX_PATH_CHARS + 5);
    }

    #[test]
    fn configured_templates_win_in_order() {
        let endpoints = Endpoints::new(
            ["/api/users/{id}/orders/", "/api/users/{user}/{section}/", "/api/users/me/"]
                .iter()
                .map(|t| Template::parse(t).unwrap())
                .collect(),
        );
        let of = |path: &str| endpoints.of("GET", path);
        assert_eq!(of("/api/users/42/orders/").name, "GET /api/users/{id}/orders/");
        assert!(of("/api/users/42/orders/").configured);
        assert_eq!(of("/api/users/alice/orders/").name, "GET /api/users/{id}/orders/");
        assert_eq!(of("/api/users/42/friends/").name, "GET /api/users/{user}/{section}/");
        assert_eq!(of("/api/users/me/").name, "GET /api/users/me/");
        // No match: learned.
        let learned = of("/api/users/42/orders");
        assert_eq!((learned.name.as_str(), learned.configured), ("GET /api/users/{id}/orders", false));
        assert!(!Template::parse("/api/users/{id}/").unwrap().matches("/api/users//"));
    }

    #[test]
    fn templates_are_checked_at_load() {
        for bad in ["api/users/", "/api/{}/", "/api/user-{id}/", "/api/{id/", "/api/users/?page=1"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
