#![no_main]
//! JSON shape and value comparison on two arbitrary documents (the input is
//! split at its first NUL byte): never panics, a document compared with
//! itself has no difference, and whether two documents differ in shape does
//! not depend on which side each is on.

use cutover::compare::{CompareRules, compare_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let Ok(left) = serde_json::from_slice::<Value>(a) else {
        return;
    };
    let right = serde_json::from_slice::<Value>(b).unwrap_or_else(|_| left.clone());
    let shape = CompareRules::default();
    let values = CompareRules {
        values: true,
        ..CompareRules::default()
    };
    for rules in [&shape, &values] {
        for doc in [&left, &right] {
            let diffs = compare_json(doc, doc, rules);
            assert!(diffs.is_empty(), "{doc} differs from itself: {diffs:?}");
        }
        let _ = compare_json(&left, &right, rules);
    }
    let forward = compare_json(&left, &right, &shape);
    let backward = compare_json(&right, &left, &shape);
    assert_eq!(
        forward.is_empty(),
        backward.is_empty(),
        "{left} vs {right}: {forward:?} / {backward:?}"
    );
});
