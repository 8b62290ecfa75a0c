//! Response comparison: status, chosen headers, and for JSON bodies the
//! *shape* — for each JSON path, present or absent and the value's type,
//! with array elements folded into one element shape so order and length do
//! not count — and, in `values` mode, the values themselves.
//!
//! Paths are JSON pointers with `*` standing for "any array element":
//! `/results/*/id`. Bodies are compared as the application meant them: see
//! [`decode`] for `Content-Encoding` and media types, and
//! [`json`] for JSON documents.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

pub mod decode;
pub mod endpoint;
pub mod json;
pub mod redact;

use decode::{Decoded, TooLarge};
use json::collect_json;

/// Characters of a path (JSON pointer, request path, request id) kept;
/// longer ones are cut, and paths cut alike share an entry.
pub const MAX_PATH_CHARS: usize = 200;
/// Characters of a value kept.
pub const MAX_VALUE_CHARS: usize = 80;
pub use json::compare_json;

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Status,
    Header,
    Shape,
    Value,
    /// A body whose `Content-Encoding` could not be undone.
    Undecodable,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Status, Kind::Header, Kind::Shape, Kind::Value, Kind::Undecodable];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Shape => "shape",
            Kind::Value => "value",
            Kind::Undecodable => "undecodable",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One difference between the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// JSON path (`/results/*/id`), header name, or empty for status and body.
    pub path: String,
    /// The first side's type or value (truncated), `absent` when missing.
    pub left: String,
    /// The second side's.
    pub right: String,
    /// For a shape difference, the values behind the types (the first
    /// element's, under `*`): what an example of it shows. Other kinds
    /// show their values in `left` and `right`.
    #[serde(skip)]
    pub values: Option<Box<[String; 2]>>,
}

impl Difference {
    pub fn new(kind: Kind, path: impl Into<String>, left: String, right: String) -> Difference {
        Difference {
            kind,
            path: path.into(),
            left,
            right,
            values: None,
        }
    }

    /// The two sides' values, as an example of this difference shows them.
    pub fn example_values(&self) -> [&str; 2] {
        match &self.values {
            Some(v) => [&v[0], &v[1]],
            None => [&self.left, &self.right],
        }
    }
}

/// How to compare, compiled from the route's `compare` settings.
#[derive(Debug, Clone)]
pub struct CompareRules {
    pub values: bool,
    pub headers: Vec<http::HeaderName>,
    pub ignore: Vec<PathPattern>,
    /// Compare the content at these pointers instead of each side's root.
    pub unwrap_left: Option<String>,
    pub unwrap_right: Option<String>,
    /// Absolute URLs compare without their scheme and host.
    pub normalize_url_host: bool,
    /// `"10.50"` and `10.5` count as the same type (and value).
    pub normalize_decimal_strings: bool,
    /// Numbers compare by value (`1` equals `1.0`); else an integer and a
    /// number written with a fraction or exponent differ, as they read.
    pub normalize_numbers: bool,
    /// Bodies larger than this, decoded, are not compared.
    pub max_body_bytes: usize,
}

impl Default for CompareRules {
    fn default() -> Self {
        CompareRules {
            values: false,
            headers: vec![http::header::CONTENT_TYPE],
            ignore: Vec::new(),
            unwrap_left: None,
            unwrap_right: None,
            normalize_url_host: true,
            normalize_decimal_strings: true,
            normalize_numbers: false,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl CompareRules {
    /// The rules for comparing two answers of the same backend: that side's
    /// unwrap applies to both.
    pub fn same_side(&self, left_side: bool) -> CompareRules {
        let unwrap = if left_side {
            self.unwrap_left.clone()
        } else {
            self.unwrap_right.clone()
        };
        CompareRules {
            unwrap_left: unwrap.clone(),
            unwrap_right: unwrap,
            ..self.clone()
        }
    }
}

/// A JSON pointer whose segments may be `*`; it covers the path and everything below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<String>,
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<PathPattern, String> {
        if !(pattern.is_empty() || pattern.starts_with('/')) {
            return Err(format!("{pattern:?} must be a JSON pointer starting with '/'"));
        }
        Ok(PathPattern {
            segments: split_pointer(pattern),
        })
    }

    /// True when `path` is this pattern or below it.
    pub fn covers(&self, path: &str) -> bool {
        let segments = split_pointer(path);
        segments.len() >= self.segments.len() && self.segments.iter().zip(&segments).all(|(p, s)| p == "*" || p == s)
    }

    /// True when `path` is exactly matched by this pattern.
    pub fn matches(&self, path: &str) -> bool {
        split_pointer(path).len() == self.segments.len() && self.covers(path)
    }
}

pub(super) fn split_pointer(p: &str) -> Vec<String> {
    if p.is_empty() {
        return Vec::new();
    }
    p.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
}

/// One side of an exchange, as captured.
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Body,
}

/// A captured body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Larger than the comparison limit as it came: status and headers are compared.
    Over,
    /// The bytes: as they came, then as the application meant them once [`Captured::decoded`].
    Bytes(Bytes),
    /// Its `Content-Encoding` could not be undone: why.
    Undecodable(String),
}

