//! JSON documents compared: the *shape* — for each JSON path, present or
//! absent and the value's type, with array elements folded into one element
//! shape so order and length do not count — and, in `values` mode, the
//! values themselves. Numbers compare exactly, by their text (serde_json
//! keeps it), so integers beyond 2^53 or 2^64 never round to equal.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Number, Value};

use super::MAX_VALUE_CHARS;
use super::{CompareRules, Difference, Differences, Kind, truncate};

/// Compares two JSON documents under `rules`, listing differences as
/// [`compare`](super::compare) does.
pub fn compare_json(left: &Value, right: &Value, rules: &CompareRules) -> Vec<Difference> {
    let mut out = Differences::new();
    collect_json(left, right, rules, &mut out);
    out.finish()
}

pub(super) fn collect_json(left: &Value, right: &Value, rules: &CompareRules, out: &mut Differences) {
    let left = unwrap(left, rules.unwrap_left.as_deref());
    let right = unwrap(right, rules.unwrap_right.as_deref());
    let (ls, rs) = (shape_of(left, rules), shape_of(right, rules));
    // Paths with a type change: their values are not compared again.
    let mut retyped = HashSet::new();
    for (path, l) in &ls {
        if ignored(path, rules) {
            continue;
        }
        match rs.get(path) {
            None if !under_empty_array(path, &rs) => out.add(Kind::Shape, || shape_diff(path, Some(l), None)),
            Some(r) if l.types.0 & r.types.0 == 0 => {
                retyped.insert(path.as_str());
                out.add(Kind::Shape, || shape_diff(path, Some(l), Some(r)));
            }
            _ => {}
        }
    }
    for (path, r) in &rs {
        if !ls.contains_key(path) && !ignored(path, rules) && !under_empty_array(path, &ls) {
            out.add(Kind::Shape, || shape_diff(path, None, Some(r)));
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

/// A shape difference: the types seen on each side (`absent` for none), and
/// the first value seen there as its example.
fn shape_diff(path: &str, left: Option<&Seen<'_>>, right: Option<&Seen<'_>>) -> Difference {
    let types = |s: Option<&Seen<'_>>| s.map_or_else(|| "absent".to_string(), |s| s.types.describe());
    let value = |s: Option<&Seen<'_>>| s.map_or_else(|| "absent".to_string(), |s| preview(s.first));
    Difference {
        values: Some(Box::new([value(left), value(right)])),
        ..Difference::new(Kind::Shape, path, types(left), types(right))
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
fn under_empty_array(path: &str, shape: &Shape<'_>) -> bool {
    let mut end = path.len();
    while let Some(pos) = path[..end].rfind("/*") {
        let array = &path[..pos];
        let elements = &path[..pos + 2];
        if shape.get(array).is_some_and(|s| s.types.0 & Types::ARRAY != 0) && !shape.contains_key(elements) {
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

/// What one folded path holds in a document.
pub struct Seen<'v> {
    pub types: Types,
    /// The first value met there, in document order.
    pub first: &'v Value,
}

/// Folded path → what is seen there.
pub type Shape<'v> = BTreeMap<String, Seen<'v>>;

/// The shape of a document.
pub fn shape_of<'v>(v: &'v Value, rules: &CompareRules) -> Shape<'v> {
    let mut out = BTreeMap::new();
    let mut path = String::new();
    collect_shape(v, &mut path, rules, &mut out);
    out
}

fn collect_shape<'v>(v: &'v Value, path: &mut String, rules: &CompareRules, out: &mut Shape<'v>) {
    let ty = type_of(v, rules);
    // Array elements revisit the same folded paths: look up before allocating a key.
    match out.get_mut(path.as_str()) {
        Some(seen) => seen.types.0 |= ty,
        None => {
            out.insert(
                path.clone(),
                Seen {
                    types: Types(ty),
                    first: v,
                },
            );
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
        (Value::Number(a), Value::Number(b)) => same_number(a, b, rules.normalize_numbers),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) if rules.normalize_decimal_strings && is_decimal(s) => {
            matches!((exact(n.as_str()), exact(s)), (Some(a), Some(b)) if a == b)
        }
        _ => l == r,
    }
}

/// Whether two numbers are equal: by value when `by_value`; else an
/// integer (`1`) never equals a number written with a fraction or an
/// exponent (`1.0`, `1e0`), as serde_json reads them apart, and numbers of
/// one kind compare by value (`1.5` equals `1.50`). Exact at any size.
pub fn same_number(a: &Number, b: &Number, by_value: bool) -> bool {
    let (a, b) = (a.as_str(), b.as_str());
    if a == b {
        return true;
    }
    let integer = |t: &str| !t.contains(['.', 'e', 'E']);
    if !by_value && integer(a) != integer(b) {
        return false;
    }
    matches!((exact(a), exact(b)), (Some(x), Some(y)) if x == y)
}

/// The exact value of a JSON number's text: sign, significant digits
/// without leading or trailing zeros, and the power of ten they are
/// multiplied by. Zero is `(false, "", 0)`. `None` when the exponent does
/// not fit 64 bits (such numbers are equal only as the same text).
fn exact(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).skip_while(|&c| c == '0').collect();
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let trailing = (digits.len() - significant.len()) as i64;
    let power = exponent.checked_sub(frac.len() as i64)?.checked_add(trailing)?;
    Some((negative, significant.to_string(), power))
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
    preview(v)
}

/// A value as a difference shows it: its JSON text, cut at
/// [`MAX_VALUE_CHARS`] characters without writing out more than that.
pub fn preview(v: &Value) -> String {
    /// Takes bytes until it has enough, then refuses the rest.
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            // A character is at most 4 bytes: this is always enough to cut at MAX_VALUE_CHARS.
            let room = (MAX_VALUE_CHARS * 4 + 4).saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = room.min(buf.len());
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded(Vec::new());
    let _ = serde_json::to_writer(&mut out, v);
    truncate(&String::from_utf8_lossy(&out.0), MAX_VALUE_CHARS)
}

fn value_diff(path: &str, left: String, right: String) -> Difference {
    Difference::new(Kind::Value, path, left, right)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{MAX_DIFFERENCES, MORE, PathPattern};
    use serde_json::json;

    fn rules() -> CompareRules {
        CompareRules::default()
    }

    use crate::compare::rows as paths;

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

    #[test]
    fn numbers_compare_exactly_and_by_value_when_asked() {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let strict = CompareRules { values: true, ..rules() };
        let by_value = CompareRules {
            normalize_numbers: true,
            ..strict.clone()
        };
        let differs = |l: &str, r: &str, rules: &CompareRules| !compare_json(&parse(l), &parse(r), rules).is_empty();
        // An integer against the same number written as a float: a difference
        // unless numbers compare by value.
        assert!(differs(r#"{"n": 1}"#, r#"{"n": 1.0}"#, &strict));
        assert!(!differs(r#"{"n": 1}"#, r#"{"n": 1.0}"#, &by_value));
        assert!(!differs(r#"{"n": 100}"#, r#"{"n": 1e2}"#, &by_value));
        assert!(!differs(r#"{"n": 0.5}"#, r#"{"n": 5E-1}"#, &by_value));
        assert!(!differs(r#"{"n": -0}"#, r#"{"n": 0.0}"#, &by_value));
        assert!(
            !differs(r#"{"n": 1.5}"#, r#"{"n": 1.50}"#, &strict),
            "floats compare by value in both"
        );
        // Exact beyond 2^53, and beyond 2^64, where floats and u64 cannot hold them.
        for (l, r) in [
            ("9007199254740993", "9007199254740992"),
            ("9007199254740993", "9007199254740992.0"),
            ("9007199254740993", "9007199254740993.5"),
            ("1180591620717411303425", "1180591620717411303424"),
            ("1180591620717411303425", "1.180591620717411303424e21"),
            ("0.30000000000000000001", "0.3"),
            ("-5", "5"),
        ] {
            for rules in [&strict, &by_value] {
                assert!(differs(&format!("[{l}]"), &format!("[{r}]"), rules), "{l} vs {r}");
            }
        }
        assert!(!differs("[9007199254740993]", "[9007199254740993.0]", &by_value));
        assert!(!differs("[1180591620717411303425]", "[1.180591620717411303425e21]", &by_value));
        assert!(!differs("[1180591620717411303425]", "[1180591620717411303425]", &strict));
        // Exponents past 64 bits compare as text.
        assert!(differs("[1e99999999999999999999]", "[1e99999999999999999998]", &by_value));
        // The value shown is the number as written.
        let d = compare_json(&parse("[9007199254740993]"), &parse("[9007199254740992]"), &strict);
        assert_eq!(paths(&d), vec![(Kind::Value, "/*", "9007199254740993", "9007199254740992")]);
        // Decimal strings compare exactly too.
        assert!(!differs(r#"{"p": "10.50"}"#, r#"{"p": 10.5}"#, &strict));
        assert!(differs(r#"{"p": "0.30000000000000000001"}"#, r#"{"p": 0.3}"#, &strict));
    }

    #[test]
    fn key_order_escapes_and_null_against_absent() {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let values = CompareRules { values: true, ..rules() };
        let l = parse(r#"{"a": 1, "b": {"x": "caf\u00e9", "y": [1, 2]}}"#);
        let r = parse(r#"{"b": {"y": [1, 2], "x": "café"}, "a": 1}"#);
        assert!(
            compare_json(&l, &r, &values).is_empty(),
            "key order and escapes are not differences"
        );
        let d = compare_json(&parse(r#"{"bio": null}"#), &parse("{}"), &values);
        assert_eq!(paths(&d), vec![(Kind::Shape, "/bio", "null", "absent")]);
    }

    #[test]
    fn shape_differences_carry_the_values_behind_them() {
        let l = json!([{"id": 1, "author": "Frank Herbert", "tags": ["a", "b"]}, {"id": 2, "author": "x"}]);
        let r = json!([{"id": "1", "author_name": "Frank Herbert", "tags": "a,b"}]);
        let d = compare_json(&l, &r, &rules());
        let examples: Vec<(&str, [&str; 2])> = d.iter().map(|d| (d.path.as_str(), d.example_values())).collect();
        assert_eq!(
            examples,
            [
                ("/*/author", ["\"Frank Herbert\"", "absent"]),
                ("/*/id", ["1", "\"1\""]),
                ("/*/tags", ["[\"a\",\"b\"]", "\"a,b\""]),
                ("/*/tags/*", ["\"a\"", "absent"]),
                ("/*/author_name", ["absent", "\"Frank Herbert\""]),
            ]
        );
        let long = json!({"text": "é".repeat(10_000)});
        let d = compare_json(&long, &json!({}), &rules());
        assert_eq!(d[0].example_values()[0].chars().count(), MAX_VALUE_CHARS + 1, "cut, with its mark");
    }
}
