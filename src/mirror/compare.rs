//! Response comparison: status, chosen headers, and for JSON bodies the
//! *shape* — for each JSON path, present or absent and the value's type,
//! with array elements folded into one element shape so order and length do
//! not count — and, in `values` mode, the values themselves.
//!
//! Paths are JSON pointers with `*` standing for "any array element":
//! `/results/*/id`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Status,
    Header,
    Shape,
    Value,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Status, Kind::Header, Kind::Shape, Kind::Value];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Shape => "shape",
            Kind::Value => "value",
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

fn split_pointer(p: &str) -> Vec<String> {
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
    /// `None` when the body was larger than the comparison limit.
    pub body: Option<bytes::Bytes>,
}

/// The headers a comparison under `rules` reads (`rules.headers` and
/// `Content-Type`), copied out of `headers`. A captured side is kept until
/// the other one arrives; holding the backend's header map instead would
/// keep its connection's read buffer shared, and the next read would have
/// to allocate a new one.
pub fn compared_headers(headers: &http::HeaderMap, rules: &CompareRules) -> http::HeaderMap {
    let content_type = (!rules.headers.contains(&http::header::CONTENT_TYPE)).then_some(&http::header::CONTENT_TYPE);
    let mut copied = http::HeaderMap::new();
    for name in rules.headers.iter().chain(content_type) {
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
struct Differences {
    listed: Vec<Difference>,
    unlisted: [usize; Kind::ALL.len()],
}

impl Differences {
    fn new() -> Differences {
        Differences {
            listed: Vec::new(),
            unlisted: [0; Kind::ALL.len()],
        }
    }

    /// Lists a difference, built only when there is still room for it.
    fn add(&mut self, kind: Kind, difference: impl FnOnce() -> Difference) {
        if self.listed.len() < MAX_DIFFERENCES {
            self.listed.push(difference());
        } else {
            self.unlisted[kind as usize] += 1;
        }
    }

    fn finish(mut self) -> Vec<Difference> {
        for (kind, n) in Kind::ALL.into_iter().zip(self.unlisted) {
            if n > 0 {
                self.listed.push(Difference {
                    kind,
                    path: MORE.to_string(),
                    left: format!("{n} more differences"),
                    right: "not listed".to_string(),
                });
            }
        }
        self.listed
    }
}

/// Compares two captured responses. At most [`MAX_DIFFERENCES`] differences
/// are listed, then one [`MORE`] difference per kind with the count of the rest.
///
/// The work is bounded by the bodies: they are at most the route's
/// `compare.max_body_bytes`, and serde_json refuses documents nested deeper
/// than 128 levels (such a body compares as not JSON).
pub fn compare(left: &Captured, right: &Captured, rules: &CompareRules) -> Vec<Difference> {
    let mut out = Differences::new();
    if left.status != right.status {
        out.add(Kind::Status, || Difference {
            kind: Kind::Status,
            path: String::new(),
            left: left.status.to_string(),
            right: right.status.to_string(),
        });
    }
    for name in &rules.headers {
        if same_bytes(&left.headers, &right.headers, name)
            || normalized_header(&left.headers, name).eq(normalized_header(&right.headers, name))
        {
            continue;
        }
        let (l, r) = (header_text(&left.headers, name), header_text(&right.headers, name));
        if l != r {
            out.add(Kind::Header, || Difference {
                kind: Kind::Header,
                path: name.to_string(),
                left: l,
                right: r,
            });
        }
    }
    let (Some(lb), Some(rb)) = (&left.body, &right.body) else {
        return out.finish();
    };
    let l_json = is_json(&left.headers).then(|| serde_json::from_slice::<Value>(lb).ok()).flatten();
    let r_json = is_json(&right.headers).then(|| serde_json::from_slice::<Value>(rb).ok()).flatten();
    match (l_json, r_json) {
        (Some(l), Some(r)) => collect_json(&l, &r, rules, &mut out),
        (None, None) => {
            if rules.values && lb != rb {
                out.add(Kind::Value, || Difference {
                    kind: Kind::Value,
                    path: String::new(),
                    left: format!("{} bytes, digest {:016x}", lb.len(), digest(lb)),
                    right: format!("{} bytes, digest {:016x}", rb.len(), digest(rb)),
                });
            }
        }
        (l, r) => out.add(Kind::Shape, || Difference {
            kind: Kind::Shape,
            path: String::new(),
            left: if l.is_some() { "json" } else { "not json" }.into(),
            right: if r.is_some() { "json" } else { "not json" }.into(),
        }),
    }
    out.finish()
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

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().split(|&b| b == b';').next())
        .is_some_and(|t| {
            let t = t.trim_ascii();
            t.eq_ignore_ascii_case(b"application/json") || t.len() >= 5 && t[t.len() - 5..].eq_ignore_ascii_case(b"+json")
        })
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(bytes);
    h.finish()
}

/// Compares two JSON documents under `rules`, listing differences as [`compare`] does.
pub fn compare_json(left: &Value, right: &Value, rules: &CompareRules) -> Vec<Difference> {
    let mut out = Differences::new();
    collect_json(left, right, rules, &mut out);
    out.finish()
}

fn collect_json(left: &Value, right: &Value, rules: &CompareRules, out: &mut Differences) {
    let left = unwrap(left, rules.unwrap_left.as_deref());
    let right = unwrap(right, rules.unwrap_right.as_deref());
    let (ls, rs) = (shape_of(left, rules), shape_of(right, rules));
    // Paths with a type change: their values are not compared again.
    let mut retyped = HashSet::new();
    for (path, lt) in &ls {
        if ignored(path, rules) {
            continue;
        }
        match rs.get(path) {
            None if !under_empty_array(path, &rs) => out.add(Kind::Shape, || shape_diff(path, lt.describe(), "absent".into())),
            Some(rt) if lt.0 & rt.0 == 0 => {
                retyped.insert(path.as_str());
                out.add(Kind::Shape, || shape_diff(path, lt.describe(), rt.describe()));
            }
            _ => {}
        }
    }
    for (path, rt) in &rs {
        if !ls.contains_key(path) && !ignored(path, rules) && !under_empty_array(path, &ls) {
            out.add(Kind::Shape, || shape_diff(path, "absent".into(), rt.describe()));
        }
    }
    if rules.values {
        let mut values = ValueWalk {
            rules,
            retyped,
            reported: HashSet::new(),
            out,
        };
        values.compare(left, right, &mut String::new());
    }
}

fn shape_diff(path: &str, left: String, right: String) -> Difference {
    Difference {
        kind: Kind::Shape,
        path: path.to_string(),
        left,
        right,
    }
}

fn unwrap<'a>(v: &'a Value, pointer: Option<&str>) -> &'a Value {
    pointer.and_then(|p| v.pointer(p)).unwrap_or(v)
}