impl Body {
    /// The body of a capture bounded by the comparison limit (`None`: over it).
    pub fn captured(bytes: Option<Bytes>) -> Body {
        bytes.map_or(Body::Over, Body::Bytes)
    }

    pub fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Over | Body::Undecodable(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Captured {
    /// Whether its body has a `Content-Encoding` to undo.
    pub fn is_encoded(&self) -> bool {
        matches!(&self.body, Body::Bytes(b) if !b.is_empty()) && decode::is_encoded(&self.headers)
    }

    /// The answer with its body as the application meant it: its
    /// `Content-Encoding` undone, at most `limit` bytes. Err when the
    /// decoded body is larger: such an exchange is not compared at all.
    pub fn decoded(self, limit: usize) -> Result<Captured, TooLarge> {
        let Body::Bytes(bytes) = &self.body else {
            return Ok(self);
        };
        let body = match decode::decode(&self.headers, bytes, limit)? {
            Decoded::Bytes(b) => Body::Bytes(b),
            Decoded::Undecodable(why) => Body::Undecodable(why),
        };
        Ok(Captured { body, ..self })
    }
}

/// The headers a comparison under `rules` reads (`rules.headers`,
/// `Content-Type` and `Content-Encoding`), copied out of `headers`. A captured side is kept until
/// the other one arrives; holding the backend's header map instead would
/// keep its connection's read buffer shared, and the next read would have
/// to allocate a new one.
pub fn compared_headers(headers: &http::HeaderMap, rules: &CompareRules) -> http::HeaderMap {
    let body_headers = [&http::header::CONTENT_TYPE, &http::header::CONTENT_ENCODING]
        .into_iter()
        .filter(|name| !rules.headers.contains(name));
    let mut copied = http::HeaderMap::new();
    for name in rules.headers.iter().chain(body_headers) {
        for value in headers.get_all(name) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                copied.append(name.clone(), value);
            }
        }
    }
    copied
}

/// Differences listed per comparison; beyond, they are only counted, as a
/// [`MORE`] difference per kind. Bookkeeping then costs the same for a pair
/// that differs at 120,000 paths as for one that differs at 100.
pub const MAX_DIFFERENCES: usize = 100;

/// The path of the difference that counts what was not listed. No JSON
/// pointer (they start with `/`) and no header name can be spelled so.
pub const MORE: &str = "(more)";

/// The differences of one comparison: the first [`MAX_DIFFERENCES`] listed,
/// the rest counted by kind.
pub(super) struct Differences {
    listed: Vec<Difference>,
    unlisted: [usize; Kind::ALL.len()],
}

impl Differences {
    pub(super) fn new() -> Differences {
        Differences {
            listed: Vec::new(),
            unlisted: [0; Kind::ALL.len()],
        }
    }

    /// Lists a difference, built only when there is still room for it.
    pub(super) fn add(&mut self, kind: Kind, difference: impl FnOnce() -> Difference) {
        if self.listed.len() < MAX_DIFFERENCES {
            self.listed.push(difference());
        } else {
            self.unlisted[kind as usize] += 1;
        }
    }

    pub(super) fn finish(mut self) -> Vec<Difference> {
        for (kind, n) in Kind::ALL.into_iter().zip(self.unlisted) {
            if n > 0 {
                self.listed.push(Difference::new(
                    kind,
                    MORE,
                    format!("{n} more differences"),
                    "not listed".to_string(),
                ));
            }
        }
        self.listed
    }
}

