#![no_main]
//! Path normalisation: never panics, and what it returns is normal — starts
//! with '/', no empty, `.` or `..` segments, no escaped unreserved character,
//! escapes in upper case, no `%00`, `%2F` only when kept — and normalising it
//! again changes nothing. Every `server.encoded_slashes` policy is tried.

use cutover::routing::{EncodedSlashes, normalize_path_with};
use libfuzzer_sys::fuzz_target;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for slashes in [EncodedSlashes::Reject, EncodedSlashes::Decode, EncodedSlashes::Keep] {
        check(path, slashes);
    }
});

fn check(path: &str, slashes: EncodedSlashes) {
    let Ok(out) = normalize_path_with(path, slashes) else {
        return;
    };
    assert!(path.starts_with('/'), "accepted {path:?}");
    assert!(out.starts_with('/'), "{path:?} → {out:?}");
    assert!(!out.contains("//"), "{path:?} → {out:?}");
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        assert!(*seg != "." && *seg != "..", "{path:?} → {out:?}");
        assert!(!seg.is_empty() || i == segments.len() - 1, "{path:?} → {out:?}");
    }
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("{path:?} → {out:?}: truncated escape"));
            assert!(
                hex.iter().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{path:?} → {out:?}"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !unreserved(value),
                "{path:?} → {out:?}: %{} left encoded",
                std::str::from_utf8(hex).unwrap()
            );
            assert_ne!(value, 0, "{path:?} → {out:?}: %00 accepted");
            assert!(
                value != b'/' || slashes == EncodedSlashes::Keep,
                "{path:?} → {out:?}: %2F left under {slashes:?}"
            );
        }
    }
    let again = normalize_path_with(&out, slashes).unwrap_or_else(|e| panic!("{path:?} → {out:?} → {e}"));
    assert_eq!(again, out, "not idempotent for {path:?} under {slashes:?}");
}
