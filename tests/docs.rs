//! The documentation's reference code agrees with the product.

use std::process::Command;

/// The Python reference of the sticky hash in docs/STICKY.md gives
/// the same buckets as the proxy.
#[test]
fn documented_sticky_hash_matches_the_implementation() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/STICKY.md")).unwrap();
    let start = doc.find("<!-- sticky-reference:start -->").expect("start marker");
    let end = doc.find("<!-- sticky-reference:end -->").expect("end marker");
    let code = doc[start..end]
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("a python block between the markers");
    let values: Vec<String> = [
        "",
        "a",
        "alice",
        "bob",
        "Bearer abc",
        "exactly8",
        "sixteen-bytes-16",
        "a much longer session identifier 0123456789",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..200).map(|i| format!("session-{i}")))
    .collect();
    let script = format!("{code}\nimport json, sys\nfor v in json.load(sys.stdin):\n    print(cutover_bucket(v.encode()))\n");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(serde_json::to_string(&values).unwrap().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let documented: Vec<u16> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let actual: Vec<u16> = values.iter().map(|v| cutover::split::sticky_bucket(v.as_bytes())).collect();
    assert_eq!(documented, actual);
    assert!(doc.contains(&format!("cutover_bucket(b\"alice\")\n{}", cutover::split::sticky_bucket(b"alice"))));
}
