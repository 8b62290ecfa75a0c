//! `cutover check`: the route table for good files, and `file:line:col:
//! message` for every kind of mistake, pointing at the offending spot.

mod common;

use std::path::Path;

use common::*;

const CONFIG: &str = r#"listeners:
  - name: public
    addr: "127.0.0.1:0"
admin:
  addr: "127.0.0.1:0"
weights_file: weights.yaml
access_log: { format: combined, path: stdout }
backends:
  legacy:
    url: "http://127.0.0.1:8000"
    timeout: 30s
  new:
    url: "http://127.0.0.1:9000"
routes:
  - name: api
    match: { path_prefix: /api/, methods: [GET, POST] }
    backends: { legacy: {}, new: {} }
    sticky: { header: Authorization }
  - name: web
    match: { path_regex: "^/(home|about)/$" }
    backends: { legacy: {} }
"#;

const WEIGHTS: &str = "api: { legacy: 90, new: 10 }\nweb: { legacy: 100 }\n";

#[derive(Clone, Copy)]
enum File {
    Config,
    Weights,
}

/// Replaces line `line` (1-based) of `text` with `with`.
fn replace_line(text: &str, line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

/// Writes the two files (one line of one replaced), runs `cutover check`,
/// and asserts it fails with `<file>:<line>:<col>: ...<message>...`.
fn assert_error_at(file: File, line: usize, with: &str, at: (usize, usize), message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = match file {
        File::Config => (replace_line(CONFIG, line, with), WEIGHTS.to_string()),
        File::Weights => (CONFIG.to_string(), replace_line(WEIGHTS, line, with)),
    };
    let config_path = dir.path().join("cutover.yaml");
    let weights_path = dir.path().join("weights.yaml");
    std::fs::write(&config_path, &config).unwrap();
    std::fs::write(&weights_path, &weights).unwrap();
    let (ok, stdout, stderr) = check(&config_path);
    let culprit: &Path = match file {
        File::Config => &config_path,
        File::Weights => &weights_path,
    };
    let prefix = format!("{}:{}:{}: ", culprit.display(), at.0, at.1);
    let shown = match file {
        File::Config => config,
        File::Weights => weights,
    };
    assert!(!ok, "check accepted line {line} = {with:?}\nstdout:\n{stdout}");
    let hit = stderr.lines().find_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]));
    match hit {
        Some(msg) => assert!(
            msg.contains(message),
            "error at {prefix} says {msg:?}, want it to mention {message:?}"
        ),
        None => panic!("want an error at {prefix}(…{message}…) for line {line} = {with:?}; stderr:\n{stderr}\nfile:\n{shown}"),
    }
}

#[test]
fn the_unbroken_files_pass_and_print_the_route_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    std::fs::write(dir.path().join("weights.yaml"), WEIGHTS).unwrap();
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "stderr:\n{stderr}");
    for word in ["api", "web", "legacy", "new", "90", "10", "0..9000", "9000..10000"] {
        assert!(stdout.contains(word), "route table lacks {word:?}:\n{stdout}");
    }
}

#[test]
fn weight_file_errors_point_at_the_offending_spot() {
    // Weights that do not sum to 100: at the route's key.
    assert_error_at(File::Weights, 1, "api: { legacy: 90, new: 20 }", (1, 1), "sum to 110, not 100");
    // A backend the route does not have: at its key.
    assert_error_at(File::Weights, 1, "api: { legacy: 90, ghost: 10 }", (1, 20), "no backend \"ghost\"");
    // A route the config does not have: at its key.
    assert_error_at(File::Weights, 2, "blog: { legacy: 100 }", (2, 1), "unknown route \"blog\"");
    // YAML syntax: a flow mapping closed with ']'.
    assert_error_at(
        File::Weights,
        2,
        "web: { legacy: 100 ]",
        (2, 20),
        "did not find expected ',' or '}'",
    );
    // Out of range: at the value.
    assert_error_at(File::Weights, 1, "api: { legacy: 110, new: -10 }", (1, 16), "between 0 and 100");
}

