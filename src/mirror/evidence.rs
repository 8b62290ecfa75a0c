//! Evidence: for each difference parity reports, the last few requests that
//! showed it, so whoever fixes the new backend can replay one of them.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::compare::redact::{REDACTED, Redactor};
use crate::compare::{Difference, MAX_PATH_CHARS};

/// Examples kept per difference row.
pub const EXAMPLES: usize = 3;

/// The request behind examples, shared by all the differences it showed.
#[derive(Debug)]
pub struct ExampleRequest {
    /// Orders examples from the newest, across rows.
    pub seq: u64,
    pub request_id: String,
    pub time: String,
    pub method: String,
    /// The path and its query, secrets redacted.
    pub path: String,
}

/// One request that showed a difference, with the two values there
/// (redacted and cut as the difference was).
#[derive(Debug, Clone)]
pub struct Example {
    pub request: Arc<ExampleRequest>,
    pub left: String,
    pub right: String,
}

impl Example {
    pub fn new(request: &Arc<ExampleRequest>, d: &Difference) -> Example {
        let [left, right] = d.example_values();
        Example {
            request: request.clone(),
            left: left.to_string(),
            right: right.to_string(),
        }
    }
}

impl Serialize for Example {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.request;
        let mut st = s.serialize_struct("Example", 6)?;
        st.serialize_field("request_id", &r.request_id)?;
        st.serialize_field("time", &r.time)?;
        st.serialize_field("method", &r.method)?;
        st.serialize_field("path", &r.path)?;
        st.serialize_field("left", &self.left)?;
        st.serialize_field("right", &self.right)?;
        st.end()
    }
}

/// Keeps the newest [`EXAMPLES`].
pub fn keep(examples: &mut VecDeque<Example>, example: Example) {
    if examples.len() == EXAMPLES {
        examples.pop_front();
    }
    examples.push_back(example);
}

/// The newest `n` of several rows' examples, newest first.
pub fn newest<'a>(rows: impl Iterator<Item = &'a VecDeque<Example>>, n: usize) -> Vec<&'a Example> {
    let mut all: Vec<&Example> = rows.flatten().collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.request.seq));
    all.truncate(n);
    all
}

/// A request path and query as examples show it: credentials hidden
/// anywhere, and the value of each query parameter whose name names a
/// secret (by the route's redaction rules) replaced; cut at [`MAX_PATH_CHARS`].
pub fn shown_path(path: &str, query: Option<&str>, redactor: &Redactor) -> String {
    let mut out = Redactor::hide_credentials(path);
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if redactor.secret_path(&percent_decoded(name)) => {
                    out.push_str(&Redactor::hide_credentials(name));
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(&Redactor::hide_credentials(pair)),
            }
            if out.len() > MAX_PATH_CHARS * 4 {
                break;
            }
        }
    }
    crate::compare::truncate(&out, MAX_PATH_CHARS)
}

/// `%5F`-style escapes and `+` undone, for judging a parameter's name.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_named_as_secrets_or_shaped_like_credentials_are_hidden() {
        let redactor = Redactor::new(&["email".to_string()]).unwrap();
        assert_eq!(
            shown_path(
                "/api/users/7/",
                Some("page=2&access_token=abc123&api%5Fkey=zzz&Email=a%40b.c&q=Bearer%20x&note=sk_live_4eC39HqLyjWDarjtT1zdp7dc&flag"),
                &redactor
            ),
            "/api/users/7/?page=2&access_token=[redacted]&api%5Fkey=[redacted]&Email=[redacted]&q=Bearer%20x&note=[redacted]&flag"
        );
        assert_eq!(shown_path("/a", None, &redactor), "/a");
        let long = format!("a={}", "x".repeat(100_000));
        assert!(shown_path("/a", Some(&long), &redactor).chars().count() <= MAX_PATH_CHARS + 1);
        assert_eq!(percent_decoded("a%5fb%2"), "a_b%2");
    }
}
