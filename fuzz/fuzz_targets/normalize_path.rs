#![no_main]
//! Path normalisation: never panics, and what it returns is normal — starts
//! with '/', no empty, `.` or `..` segments, no escaped unreserved character,
//! escapes in upper case — and normalising it again changes nothing.

use cutover::routing::normalize_path;
use libfuzzer_sys::fuzz_target;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalize_path(path) else {
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
        }
    }
    let again = normalize_path(&out).unwrap_or_else(|e| panic!("{path:?} → {out:?} → {e}"));
    assert_eq!(again, out, "not idempotent for {path:?}");
});