#[test]
fn config_errors_point_at_the_offending_spot() {
    // No serving threads.
    assert_error_at(
        File::Config,
        6,
        "server: { workers: 0 }\nweights_file: weights.yaml",
        (6, 20),
        "workers must be between 1 and 64",
    );
    // YAML syntax: a key indented by three spaces instead of four.
    assert_error_at(File::Config, 11, "   timeout: 30s", (11, 4), "did not find expected key");
    // A misspelt key inside a backend.
    assert_error_at(File::Config, 11, "    timeuot: 30s", (11, 5), "unknown field `timeuot`");
    // A misspelt top-level key.
    assert_error_at(
        File::Config,
        7,
        "acces_log: { format: combined, path: stdout }",
        (7, 1),
        "unknown field `acces_log`",
    );
    // A route naming a backend that is not defined: at its key.
    assert_error_at(
        File::Config,
        17,
        "    backends: { legacy: {}, ghost: {} }",
        (17, 29),
        "unknown backend \"ghost\"",
    );
}

#[test]
fn bad_scalar_values_point_at_the_value() {
    // A duration that does not parse: at the value `30 parsecs`.
    assert_error_at(File::Config, 11, "    timeout: 30 parsecs", (11, 14), "invalid duration");
    // A regex that does not compile: at the quoted value.
    assert_error_at(
        File::Config,
        20,
        "    match: { path_regex: \"^/(home|about/$\" }",
        (20, 26),
        "invalid regex",
    );
    // A URL with an unsupported scheme: at the quoted value.
    assert_error_at(File::Config, 13, "    url: \"ftp://127.0.0.1:9000\"", (13, 10), "invalid URL");
    // A listener redirecting to a port that cannot be: at the value.
    assert_error_at(
        File::Config,
        3,
        "    addr: \"127.0.0.1:0\"\n    redirect_https: 70000",
        (4, 21),
        "70000 is not a port",
    );
    // A file backend's directory that is not there: at the URL.
    assert_error_at(
        File::Config,
        13,
        "    url: \"file:/nonexistent/static\"",
        (13, 10),
        "/nonexistent/static does not exist",
    );
}

#[test]
fn every_shipped_main_config_passes_check() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.lines().any(|l| l.starts_with("routes:")) {
            continue; // a weight file
        }
        let (ok, stdout, stderr) = check(&path);
        assert!(ok, "{} fails check:\n{stderr}", path.display());
        assert!(stdout.contains("config ok"), "{stdout}");
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    for shipped in ["cutover.yaml", "demo.yaml"] {
        assert!(checked.iter().any(|c| c == shipped), "{shipped} was not checked: {checked:?}");
    }
}

#[test]
fn check_shows_what_is_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("cutover.yaml");
    std::fs::write(
        &config_path,
        format!("{CONFIG}compression: {{ gzip: true, min_bytes: 512, types: [application/json] }}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("weights.yaml"), WEIGHTS).unwrap();
    let (ok, stdout, stderr) = check(&config_path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("compression: gzip from 512 bytes: application/json"), "{stdout}");
}

/// A fleet replica's weight file only caches the fleet's table: before its
/// first start there is none, and `check` passes (saying so); in file mode a
/// missing weight file is an error.
#[test]
fn a_missing_weight_file_is_fine_for_a_fleet_replica_only() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("cutover.yaml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let (ok, _, stderr) = check(&config_path);
    assert!(!ok, "file mode needs its weight file: {stderr}");

    let fleet =
        format!("{CONFIG}fleet:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    prefix: /cutover/test\n  replica_id: a\n");
    std::fs::write(&config_path, fleet).unwrap();
    let (ok, stdout, stderr) = check(&config_path);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no weight file yet"), "{stderr}");
    assert!(
        stdout.contains("legacy          100%"),
        "every route on its stable backend:\n{stdout}"
    );
}