fn ignored(path: &str, rules: &CompareRules) -> bool {
    rules.ignore.iter().any(|p| p.covers(path))
}

/// True when an array above `path` is empty in `shape`, so the other side's
/// elements cannot be compared against anything (data, not shape).
fn under_empty_array(path: &str, shape: &BTreeMap<String, Types>) -> bool {
    let mut end = path.len();
    while let Some(pos) = path[..end].rfind("/*") {
        let array = &path[..pos];
        let elements = &path[..pos + 2];
        if shape.get(array).is_some_and(|t| t.0 & Types::ARRAY != 0) && !shape.contains_key(elements) {
            return true;
        }
        end = pos;
    }
    false
}

/// A set of JSON types seen at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Types(u8);

impl Types {
    const NULL: u8 = 1;
    const BOOL: u8 = 2;
    const NUMBER: u8 = 4;
    const STRING: u8 = 8;
    const ARRAY: u8 = 16;
    const OBJECT: u8 = 32;

    fn describe(self) -> String {
        let names = [
            (Self::NULL, "null"),
            (Self::BOOL, "boolean"),
            (Self::NUMBER, "number"),
            (Self::STRING, "string"),
            (Self::ARRAY, "array"),
            (Self::OBJECT, "object"),
        ];
        names
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join("|")
    }
}