/// Compares two answers, their bodies as the application meant them
/// ([`Captured::decoded`]). At most [`MAX_DIFFERENCES`] differences are
/// listed, then one [`MORE`] difference per kind with the count of the rest.
///
/// The work is bounded by the bodies: they are at most the route's
/// `compare.max_body_bytes`, and serde_json refuses documents nested deeper
/// than 128 levels (such a body compares as not JSON).
pub fn compare(left: &Captured, right: &Captured, rules: &CompareRules) -> Vec<Difference> {
    let mut out = Differences::new();
    if left.status != right.status {
        out.add(Kind::Status, || {
            Difference::new(Kind::Status, "", left.status.to_string(), right.status.to_string())
        });
    }
    for name in &rules.headers {
        if same_bytes(&left.headers, &right.headers, name) {
            continue;
        }
        if name == http::header::CONTENT_TYPE
            && let (Some(l), Some(r)) = (decode::media_type(&left.headers), decode::media_type(&right.headers))
        {
            if l != r {
                out.add(Kind::Header, || Difference::new(Kind::Header, name.as_str(), l, r));
            }
            continue;
        }
        if normalized_header(&left.headers, name).eq(normalized_header(&right.headers, name)) {
            continue;
        }
        let (l, r) = (header_text(&left.headers, name), header_text(&right.headers, name));
        if l != r {
            out.add(Kind::Header, || Difference::new(Kind::Header, name.as_str(), l, r));
        }
    }
    let (lb, rb) = match (&left.body, &right.body) {
        (Body::Bytes(l), Body::Bytes(r)) => (l, r),
        (Body::Over, _) | (_, Body::Over) => return out.finish(),
        (l, r) => {
            let why = |b: &Body, headers| match b {
                Body::Undecodable(why) => format!("undecodable: {why}"),
                _ => coding_text(headers),
            };
            out.add(Kind::Undecodable, || {
                Difference::new(Kind::Undecodable, "", why(l, &left.headers), why(r, &right.headers))
            });
            return out.finish();
        }
    };
    let (l_is_json, r_is_json) = (decode::is_json(&left.headers), decode::is_json(&right.headers));
    // Byte-identical bodies of the same kind read alike under every rule but
    // an unwrap of one side only: the common case once parity holds, and
    // without this the dearest one, both documents parsed and walked.
    if lb == rb && l_is_json == r_is_json && rules.unwrap_left == rules.unwrap_right {
        return out.finish();
    }
    let l_json = l_is_json.then(|| serde_json::from_slice::<Value>(lb).ok()).flatten();
    let r_json = r_is_json.then(|| serde_json::from_slice::<Value>(rb).ok()).flatten();
    match (l_json, r_json) {
        (Some(l), Some(r)) => collect_json(&l, &r, rules, &mut out),
        (None, None) => {
            if rules.values && lb != rb {
                out.add(Kind::Value, || Difference::new(Kind::Value, "", digest_text(lb), digest_text(rb)));
            }
        }
        (l, r) => out.add(Kind::Shape, || {
            let side = |json: bool| if json { "json" } else { "not json" }.to_string();
            Difference::new(Kind::Shape, "", side(l.is_some()), side(r.is_some()))
        }),
    }
    out.finish()
}

/// How a body that decoded was encoded, beside one that did not.
fn coding_text(headers: &http::HeaderMap) -> String {
    match header_text(headers, &http::header::CONTENT_ENCODING).as_str() {
        "absent" => "not encoded".to_string(),
        codings => format!("decoded {codings}"),
    }
}

/// A body that is not JSON, as a value difference shows it.
fn digest_text(body: &[u8]) -> String {
    format!("{} bytes, digest {:016x}", body.len(), digest(body))
}

/// Whether both sides sent `name` with the very same values: the usual
/// case, decided without normalising byte by byte.
fn same_bytes(left: &http::HeaderMap, right: &http::HeaderMap, name: &http::HeaderName) -> bool {
    left.get_all(name)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .eq(right.get_all(name).iter().map(http::HeaderValue::as_bytes))
}

/// A header's values as compared: lower case, without spaces, joined by
/// commas. Values that differ in their bytes are compared on this stream,
/// without building the text `header_text` shows unless they differ here too.
fn normalized_header<'a>(headers: &'a http::HeaderMap, name: &http::HeaderName) -> impl Iterator<Item = u8> + 'a {
    headers.get_all(name).iter().enumerate().flat_map(|(i, value)| {
        let comma = (i > 0).then_some(b',');
        comma
            .into_iter()
            .chain(value.as_bytes().iter().filter(|&&b| b != b' ').map(u8::to_ascii_lowercase))
    })
}

/// What a header difference shows: the compared form, or `absent`.
fn header_text(headers: &http::HeaderMap, name: &http::HeaderName) -> String {
    if !headers.contains_key(name) {
        return "absent".into();
    }
    String::from_utf8_lossy(&normalized_header(headers, name).collect::<Vec<u8>>()).into_owned()
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(bytes);
    h.finish()
}

