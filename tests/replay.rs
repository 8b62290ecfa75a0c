//! `cutover replay` end to end: access logs (nginx `combined`, and the JSON
//! log a real proxy wrote) replayed by the real binary against two real
//! backends that differ in planted ways; and the Markdown sign-off report,
//! from a replay and from a running proxy.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use http::{Method, Response};
use serde_json::{Value, json};

/// Answers as a small book API; `new` renamed `author` and serves `year`
/// as a string. `generated_at` differs on every answer of either side, and
/// between the sides (each counts its own answers, so the count alone could
/// match across them).
fn book_api(new: bool) -> impl Fn(&Recorded, usize) -> Response<Body> + Send + Sync + 'static {
    move |req, n| {
        let path = req.uri.split('?').next().unwrap_or("");
        let body = if let Some(id) = path.strip_prefix("/api/books/").and_then(|r| r.strip_suffix('/')) {
            let id: u64 = id.parse().unwrap_or(0);
            if new {
                json!({"id": id, "title": "Dune", "author_name": "Frank Herbert", "year": "1965", "generated_at": format!("new-t{n}")})
            } else {
                json!({"id": id, "title": "Dune", "author": "Frank Herbert", "year": 1965, "generated_at": format!("legacy-t{n}")})
            }
        } else if path == "/api/status/" {
            json!({"status": "ok"})
        } else {
            json!({"error": "not found"})
        };
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap()
    }
}

/// Both backends, and a config whose `api` route mirrors to `new` (legacy
/// asked twice for every request, to learn noise) beside a `web` route
/// that does not mirror. `access_log` is the config's access log setting.
async fn backends(access_log: &str) -> (Recorder, Recorder, String) {
    let legacy = Recorder::answering("legacy", book_api(false)).await;
    let new = Recorder::answering("new", book_api(true)).await;
    let config = format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api/ }}\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n    \
         mirror:\n      to: new\n      compare: {{ mode: values, noise: {{ sample: 1.0 }} }}\n      min_clean_share: 0.99\n  \
         - name: web\n    match: {{ path_prefix: /web/ }}\n    backends: {{ legacy: {{}} }}\n",
        config_head(access_log),
        legacy.url(),
        new.url()
    );
    (legacy, new, config)
}

fn write_config(dir: &Path, config: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("weights.yaml"), "api: { legacy: 100, new: 0 }\n").unwrap();
    let path = dir.join("cutover.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

async fn cutover(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run cutover")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cutover failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn combined(request: &str) -> String {
    format!("203.0.113.9 - - [22/Nov/2026:01:31:56 +0100] \"{request}\" 200 612 \"-\" \"Mozilla/5.0\"\n")
}

/// The report's (kind, path) rows as `kind path verdict left -> right`.
fn rows(route: &Value) -> Vec<String> {
    route["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} -> {}",
                p["kind"].as_str().unwrap(),
                p["path"].as_str().unwrap(),
                p["verdict"].as_str().unwrap(),
                p["left"].as_str().unwrap(),
                p["right"].as_str().unwrap()
            )
        })
        .collect()
}

fn assert_planted_differences(route: &Value) {
    let rows = rows(route);
    for expected in [
        "shape /author differs string -> absent",
        "shape /author_name differs absent -> string",
        "shape /year differs number -> string",
    ] {
        assert!(rows.iter().any(|r| r == expected), "{expected:?} not in {rows:#?}");
    }
    assert!(
        rows.iter().any(|r| r.starts_with("value /generated_at noise")),
        "the timestamp is noise: {rows:#?}"
    );
    assert!(!rows.iter().any(|r| r.contains("/title") || r.contains("/status")), "{rows:#?}");
}

