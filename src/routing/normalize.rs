//! Request path normalisation. Routes match the normalised path and the
//! normalised path is what gets forwarded, so no encoding trick can make a
//! request match one route while the backend sees another path.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path must start with '/'")]
    NotAbsolute,
    #[error("malformed percent-encoding in request path")]
    BadEscape,
    #[error("encoded slash (%2F) in request path")]
    EncodedSlash,
    #[error("encoded NUL (%00) in request path")]
    EncodedNul,
}

/// What an encoded slash (`%2F`) in a request path becomes
/// (`server.encoded_slashes`). A backend that decodes it after routing would
/// otherwise see a path no route was chosen for: `/x/..%2Fadmin` is routed
/// as a path under `/x/` and read by such a backend as `/admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlashes {
    /// The request is refused (400).
    #[default]
    Reject,
    /// Decoded to `/` before normalisation, so dot-segments around it are
    /// resolved; the decoded path is routed and forwarded.
    Decode,
    /// Kept as data (`%2F`): routed and forwarded as an ordinary character.
    Keep,
}

/// [`normalize_path_with`] under the default policy: encoded slashes refused.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(path, EncodedSlashes::default())
}

/// Normalises an origin-form path (no query):
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
///   other escapes are kept, with their hex digits upper-cased;
/// - `%2F` is refused, decoded or kept as `slashes` says; `%00` is refused;
/// - runs of `/` collapse into one;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4); `..` never climbs above `/`.
pub fn normalize_path_with(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').collect();
    // The last part is empty when the path ends in '/'; that slash is kept.
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in parts.iter().enumerate().skip(1) {
        match *seg {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when `normalize_path` would return the path unchanged.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'%') {
        return false;
    }
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' && prev == b'/' {
            return false;
        }
        if b == b'.' && prev == b'/' {
            let rest = &bytes[i..];
            if rest == b"." || rest.starts_with(b"./") || rest == b".." || rest.starts_with(b"../") {
                return false;
            }
        }
        prev = b;
    }
    true
}

fn decode_unreserved(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = hex_value(hex[0])
                .zip(hex_value(hex[1]))
                .map(|(h, l)| h * 16 + l)
                .ok_or(PathError::BadEscape)?;
            let c = value as char;
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                out.push(c);
            } else if c == '\0' {
                return Err(PathError::EncodedNul);
            } else if c == '/' && slashes != EncodedSlashes::Keep {
                if slashes == EncodedSlashes::Reject {
                    return Err(PathError::EncodedSlash);
                }
                out.push('/');
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next escape in one go (keeps UTF-8 intact).
            let next = path[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
        }
    }
    Ok(Cow::Owned(out))
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).unwrap().into_owned()
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in ["/", "/api/users/", "/a.b/c..d/.e", "/x/..."] {
            assert!(matches!(normalize_path(p).unwrap(), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_removed() {
        assert_eq!(norm("/api/../admin"), "/admin");
        assert_eq!(norm("/api/./users/"), "/api/users/");
        assert_eq!(norm("//api///users"), "/api/users");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/api/.."), "/");
        assert_eq!(norm("/api/users/.."), "/api/");
        assert_eq!(norm("/api/."), "/api/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept() {
        assert_eq!(norm("/%61pi/"), "/api/");
        assert_eq!(norm("/api/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(norm("/%7Euser"), "/~user");
    }

    #[test]
    fn encoded_slashes_are_refused_decoded_or_kept() {
        let with = |p, slashes| normalize_path_with(p, slashes).map(Cow::into_owned);
        for p in ["/a%2fb", "/x/..%2Finternal/secret", "/%2F"] {
            assert_eq!(normalize_path(p), Err(PathError::EncodedSlash), "{p}");
            assert_eq!(with(p, EncodedSlashes::Reject), Err(PathError::EncodedSlash), "{p}");
        }
        assert_eq!(with("/a%2fb", EncodedSlashes::Decode).unwrap(), "/a/b");
        // Decoded before dot-segments are resolved: the path the backend would read.
        assert_eq!(with("/x/..%2Finternal/secret", EncodedSlashes::Decode).unwrap(), "/internal/secret");
        assert_eq!(with("/x/%2E%2E%2f%2F/y", EncodedSlashes::Decode).unwrap(), "/y");
        // Never decoded twice: `%252F` is the text `%2F`.
        assert_eq!(with("/a%252Fb", EncodedSlashes::Decode).unwrap(), "/a%252Fb");
        assert_eq!(with("/a%2fb", EncodedSlashes::Keep).unwrap(), "/a%2Fb");
        assert_eq!(
            with("/x/..%2Finternal/secret", EncodedSlashes::Keep).unwrap(),
            "/x/..%2Finternal/secret"
        );
        // A backslash is an ordinary character, whatever the policy.
        for slashes in [EncodedSlashes::Reject, EncodedSlashes::Decode, EncodedSlashes::Keep] {
            assert_eq!(with("/x/..%5cy", slashes).unwrap(), "/x/..%5Cy");
        }
    }

    #[test]
    fn encoded_nul_is_refused_whatever_the_slash_policy() {
        for slashes in [EncodedSlashes::Reject, EncodedSlashes::Decode, EncodedSlashes::Keep] {
            assert_eq!(normalize_path_with("/a%00b", slashes), Err(PathError::EncodedNul));
            assert_eq!(normalize_path_with("/a/%00/../b", slashes), Err(PathError::EncodedNul));
        }
        assert_eq!(norm("/a%01b"), "/a%01b");
    }

    #[test]
    fn malformed_input_is_rejected() {
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    }
}