fn type_of(v: &Value, rules: &CompareRules) -> u8 {
    match v {
        Value::Null => Types::NULL,
        Value::Bool(_) => Types::BOOL,
        Value::Number(_) => Types::NUMBER,
        Value::String(s) if rules.normalize_decimal_strings && is_decimal(s) => Types::NUMBER | Types::STRING,
        Value::String(_) => Types::STRING,
        Value::Array(_) => Types::ARRAY,
        Value::Object(_) => Types::OBJECT,
    }
}

/// A decimal number written as a string, the way DRF serialises
/// `DecimalField` (`"10.50"`). Integers in strings (`"1"`) are not: an id
/// that turned from a number into a string is a real change.
fn is_decimal(s: &str) -> bool {
    let t = s.strip_prefix('-').unwrap_or(s);
    let Some((int, frac)) = t.split_once('.') else {
        return false;
    };
    !int.is_empty() && !frac.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Folded path → types seen there.
pub fn shape_of(v: &Value, rules: &CompareRules) -> BTreeMap<String, Types> {
    let mut out = BTreeMap::new();
    let mut path = String::new();
    collect_shape(v, &mut path, rules, &mut out);
    out
}

fn collect_shape(v: &Value, path: &mut String, rules: &CompareRules, out: &mut BTreeMap<String, Types>) {
    let ty = type_of(v, rules);
    // Array elements revisit the same folded paths: look up before allocating a key.
    match out.get_mut(path.as_str()) {
        Some(types) => types.0 |= ty,
        None => {
            out.insert(path.clone(), Types(ty));
        }
    }
    let len = path.len();
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                path.push('/');
                push_escaped(path, k);
                collect_shape(child, path, rules, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            path.push_str("/*");
            for child in items {
                collect_shape(child, path, rules, out);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

fn push_escaped(path: &mut String, key: &str) {
    if key.contains(['~', '/']) {
        path.push_str(&key.replace('~', "~0").replace('/', "~1"));
    } else {
        path.push_str(key);
    }
}

/// The values mode's walk over both documents at once.
struct ValueWalk<'a> {
    rules: &'a CompareRules,
    retyped: HashSet<&'a str>,
    /// Folded paths with a value difference: the elements of an array that
    /// differ at one folded path make one difference.
    reported: HashSet<String>,
    out: &'a mut Differences,
}

impl ValueWalk<'_> {
    fn compare(&mut self, l: &Value, r: &Value, path: &mut String) {
        if ignored(path, self.rules) {
            return;
        }
        let len = path.len();
        match (l, r) {
            (Value::Object(lm), Value::Object(rm)) => {
                for (k, lv) in lm {
                    if let Some(rv) = rm.get(k) {
                        path.push('/');
                        push_escaped(path, k);
                        self.compare(lv, rv, path);
                        path.truncate(len);
                    }
                }
            }
            (Value::Array(la), Value::Array(ra)) => {
                if la.len() != ra.len() {
                    self.report(path, || (format!("{} items", la.len()), format!("{} items", ra.len())));
                }
                path.push_str("/*");
                for (lv, rv) in la.iter().zip(ra) {
                    self.compare(lv, rv, path);
                }
                path.truncate(len);
            }
            (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {}
            // A type change is already reported as a shape difference at this path.
            _ if self.retyped.contains(path.as_str()) || same_scalar(l, r, self.rules) => {}
            _ => self.report(path, || (scalar_text(l), scalar_text(r))),
        }
    }

    fn report(&mut self, path: &str, texts: impl FnOnce() -> (String, String)) {
        if !self.reported.contains(path) {
            self.reported.insert(path.to_string());
            self.out.add(Kind::Value, || {
                let (left, right) = texts();
                value_diff(path, left, right)
            });
        }
    }
}

fn same_scalar(l: &Value, r: &Value, rules: &CompareRules) -> bool {
    match (l, r) {
        (Value::String(a), Value::String(b)) if rules.normalize_url_host => strip_url_host(a) == strip_url_host(b),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) if rules.normalize_decimal_strings && is_decimal(s) => {
            match (n.as_f64(), s.parse::<f64>()) {
                (Some(a), Ok(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(1.0),
                _ => false,
            }
        }
        _ => l == r,
    }
}

/// `https://legacy.internal:8000/api/users/?page=2` → `/api/users/?page=2`.
fn strip_url_host(s: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    s
}

fn scalar_text(v: &Value) -> String {
    truncate(&v.to_string(), 80)
}

fn value_diff(path: &str, left: String, right: String) -> Difference {
    Difference {
        kind: Kind::Value,
        path: path.to_string(),
        left,
        right,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> CompareRules {
        CompareRules::default()
    }

    fn paths(diffs: &[Difference]) -> Vec<(Kind, &str, &str, &str)> {
        diffs
            .iter()
            .map(|d| (d.kind, d.path.as_str(), d.left.as_str(), d.right.as_str()))
            .collect()
    }

    #[test]
    fn array_order_and_length_do_not_count_in_shape_mode() {
        let l = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]);
        let r = json!([{"name": "c", "id": 9}]);
        assert!(compare_json(&l, &r, &rules()).is_empty());
    }

    #[test]
    fn missing_keys_and_type_changes_are_shape_differences() {
        let l = json!({"id": 1, "date_joined": "2019-01-01", "tags": ["a"]});
        let r = json!({"id": "1", "joined": "2019-01-01", "tags": []});
        assert_eq!(
            paths(&compare_json(&l, &r, &rules())),
            vec![
                (Kind::Shape, "/date_joined", "string", "absent"),
                (Kind::Shape, "/id", "number", "string"),
                (Kind::Shape, "/joined", "absent", "string"),
            ]
        );
    }

    #[test]
    fn unwrap_maps_a_paginated_envelope_onto_a_bare_list() {
        let l = json!({"count": 1, "next": null, "previous": null, "results": [{"id": 1}]});
        let r = json!([{"id": 2}]);
        let mut rules = rules();
        assert!(!compare_json(&l, &r, &rules).is_empty());
        rules.unwrap_left = Some("/results".into());
        assert!(compare_json(&l, &r, &rules).is_empty());
    }

    #[test]
    fn ignore_patterns_cover_wildcards_and_subtrees() {
        let l = json!({"results": [{"updated_at": "x", "meta": {"a": 1}}], "csrf_token": "a"});
        let r = json!({"results": [{"updated_at": 5, "meta": {"b": 1}}]});
        let mut rules = rules();
        rules.ignore = ["/results/*/updated_at", "/results/*/meta", "/csrf_token"]
            .iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect();
        assert!(compare_json(&l, &r, &rules).is_empty());
    }

    #[test]
    fn values_mode_compares_values_with_normalisations() {
        let l = json!({"next": "http://legacy:8000/api/users/?page=2", "price": "10.50", "n": 1, "list": [1, 2]});
        let r = json!({"next": "https://new.internal/api/users/?page=2", "price": 10.5, "n": 2, "list": [1, 2, 3]});
        let mut rules = rules();
        rules.values = true;
        assert_eq!(
            paths(&compare_json(&l, &r, &rules)),
            vec![(Kind::Value, "/list", "2 items", "3 items"), (Kind::Value, "/n", "1", "2")]
        );
        rules.normalize_url_host = false;
        rules.normalize_decimal_strings = false;
        let kinds: Vec<(Kind, String)> = compare_json(&l, &r, &rules).into_iter().map(|d| (d.kind, d.path)).collect();
        assert!(kinds.contains(&(Kind::Shape, "/price".into())));
        assert!(kinds.contains(&(Kind::Value, "/next".into())));
    }

    #[test]
    fn empty_arrays_on_one_side_are_data_not_shape() {
        let l = json!({"results": [{"id": 1}]});
        let r = json!({"results": []});
        assert!(compare_json(&l, &r, &rules()).is_empty());
    }

    #[test]
    fn status_headers_and_non_json_bodies() {
        let mut lh = http::HeaderMap::new();
        lh.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        let mut rh = http::HeaderMap::new();
        rh.insert("content-type", "application/json".parse().unwrap());
        let l = Captured {
            status: 200,
            headers: lh,
            body: Some("<p>hi</p>".into()),
        };
        let r = Captured {
            status: 201,
            headers: rh,
            body: Some("{}".into()),
        };
        let kinds: Vec<Kind> = compare(&l, &r, &rules()).iter().map(|d| d.kind).collect();
        assert_eq!(kinds, vec![Kind::Status, Kind::Header, Kind::Shape]);
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
                body: Some(body.into()),
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
                ("content-type", "application/json;charset=utf-8", "application/problem+json"),
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
            body: Some("{}".into()),
        };
        let mut other = response.clone();
        other.insert("vary", "Accept-Encoding".parse().unwrap());
        let on_copies = compare(&side(kept), &side(compared_headers(&other, &rules)), &rules);
        assert_eq!(on_copies, compare(&side(response), &side(other), &rules));
        assert_eq!(on_copies.len(), 1);
    }

    #[test]
    fn integer_ids_turned_strings_are_a_type_change() {
        let d = compare_json(&json!({"id": 2}), &json!({"id": "2"}), &rules());
        assert_eq!(paths(&d), vec![(Kind::Shape, "/id", "number", "string")]);
        // In values mode too: the type change is one shape difference, not also a value one.
        let values = CompareRules { values: true, ..rules() };
        let d = compare_json(&json!([{"id": 2}]), &json!([{"id": "2"}]), &values);
        assert_eq!(paths(&d), vec![(Kind::Shape, "/*/id", "number", "string")]);
        // Decimal strings, as DRF serialises DecimalField, match numbers.
        assert!(compare_json(&json!({"price": "10.50"}), &json!({"price": 10.5}), &rules()).is_empty());
    }

    #[test]
    fn patterns_match_exactly_or_cover_subtrees() {
        let p = PathPattern::parse("/results/*/id").unwrap();
        assert!(p.matches("/results/*/id"));
        assert!(p.covers("/results/*/id/x"));
        assert!(!p.matches("/results/*/name"));
        assert!(PathPattern::parse("results").is_err());
    }

    fn wide(prefix: &str, keys: usize, value: i64) -> Value {
        Value::Object((0..keys).map(|i| (format!("{prefix}{i}"), json!(value + i as i64))).collect())
    }

    #[test]
    fn differences_past_the_cap_are_counted_not_listed() {
        let d = compare_json(&wide("legacy_", 60_000, 0), &wide("new_", 60_000, 0), &rules());
        assert_eq!(d.len(), MAX_DIFFERENCES + 1);
        assert!(d[..MAX_DIFFERENCES].iter().all(|d| d.kind == Kind::Shape && d.path != MORE));
        assert_eq!(
            paths(&d[MAX_DIFFERENCES..]),
            [(Kind::Shape, MORE, "119900 more differences", "not listed")]
        );

        // In values mode too, with one difference per folded path.
        let values = CompareRules { values: true, ..rules() };
        let d = compare_json(&wide("k", 60_000, 0), &wide("k", 60_000, 1), &values);
        assert_eq!(
            paths(&d[MAX_DIFFERENCES..]),
            [(Kind::Value, MORE, "59900 more differences", "not listed")]
        );
        let items =
            |n: i64| json!({"items": (0..500).map(|i| json!({"n": i + n, "tags": vec![0; (i + n) as usize % 3]})).collect::<Vec<_>>()});
        assert_eq!(
            paths(&compare_json(&items(0), &items(1), &values)),
            [
                (Kind::Value, "/items/*/n", "0", "1"),
                (Kind::Value, "/items/*/tags", "0 items", "1 items"),
            ]
        );

        // Fewer than the cap: no count.
        let d = compare_json(&wide("a", 10, 0), &wide("b", 10, 0), &rules());
        assert_eq!(d.len(), 20);
    }
}
