#![no_main]
//! The weight file parser against a fixed config: any text gives a table or
//! errors, never a panic; an accepted table sums to 100% per route, and the
//! file cutover writes back from it (keeping its comments) loads as the same table.

use std::path::Path;
use std::sync::LazyLock;

use cutover::config::weight_file::{self, Comments};
use cutover::config::{Config, Weights};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
weights_file: weights.yaml
backends:
  legacy: { url: "http://127.0.0.1:8000" }
  new: { url: "http://127.0.0.1:9000" }
  canary: { url: "http://127.0.0.1:9001" }
routes:
  - name: auth
    match: { path_prefix: /api/auth/ }
    stable: legacy
    backends: { legacy: {}, new: {} }
  - name: api
    match: { path_prefix: /api/ }
    backends: { legacy: {}, new: {}, canary: {} }
  - name: default
    backends: { legacy: {} }
"#;

static FIXED: LazyLock<Config> = LazyLock::new(|| {
    Config::parse(Path::new("/nonexistent/cutover-fuzz/cutover.yaml"), CONFIG.to_string()).expect("the fixed config is valid")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = &*FIXED;
    let Ok(weights) = Weights::parse(&config.weights_path, text, config) else {
        return;
    };
    for (ri, route) in config.routes.iter().enumerate() {
        let bp = weights.route(ri);
        assert_eq!(bp.len(), route.backends.len());
        assert_eq!(bp.iter().map(|&b| u32::from(b)).sum::<u32>(), 10_000, "route {}", route.name);
    }
    let written = weight_file::render(config, &weights, &Comments::read(text));
    match Weights::parse(&config.weights_path, &written, config) {
        Ok(back) => assert_eq!(back, weights, "the weight file read back differently:\n{written}"),
        Err(e) => panic!("the weight file written back does not load: {e}\n--- read:\n{text}\n--- written:\n{written}"),
    }
});