/// Shortens `s` to at most `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// Differences as `(kind, path, left, right)` rows, for the tests' asserts.
#[cfg(test)]
pub(crate) fn rows(diffs: &[Difference]) -> Vec<(Kind, &str, &str, &str)> {
    diffs
        .iter()
        .map(|d| (d.kind, d.path.as_str(), d.left.as_str(), d.right.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CompareRules {
        CompareRules::default()
    }

    use super::rows as paths;

    #[test]
    fn status_headers_and_non_json_bodies() {
        let mut lh = http::HeaderMap::new();
        lh.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        let mut rh = http::HeaderMap::new();
        rh.insert("content-type", "application/json".parse().unwrap());
        let l = Captured {
            status: 200,
            headers: lh,
            body: Body::Bytes("<p>hi</p>".into()),
        };
        let r = Captured {
            status: 201,
            headers: rh,
            body: Body::Bytes("{}".into()),
        };
        let kinds: Vec<Kind> = compare(&l, &r, &rules()).iter().map(|d| d.kind).collect();
        assert_eq!(kinds, vec![Kind::Status, Kind::Header, Kind::Shape]);
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Captured {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        Captured {
            status,
            headers: map,
            body: Body::Bytes(body.into()),
        }
    }

    #[test]
    fn identical_bodies_differ_only_where_the_sides_read_them_differently() {
        let json = [("content-type", "application/json")];
        let body = r#"{"count": 1, "results": [{"id": 1}]}"#;
        let rules = CompareRules { values: true, ..rules() };
        assert!(compare(&answer(200, &json, body), &answer(200, &json, body), &rules).is_empty());
        // The same bytes, JSON on one side only.
        let text = [("content-type", "text/plain")];
        let shape = compare(&answer(200, &json, body), &answer(200, &text, body), &rules);
        assert!(shape.iter().any(|d| d.kind == Kind::Shape), "{:?}", paths(&shape));
        // The same bytes, unwrapped on one side only: the envelope against its list.
        let unwrapped = CompareRules {
            unwrap_left: Some("/results".into()),
            ..rules.clone()
        };
        let diffs = compare(&answer(200, &json, body), &answer(200, &json, body), &unwrapped);
        assert!(!diffs.is_empty(), "an unwrap of one side compares the list with the envelope");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_bodies_compare_as_the_application_meant_them() {
        let json = [("content-type", "application/json")];
        let gzipped = [("content-type", "application/json; charset=utf-8"), ("content-encoding", "gzip")];
        let plain = answer(200, &json, r#"{"id": 1, "author": "Frank Herbert"}"#);
        let same = answer(200, &gzipped, gzip(br#"{"author": "Frank Herbert", "id": 1}"#));
        let renamed = answer(200, &gzipped, gzip(br#"{"id": 1, "author_name": "Frank Herbert"}"#));
        let rules = CompareRules { values: true, ..rules() };
        let limit = rules.max_body_bytes;
        let decoded = |c: &Captured| c.clone().decoded(limit).unwrap();
        assert!(compare(&decoded(&plain), &decoded(&same), &rules).is_empty());
        assert_eq!(
            paths(&compare(&decoded(&plain), &decoded(&renamed), &rules)),
            [
                (Kind::Shape, "/author", "string", "absent"),
                (Kind::Shape, "/author_name", "absent", "string"),
            ]
        );
        // Undecoded, the same answer is not JSON at all.
        assert_eq!(paths(&compare(&plain, &same, &rules)), [(Kind::Shape, "", "json", "not json")]);

        // A body that does not decode is a difference of its own kind.
        let broken = answer(200, &gzipped, "not gzip at all");
        let d = compare(&decoded(&plain), &decoded(&broken), &rules);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].kind, d[0].left.as_str()), (Kind::Undecodable, "not encoded"));
        assert!(d[0].right.starts_with("undecodable: gzip: "), "{}", d[0].right);
        let d = compare(&decoded(&same), &decoded(&broken), &rules);
        assert_eq!(d[0].left, "decoded gzip");

        // Decoded past the limit: not compared at all.
        let bomb = answer(200, &gzipped, gzip(&vec![b' '; limit + 1]));
        assert!(bomb.is_encoded() && bomb.clone().decoded(limit).is_err());
        // Non-JSON bodies compare by digest, decoded.
        let html = |body: &[u8], gz: bool| {
            let headers: &[(&str, &str)] = if gz {
                &[("content-type", "text/html"), ("content-encoding", "gzip")]
            } else {
                &[("content-type", "text/html")]
            };
            decoded(&answer(200, headers, if gz { gzip(body) } else { body.to_vec() }))
        };
        assert!(compare(&html(b"<p>hi</p>", false), &html(b"<p>hi</p>", true), &rules).is_empty());
        let d = compare(&html(b"<p>hi</p>", false), &html(b"<p>ho</p>", true), &rules);
        assert_eq!((d[0].kind, d[0].path.as_str()), (Kind::Value, ""));
        assert!(d[0].left.starts_with("9 bytes, digest "), "{}", d[0].left);
    }

    #[test]
    fn headers_compare_without_case_or_spaces_and_every_value_counts() {
        let vary = http::HeaderName::from_static("vary");
        let rules = CompareRules {
            headers: vec![http::header::CONTENT_TYPE, vary.clone()],
            ..rules()
        };
        let side = |pairs: &[(&str, &str)], body: &'static str| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in pairs {
                headers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            Captured {
                status: 200,
                headers,
                body: Body::Bytes(body.into()),
            }
        };
        let legacy = side(
            &[
                ("content-type", "Application/JSON; charset=UTF-8"),
                ("vary", "Accept"),
                ("vary", "Cookie"),
            ],
            r#"{"id": 1}"#,
        );
        let same = side(
            &[
                ("content-type", "application/json;charset=utf-8"),
                ("vary", "accept"),
                ("vary", "cookie"),
            ],
            r#"{"id": 2}"#,
        );
        assert!(
            compare(&legacy, &same, &rules).is_empty(),
            "case and spaces do not count, and both bodies are JSON"
        );

        let fewer = side(&[("content-type", "application/problem+json"), ("vary", "Accept")], r#"{"id": 3}"#);
        let diffs = compare(&legacy, &fewer, &rules);
        let headers: Vec<(&str, &str, &str)> = diffs.iter().map(|d| (d.path.as_str(), d.left.as_str(), d.right.as_str())).collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json", "application/problem+json"),
                ("vary", "accept,cookie", "accept"),
            ],
            "a missing second value differs; +json bodies are still compared as JSON"
        );
        let absent = side(&[("content-type", "application/json")], "{}");
        let on_vary: Vec<String> = compare(&absent, &fewer, &rules)
            .into_iter()
            .filter(|d| d.path == "vary")
            .map(|d| d.left)
            .collect();
        assert_eq!(on_vary, ["absent"]);
    }

    #[test]
    fn captured_headers_are_the_compared_ones_copied_out_of_the_response() {
        let mut response = http::HeaderMap::new();
        response.insert("content-type", "application/json".parse().unwrap());
        response.append("vary", "Accept".parse().unwrap());
        response.append("vary", "Cookie".parse().unwrap());
        response.insert("date", "Tue, 01 Dec 2026 17:00:00 GMT".parse().unwrap());
        let rules = CompareRules {
            headers: vec![http::HeaderName::from_static("vary")],
            ..rules()
        };
        let kept = compared_headers(&response, &rules);
        let names: Vec<&str> = kept.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["vary", "content-type"],
            "the compared headers and Content-Type, nothing else"
        );
        let vary: Vec<&[u8]> = kept.get_all("vary").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(vary, [b"Accept".as_slice(), b"Cookie".as_slice()], "every value, in order");
        let (original, copy) = (response["content-type"].as_bytes(), kept["content-type"].as_bytes());
        assert_ne!(
            original.as_ptr(),
            copy.as_ptr(),
            "values are copies, not views of the response's buffer"
        );
        // Comparing the copies finds what comparing the originals finds.
        let side = |headers| Captured {
            status: 200,
            headers,
            body: Body::Bytes("{}".into()),
        };
        let mut other = response.clone();
        other.insert("vary", "Accept-Encoding".parse().unwrap());
        let on_copies = compare(&side(kept), &side(compared_headers(&other, &rules)), &rules);
        assert_eq!(on_copies, compare(&side(response), &side(other), &rules));
        assert_eq!(on_copies.len(), 1);
    }

    #[test]
    fn patterns_match_exactly_or_cover_subtrees() {
        let p = PathPattern::parse("/results/*/id").unwrap();
        assert!(p.matches("/results/*/id"));
        assert!(p.covers("/results/*/id/x"));
        assert!(!p.matches("/results/*/name"));
        assert!(PathPattern::parse("results").is_err());
    }
}