/// Only safe methods reached the backends, each carrying the added header
/// and marked as not a user's.
fn assert_only_safe_requests(backend: &Recorder) {
    for req in backend.requests() {
        assert!(
            ["GET", "HEAD", "OPTIONS"].contains(&req.method.as_str()),
            "{} {}",
            req.method,
            req.uri
        );
        assert!(req.uri.starts_with("/api/"), "{}", req.uri);
        assert_eq!(req.header("authorization").as_deref(), Some("Token test-account"), "{req:?}");
        assert_eq!(req.header("x-cutover-shadow").as_deref(), Some("1"));
        assert!(req.header("x-request-id").is_some_and(|id| id.starts_with("replay-")), "{req:?}");
        assert!(req.headers("x-injected").is_empty(), "{req:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_log_is_replayed_safely_and_the_planted_differences_are_reported() {
    within(60, async {
        let (legacy, new, config) = backends("{ path: \"off\" }").await;
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &config);
        let mut log = String::new();
        for request in [
            "GET /api/books/1/ HTTP/1.1",
            "GET /api/books/2/?format=json HTTP/1.1",
            "GET /api/status/ HTTP/1.1",
            "POST /api/books/ HTTP/1.1",
            "GET /api/books/3/ HTTP/2.0",
            "PUT /api/books/1/ HTTP/1.1",
            "DELETE /api/books/1/ HTTP/1.1",
            "PATCH /api/books/2/ HTTP/1.1",
            "HEAD /api/status/ HTTP/1.1",
            "OPTIONS /api/status/ HTTP/1.1",
            "GET /api/status/ HTTP/1.1",
            "GET http://evil.example/api/books/1/ HTTP/1.1",
            "GET /api/books/1/\\x0D\\x0AX-Injected:\\x201 HTTP/1.1",
            "GET /other/ HTTP/1.1",
            "GET /web/page HTTP/1.1",
            "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03",
        ] {
            log.push_str(&combined(request));
        }
        log.push_str("garbage that is no log line\n");
        log.push_str(&format!("{}\n", "x".repeat(100_000)));
        log.push_str("{\"method\": \"GET\"\n");
        let log_path = dir.path().join("access.log");
        std::fs::write(&log_path, &log).unwrap();

        let config_arg = config_path.to_str().unwrap();
        let log_arg = log_path.to_str().unwrap();
        let common_args = [
            "replay",
            "-c",
            config_arg,
            "--log",
            log_arg,
            "--header",
            "Authorization: Token test-account",
            "--rate",
            "0",
        ];
        let out = stdout(&cutover(&[&common_args[..], &["--json"]].concat()).await);
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let replay = &report["replay"];
        assert_eq!(replay["lines"], 19, "{replay:#}");
        assert_eq!(replay["replayed"], 7, "{replay:#}");
        assert_eq!(
            replay["not_replayed"],
            json!({"method": 4, "target": 2, "no_route": 1, "not_mirrored": 1}),
            "{replay:#}"
        );
        assert_eq!(replay["malformed"], 4, "{replay:#}");
        assert_eq!(
            replay["malformed_lines"][0],
            json!({"line": 16, "error": "the request is not METHOD TARGET [PROTOCOL]"})
        );
        assert_eq!(replay["limit_reached"], false);
        assert_eq!(replay["interrupted"], false);
        assert_eq!(
            report["window"],
            json!({"from": "2026-11-22T00:31:56Z", "to": "2026-11-22T00:31:56Z"})
        );

        let routes = report["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1, "only the mirrored route: {report:#}");
        let api = &routes[0];
        assert_eq!(api["backends"], json!(["legacy", "new"]));
        assert_eq!(api["outcomes"], json!({"compared": 7}), "{api:#}");
        assert_eq!(api["compared"], 7);
        // The status requests (GET twice, HEAD, OPTIONS) are clean; the books are not.
        assert_eq!(api["clean"], 4);
        assert_eq!(api["clean_share"], 0.5714);
        assert_eq!(api["noise_samples"], 7);
        assert_planted_differences(api);

        // Each replayed request once to new, twice to legacy (noise); nothing else.
        assert_eq!(new.requests().len(), 7);
        assert_eq!(legacy.requests().len(), 14);
        assert_only_safe_requests(&legacy);
        assert_only_safe_requests(&new);
        let methods: Vec<String> = new.requests().iter().map(|r| format!("{} {}", r.method, r.uri)).collect();
        assert!(methods.contains(&"GET /api/books/2/?format=json".to_string()), "{methods:?}");
        assert!(methods.contains(&"HEAD /api/status/".to_string()) && methods.contains(&"OPTIONS /api/status/".to_string()));

        // The text report is `cutover parity`'s, under what was replayed.
        let text = stdout(&cutover(&common_args).await);
        assert!(text.contains("replayed 7 requests of 19 lines of"), "{text}");
        assert!(
            text.contains("route api: legacy vs new, 7 requests compared, 57.1% clean (BELOW the bar of 99.0%"),
            "{text}"
        );
        assert!(text.contains("/author_name") && text.contains("malformed lines: 4"), "{text}");

        // And the sign-off document.
        let doc = stdout(&cutover(&[&common_args[..], &["--format", "markdown"]].concat()).await);
        for expected in [
            "# Parity sign-off",
            "| Traffic | replay of the access log ",
            "| Window | `2026-11-22T00:31:56Z` to `2026-11-22T00:31:56Z` |",
            "| Replayed | 7 requests of 19 log lines |",
            "| api | 7 | 4 | 57.1% | 99.0% | **below the bar** | 3 |",
            "## Route api: legacy vs new",
            "| shape | `/author` | 3 | ",
            "| `string` | `absent` |",
            "| shape | `/year` | 3 | ",
            "### Noise (1)",
        ] {
            assert!(doc.contains(expected), "{expected:?} not in:\n{doc}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_a_proxy_wrote_is_replayed_and_parity_writes_the_sign_off_document() {
    within(60, async {
        let (legacy, new, config) = backends("{ format: json, path: access.jsonl }").await;
        let proxy = Proxy::start(&config, "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        for (method, path) in [
            (Method::GET, "/api/books/1/"),
            (Method::POST, "/api/books/"),
            (Method::GET, "/api/books/2/"),
            (Method::GET, "/api/status/"),
            (Method::DELETE, "/api/books/2/"),
        ] {
            send_on(&client, request(method, &proxy.url(path), &[])).await;
        }
        let log_path = proxy.path("access.jsonl");
        let log = eventually(Duration::from_secs(5), Duration::from_millis(20), async || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.lines().count() >= 5 {
                Ok(text)
            } else {
                Err(format!("access log so far: {text}"))
            }
        })
        .await;
        assert!(log.lines().all(|l| l.starts_with('{')), "{log}");

        // The proxy's own mirror compared the live requests: its report as a sign-off document.
        eventually(Duration::from_secs(5), Duration::from_millis(20), async || {
            let report = get(&proxy.admin_url("/admin/parity?route=api")).await.json();
            let compared = report["routes"][0]["compared"].as_u64().unwrap_or(0);
            if compared >= 3 { Ok(()) } else { Err(format!("{report:#}")) }
        })
        .await;
        let admin = proxy.admin.to_string();
        let doc = stdout(&cutover(&["parity", "--admin", &admin, "--format", "markdown"]).await);
        for expected in [
            "# Parity sign-off",
            "| Traffic | live traffic through the proxy whose admin API is ",
            "| api | 3 | 1 | ",
            "## Route api: legacy vs new",
            "| shape | `/author_name` | 2 | ",
        ] {
            assert!(doc.contains(expected), "{expected:?} not in:\n{doc}");
        }
        let window = doc.lines().find(|l| l.starts_with("| Window |")).unwrap();
        assert!(!window.contains("unknown"), "{window}");

        legacy.clear();
        new.clear();
        let config_path = proxy.config_path.to_str().unwrap().to_string();
        let out = stdout(
            &cutover(&[
                "replay",
                "-c",
                &config_path,
                "--log",
                log_path.to_str().unwrap(),
                "--json",
                "--rate",
                "0",
                "--header",
                "Authorization: Token test-account",
            ])
            .await,
        );
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["replay"]["replayed"], 3, "{report:#}");
        assert_eq!(report["replay"]["not_replayed"]["method"], 2, "{report:#}");
        assert_eq!(report["replay"]["malformed"], 0);
        assert!(report["window"]["from"].as_str().is_some_and(|t| t.ends_with('Z')), "{report:#}");
        let api = &report["routes"][0];
        assert_eq!((api["compared"].as_u64(), api["clean"].as_u64()), (Some(3), Some(1)), "{api:#}");
        assert_planted_differences(api);
        assert_eq!(new.requests().len(), 3);
        assert_only_safe_requests(&legacy);
        assert_only_safe_requests(&new);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_rate_bound_what_is_sent() {
    within(60, async {
        let (legacy, new, config) = backends("{ path: \"off\" }").await;
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &config);
        let log: String = (0..40).map(|i| combined(&format!("GET /api/books/{i}/ HTTP/1.1"))).collect();
        let log_path = dir.path().join("access.log");
        std::fs::write(&log_path, log).unwrap();
        let (config_arg, log_arg) = (config_path.to_str().unwrap(), log_path.to_str().unwrap());

        let started = Instant::now();
        let out = stdout(
            &cutover(&[
                "replay", "-c", config_arg, "--log", log_arg, "--json", "--limit", "10", "--rate", "20",
            ])
            .await,
        );
        let elapsed = started.elapsed();
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["replay"]["replayed"], 10, "{report:#}");
        assert_eq!(report["replay"]["limit_reached"], true);
        assert_eq!(report["routes"][0]["compared"], 10);
        assert_eq!(new.requests().len(), 10, "the limit holds at the backend");
        assert_eq!(legacy.requests().len(), 20);
        // Ten requests at twenty a second: the tenth starts 450 ms after the first.
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");

        // The whole log with no limit, at most two in flight.
        new.clear();
        let out = stdout(
            &cutover(&[
                "replay",
                "-c",
                config_arg,
                "--log",
                log_arg,
                "--json",
                "--rate",
                "0",
                "--concurrency",
                "2",
            ])
            .await,
        );
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["replay"]["replayed"], 40);
        assert_eq!(report["replay"]["limit_reached"], false);
        assert_eq!(new.requests().len(), 40);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_prints_what_was_compared_so_far() {
    within(60, async {
        let legacy = Upstream::slow("legacy", Duration::from_millis(200)).await;
        let new = Upstream::slow("new", Duration::from_millis(200)).await;
        let config = format!(
            "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
             routes:\n  - name: api\n    backends: {{ legacy: {{}}, new: {{}} }}\n    mirror: {{ to: new }}\n",
            config_head("{ path: \"off\" }"),
            legacy.url(),
            new.url()
        );
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &config);
        let log: String = (0..200).map(|i| combined(&format!("GET /page/{i} HTTP/1.1"))).collect();
        let log_path = dir.path().join("access.log");
        std::fs::write(&log_path, log).unwrap();
        let child = tokio::process::Command::new(BIN)
            .args(["replay", "-c", config_path.to_str().unwrap(), "--log", log_path.to_str().unwrap()])
            .args(["--rate", "0", "--concurrency", "2"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
            if new.hits() >= 4 {
                Ok(())
            } else {
                Err(format!("{} requests so far", new.hits()))
            }
        })
        .await;
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let out = child.wait_with_output().await.unwrap();
        let text = stdout(&out);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("INTERRUPTED: the counts cover what was compared by then"), "{text}");
        let replayed: u64 = text
            .strip_prefix("replayed ")
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!((2..200).contains(&replayed), "{text}");
        assert!(text.contains("route api: legacy vs new, "), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_what_it_cannot_compare() {
    within(30, async {
        let (_legacy, _new, config) = backends("{ path: \"off\" }").await;
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &config);
        let log_path = dir.path().join("access.log");
        std::fs::write(&log_path, combined("GET /api/status/ HTTP/1.1")).unwrap();
        let (config_arg, log_arg) = (config_path.to_str().unwrap(), log_path.to_str().unwrap());
        for (args, error) in [
            (vec!["--against", "nope"], "no backend \"nope\""),
            (vec!["--against", "legacy"], "is the stable backend of route \"api\""),
            (vec!["--header", "no colon"], "expected 'NAME: VALUE'"),
            (vec!["--rate=-1"], "not a number of requests per second"),
            (
                vec!["--header", "Host: bad host"],
                "the added headers would make every request invalid",
            ),
        ] {
            let out = cutover(&[&["replay", "-c", config_arg, "--log", log_arg][..], &args].concat()).await;
            assert!(!out.status.success(), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(error), "{args:?}: {stderr}");
        }
        let missing = cutover(&["replay", "-c", config_arg, "--log", "/nonexistent/access.log"]).await;
        assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open the log /nonexistent/access.log"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_compares_the_stable_backend_with_another_one() {
    within(30, async {
        let (legacy, new, config) = backends("{ path: \"off\" }").await;
        let staging = Recorder::answering("staging", book_api(false)).await;
        let config = config.replace("backends:\n", &format!("backends:\n  staging: {{ url: \"{}\" }}\n", staging.url()));
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), &config);
        let log_path = dir.path().join("access.log");
        std::fs::write(
            &log_path,
            [combined("GET /api/books/1/ HTTP/1.1"), combined("GET /api/status/ HTTP/1.1")].concat(),
        )
        .unwrap();
        let out = stdout(
            &cutover(&[
                "replay",
                "-c",
                config_path.to_str().unwrap(),
                "--log",
                log_path.to_str().unwrap(),
                "--json",
                "--against",
                "staging",
            ])
            .await,
        );
        let report: Value = serde_json::from_str(&out).unwrap();
        let api = &report["routes"][0];
        assert_eq!(api["backends"], json!(["legacy", "staging"]));
        assert_eq!((api["compared"].as_u64(), api["clean"].as_u64()), (Some(2), Some(2)), "{api:#}");
        assert_eq!(staging.requests().len(), 2);
        assert!(new.requests().is_empty());
        assert_eq!(legacy.requests().len(), 4);
    })
    .await;
}
