//! Shadow traffic and parity: what is mirrored, that a bad shadow never
//! touches the primary, and what the comparison reports.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

fn json_response(name: &str, value: Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(full(value.to_string()))
        .unwrap()
}

fn config(legacy: &Upstream, new: &Upstream, mirror: &str) -> String {
    format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\", timeout: 30s }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n    mirror:\n{mirror}",
        config_head("{ path: \"off\" }"),
        legacy.url(),
        new.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shadow_never_slows_the_primary_or_grows_memory() {
    within(90, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::slow("new", Duration::from_secs(10)).await;
        let proxy = Proxy::start(
            &config(&legacy, &new, "      to: new\n      max_in_flight: 32\n      timeout: 10s\n"),
            "api: { legacy: 100, new: 0 }\n",
        )
        .await;
        let client = client();
        // Warm up, then measure memory around a burst.
        for _ in 0..50 {
            send_on(&client, request(Method::GET, &proxy.url("/warm"), &[])).await;
        }
        let rss_before = proxy.rss_kib();
        let mut slowest = Duration::ZERO;
        for round in 0..10 {
            let started = Instant::now();
            let batch: Vec<_> = (0..50)
                .map(|i| {
                    let client = client.clone();
                    let url = proxy.url(&format!("/items/{round}/{i}"));
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let resp = send_on(&client, request(Method::GET, &url, &[])).await;
                        assert_eq!(resp.status, StatusCode::OK);
                        assert_eq!(resp.upstream(), "legacy");
                        t.elapsed()
                    })
                })
                .collect();
            for t in batch {
                slowest = slowest.max(t.await.unwrap());
            }
            assert!(started.elapsed() < Duration::from_secs(5), "a batch waited on the shadow");
        }
        let rss_after = proxy.rss_kib();
        println!(
            "slowest primary response with a 10 s shadow: {:.1} ms; RSS {rss_before} -> {rss_after} KiB",
            slowest.as_secs_f64() * 1e3
        );
        assert!(
            slowest < Duration::from_secs(2),
            "a primary response took {slowest:?} while the shadow hung"
        );
        assert!(rss_after < rss_before + 20 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
        let metrics = proxy.metrics().await;
        let dropped = metric_value(
            &metrics,
            "cutover_mirror_requests_total",
            &[("route", "api"), ("outcome", "dropped")],
        )
        .unwrap_or(0.0);
        assert!(
            dropped >= 400.0,
            "beyond max_in_flight shadows are dropped, not queued (dropped {dropped})\n{metrics}"
        );
        let errors = metric_value(
            &metrics,
            "cutover_requests_total",
            &[("route", "api"), ("backend", "legacy"), ("code", "5xx")],
        );
        assert_eq!(errors.unwrap_or(0.0), 0.0);
    })
    .await;
}

#[tokio::test]
async fn a_dead_shadow_counts_errors_and_the_primary_serves_on() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let text = format!(
            "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"http://{}\" }}\n\
             routes:\n  - name: api\n    backends: {{ legacy: {{}}, new: {{}} }}\n    mirror: {{ to: new }}\n",
            config_head("{ path: \"off\" }"),
            legacy.url(),
            dead_addr()
        );
        let proxy = Proxy::start(&text, "api: { legacy: 100, new: 0 }\n").await;
        for i in 0..20 {
            let resp = get(&proxy.url(&format!("/x/{i}"))).await;
            assert_eq!(resp.status, StatusCode::OK);
        }
        let report = wait_outcomes(&proxy, 20).await;
        assert_eq!(report["outcomes"]["error"], 20, "{report:#}");
        assert_eq!(report["compared"], 0);
    })
    .await;
}

/// A recording backend answering every request alike.
async fn recording(name: &'static str) -> Recorder {
    Recorder::answering(name, move |_, _| json_response(name, json!({"ok": true}))).await
}

/// What a recording backend saw: method, `X-Cutover-Shadow`, body.
fn seen_by(backend: &Recorder) -> Vec<(String, Option<String>, String)> {
    backend
        .requests()
        .into_iter()
        .map(|r| (r.method.clone(), r.header("x-cutover-shadow"), r.body_text()))
        .collect()
}

#[tokio::test]
async fn mutating_requests_are_mirrored_only_with_the_opt_in() {
    within(30, async {
        let legacy = recording("legacy").await;
        let new = recording("new").await;
        let (legacy_up, new_up) = (&legacy.upstream, &new.upstream);

        // Default methods: GET, HEAD, OPTIONS. A POST writes once.
        let proxy = Proxy::start(&config(legacy_up, new_up, "      to: new\n"), "api: { legacy: 100, new: 0 }\n").await;
        for i in 0..5 {
            let req = Request::post(proxy.url("/orders/")).body(full(format!("{{\"n\":{i}}}"))).unwrap();
            assert_eq!(send(req).await.status, StatusCode::OK);
        }
        send(request(Method::GET, &proxy.url("/orders/"), &[])).await;
        wait_outcomes(&proxy, 1).await;
        let writes_on_new = seen_by(&new).iter().filter(|(m, _, _)| m == "POST").count();
        assert_eq!(writes_on_new, 0, "a POST was mirrored without the opt-in");
        assert_eq!(
            seen_by(&new)
                .iter()
                .filter(|(m, s, _)| m == "GET" && s.as_deref() == Some("1"))
                .count(),
            1
        );
        drop(proxy);

        // A config that lists POST without the opt-in is refused, with the reason.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cutover.yaml");
        std::fs::write(&path, config(legacy_up, new_up, "      to: new\n      methods: [GET, POST]\n")).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), "").unwrap();
        let (ok, _, stderr) = check(&path);
        assert!(!ok);
        assert!(stderr.contains("mirroring POST writes twice"), "{stderr}");

        // With the opt-in, the body is teed to the shadow as it streams.
        new.clear();
        let proxy = Proxy::start(
            &config(
                legacy_up,
                new_up,
                "      to: new\n      methods: [POST]\n      allow_mutating: true\n      max_body_bytes: 1000\n",
            ),
            "api: { legacy: 100, new: 0 }\n",
        )
        .await;
        let body = "x".repeat(900);
        let resp = send(Request::post(proxy.url("/orders/")).body(frames(body.clone(), 100)).unwrap()).await;
        assert_eq!(resp.status, StatusCode::OK);
        // Larger than max_body_bytes: served, not mirrored, counted as skipped.
        let big = "y".repeat(5000);
        let resp = send(Request::post(proxy.url("/orders/")).body(full(big.clone())).unwrap()).await;
        assert_eq!(resp.status, StatusCode::OK);
        let report = wait_outcomes(&proxy, 2).await;
        assert_eq!(report["outcomes"]["compared"], 1, "{report:#}");
        assert_eq!(report["outcomes"]["skipped"], 1, "{report:#}");
        let seen = seen_by(&new);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0], ("POST".to_string(), Some("1".to_string()), body.clone()));
        assert!(
            seen_by(&legacy).iter().any(|(_, _, b)| *b == big),
            "the primary got the big body whole"
        );
    })
    .await;
}

/// The planted differences: legacy is Django REST Framework style, new is Flask style.
async fn planted_pair() -> (Upstream, Upstream) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c1 = calls.clone();
    let legacy = Upstream::with("legacy", move |req: Request<hyper::body::Incoming>| {
        let n = c1.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = match req.uri().path() {
                "/products/" => json!({
                    "count": 2, "next": "http://legacy.internal:8000/products/?page=2", "previous": null,
                    "results": [
                        {"id": 1, "name": "tea", "price": "10.50", "sku": "T-1", "updated_at": format!("2026-11-22T10:00:{:02}.{n}Z", n % 60)},
                        {"id": 2, "name": "coffee", "price": "7.25", "sku": "C-2", "updated_at": format!("2026-11-22T10:01:{:02}.{n}Z", n % 60)}
                    ]
                }),
                "/health/" => json!({"status": "ok", "version": 3}),
                _ => json!({"detail": "Not found."}),
            };
            json_response("legacy", body)
        }
    })
    .await;
    let c2 = calls.clone();
    let new = Upstream::with("new", move |req: Request<hyper::body::Incoming>| {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = match req.uri().path() {
                "/products/" => json!([
                    {"id": "1", "title": "tea", "price": 10.5, "sku": "T-1", "updated_at": format!("2026-11-22T11:00:{:02}.{n}Z", n % 60)},
                    {"id": "2", "title": "coffee", "price": 7.25, "sku": "C-9", "updated_at": format!("2026-11-22T11:01:{:02}.{n}Z", n % 60)}
                ]),
                "/health/" => json!({"status": "ok", "version": 3}),
                _ => json!({"detail": "Not found."}),
            };
            json_response("new", body)
        }
    })
    .await;
    (legacy, new)
}

fn path_entry<'a>(report: &'a Value, kind: &str, path: &str) -> Option<&'a Value> {
    report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind && p["path"] == path)
}

#[tokio::test]
async fn an_endpoints_first_requests_learn_its_noise_so_a_timestamp_never_counts_as_a_difference() {
    within(60, async {
        let stamped = |name: &'static str| {
            Upstream::with(name, move |_req| async move {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                json_response(name, json!({"id": 1, "at": at.to_string()}))
            })
        };
        let (legacy, new) = (stamped("legacy").await, stamped("new").await);
        // Sampling alone would ask legacy twice about one request in a thousand.
        let mirror = "      to: new\n      compare: { mode: values, noise: { sample: 0.001 } }\n";
        let proxy = Proxy::start(&config(&legacy, &new, mirror), "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        for path in ["/orders/", "/invoices/"] {
            for _ in 0..8 {
                send_on(&client, request(Method::GET, &proxy.url(path), &[])).await;
            }
        }
        let report = wait_outcomes(&proxy, 16).await;
        assert_eq!(report["clean"], 16, "every stamp is noise from the first request on: {report:#}");
        assert!(report["noise_samples"].as_u64().unwrap() >= 10, "five per endpoint: {report:#}");
        assert_eq!(path_entry(&report, "value", "/at").unwrap()["verdict"], "noise");
    })
    .await;
}

#[tokio::test]
async fn the_report_names_planted_differences_noise_and_clean_endpoints() {
    within(60, async {
        let (legacy, new) = planted_pair().await;
        let mirror = "      to: new\n      compare:\n        mode: values\n        unwrap: { legacy: /results }\n        noise: { sample: 0.5 }\n\
                      \x20       accept:\n          - { path: \"/*/id\", kind: shape, reason: \"ids are strings in v2\", until: 2099-01-01 }\n\
                      \x20         - { path: \"/*/sku\", kind: value, reason: \"expired exception\", until: 2020-01-01 }\n      min_clean_share: 0.9\n";
        let proxy = Proxy::start(&config(&legacy, &new, mirror), "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        for _ in 0..60 {
            send_on(&client, request(Method::GET, &proxy.url("/products/"), &[])).await;
        }
        let report = wait_outcomes(&proxy, 60).await;
        assert_eq!(report["compared"], 60, "{report:#}");
        let verdict = |kind: &str, path: &str| path_entry(&report, kind, path).map(|p| p["verdict"].as_str().unwrap().to_string());
        // The renamed key, both ways.
        assert_eq!(verdict("shape", "/*/name").as_deref(), Some("differs"), "{report:#}");
        assert_eq!(verdict("shape", "/*/title").as_deref(), Some("differs"));
        // The changed type, accepted until a date in the future.
        assert_eq!(verdict("shape", "/*/id").as_deref(), Some("accepted"));
        // A value that differs on one item, under an expired acceptance: it counts again.
        assert_eq!(verdict("value", "/*/sku").as_deref(), Some("differs"));
        // Timestamps differ on every call of the same backend too: noise.
        assert_eq!(verdict("value", "/*/updated_at").as_deref(), Some("noise"), "{report:#}");
        // Normalised away: decimals as strings, the backend's own host in `next`,
        // and the pagination envelope.
        for path in ["/*/price", "/next", "/count", "/results"] {
            assert!(path_entry(&report, "shape", path).is_none() && path_entry(&report, "value", path).is_none(), "{path}: {report:#}");
        }
        assert_eq!(report["clean"], 0);

        // An identical endpoint is clean.
        for _ in 0..10 {
            send_on(&client, request(Method::GET, &proxy.url("/health/"), &[])).await;
        }
        let report = wait_outcomes(&proxy, 70).await;
        assert_eq!(report["clean"], 10, "{report:#}");

        // Parity gates the shift: below 90% clean it is refused, unless forced.
        let shift = |force: bool| {
            let url = format!("http://{}/admin/weights/api{}", proxy.admin, if force { "?force=true" } else { "" });
            send(Request::put(url).header("content-type", "application/json").body(full(r#"{"new": 10}"#)).unwrap())
        };
        let refused = shift(false).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
        assert!(refused.text().contains("below the bar of 90.00%"), "{}", refused.text());
        assert_eq!(shift(true).await.status, StatusCode::OK);

        // The CLI report names the same paths.
        let out = std::process::Command::new(BIN).args(["parity", "api", "--admin", &proxy.admin.to_string()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("route api: legacy vs new, 70 requests compared"), "{text}");
        assert!(text.contains("/*/title") && text.contains("accepted: ids are strings in v2"), "{text}");

        let metrics = proxy.metrics().await;
        assert_eq!(metric_value(&metrics, "cutover_mirror_requests_total", &[("route", "api"), ("outcome", "compared")]), Some(70.0));
        assert_eq!(metric_value(&metrics, "cutover_parity_mismatches_total", &[("route", "api"), ("kind", "shape")]), Some(60.0));
    })
    .await;
}

#[tokio::test]
async fn secrets_never_appear_in_samples() {
    within(30, async {
        let legacy = Upstream::with("legacy", |_req| async {
            json_response("legacy", json!({"api_token": "legacy-secret-1", "email": "a@x", "n": 1}))
        })
        .await;
        let new = Upstream::with("new", |_req| async {
            json_response("new", json!({"api_token": "new-secret-2", "email": "b@x", "n": 2}))
        })
        .await;
        let mirror = "      to: new\n      compare: { mode: values, noise: { sample: 0 }, redact: [email] }\n";
        let proxy = Proxy::start(&config(&legacy, &new, mirror), "api: { legacy: 100, new: 0 }\n").await;
        send(request(Method::GET, &proxy.url("/me"), &[("authorization", "Bearer hunter2")])).await;
        let report = wait_outcomes(&proxy, 1).await;
        let text = report.to_string();
        for secret in ["legacy-secret-1", "new-secret-2", "a@x", "b@x", "hunter2"] {
            assert!(!text.contains(secret), "{secret} leaked: {report:#}");
        }
        assert!(text.contains("[redacted]"));
        assert_eq!(path_entry(&report, "value", "/n").unwrap()["verdict"], "differs");
    })
    .await;
}

/// Two backends that differ at `/id` in every answer, mirrored, with `parity_log`.
async fn logging_parity(parity_log: &str) -> (Proxy, Upstream, Upstream) {
    let legacy = Upstream::with("legacy", |_req| async {
        json_response("legacy", json!({"id": 1, "name": "x".repeat(300)}))
    })
    .await;
    let new = Upstream::with("new", |_req| async {
        json_response("new", json!({"id": "1", "name": "x".repeat(300)}))
    })
    .await;
    let text = config(&legacy, &new, "      to: new\n").replace("backends:\n", &format!("parity_log: {parity_log}\nbackends:\n"));
    let proxy = Proxy::start(&text, "api: { legacy: 100, new: 0 }\n").await;
    (proxy, legacy, new)
}

#[tokio::test]
async fn samples_go_to_a_rotated_parity_log() {
    within(60, async {
        let (proxy, _legacy, _new) = logging_parity("{ path: parity.jsonl, max_bytes: 4096 }").await;
        let client = client();
        for i in 0..40 {
            send_on(&client, request(Method::GET, &proxy.url(&format!("/item/{i}")), &[])).await;
        }
        wait_outcomes(&proxy, 40).await;
        let current = std::fs::read_to_string(proxy.path("parity.jsonl")).unwrap();
        let rotated = std::fs::read_to_string(proxy.path("parity.jsonl.1")).expect("rotated past max_bytes");
        assert!(current.len() <= 4096 && rotated.len() <= 4096);
        for file in ["parity.jsonl", "parity.jsonl.1"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(proxy.path(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} is readable by its owner only");
        }
        let lines: Vec<Value> = rotated
            .lines()
            .chain(current.lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() >= 5, "{} lines", lines.len());
        let last = lines.last().unwrap();
        assert_eq!(last["route"], "api");
        assert_eq!(last["sample"]["differences"][0]["path"], "/id");
        assert_eq!(last["sample"]["path"], "/item/39");
    })
    .await;
}

#[tokio::test]
async fn a_parity_log_moved_away_by_logrotate_is_opened_again_on_sigusr1() {
    within(60, async {
        let (proxy, _legacy, _new) = logging_parity("{ path: parity.jsonl }").await;
        let client = client();
        let (log, moved) = (proxy.path("parity.jsonl"), proxy.path("parity.jsonl.1"));
        send_on(&client, request(Method::GET, &proxy.url("/item/before"), &[])).await;
        wait_outcomes(&proxy, 1).await;
        std::fs::rename(&log, &moved).unwrap();
        proxy.signal("USR1");
        // The signal is handled on its own: wait until it was.
        proxy.wait_stderr(Duration::from_secs(5), |e| e.contains("SIGUSR1")).await;
        send_on(&client, request(Method::GET, &proxy.url("/item/after"), &[])).await;
        wait_outcomes(&proxy, 2).await;
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&log).expect("a new parity.jsonl");
        assert!(old.contains("/item/before") && !old.contains("/item/after"), "{old}");
        assert!(new.contains("/item/after") && !new.contains("/item/before"), "{new}");
    })
    .await;
}

/// A JSON object of `keys` members named `{prefix}0`, `{prefix}1`, …
fn wide_object(prefix: &str, keys: usize) -> bytes::Bytes {
    let members: Vec<String> = (0..keys).map(|i| format!("\"{prefix}{i}\":0")).collect();
    format!("{{{}}}", members.join(",")).into()
}

/// Legacy and new answer `/wide` with 60,000-key objects that share no key,
/// and everything else with the same small document.
async fn wide_pair() -> (Upstream, Upstream) {
    let serve = |name: &'static str, prefix: &'static str| {
        let wide = wide_object(prefix, 60_000);
        Upstream::with(name, move |req: Request<hyper::body::Incoming>| {
            let body = if req.uri().path() == "/wide" {
                wide.clone()
            } else {
                bytes::Bytes::from_static(br#"{"ok":true}"#)
            };
            async move {
                Response::builder()
                    .header("content-type", "application/json")
                    .header("x-upstream", name)
                    .body(full(body))
                    .unwrap()
            }
        })
    };
    (serve("legacy", "legacy_").await, serve("new", "new_").await)
}

/// A behaviour bound, not a performance measurement: a comparison with
/// 120,000 differing paths once held a serving thread for seconds (and then
/// panicked); small requests must keep being answered while four run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_differing_everywhere_neither_panics_nor_stalls_other_requests() {
    within(120, async {
        let (legacy, new) = wide_pair().await;
        // A debug build compares each wide pair for about a second, one at a
        // time on a small machine: the last one waits its turn for seconds.
        let mirror = "      to: new\n      timeout: 30s\n      compare: { noise: { sample: 0 } }\n";
        let proxy = Proxy::start(&config(&legacy, &new, mirror), "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        let wide: Vec<_> = (0..4)
            .map(|_| {
                let (client, url) = (client.clone(), proxy.url("/wide"));
                tokio::spawn(async move { send_on(&client, request(Method::GET, &url, &[])).await.status })
            })
            .collect();
        for status in wide {
            assert_eq!(status.await.unwrap(), StatusCode::OK);
        }
        // The comparisons start once both wide answers are in: now. Each
        // small request gets a connection of its own, so they land on every
        // serving thread.
        let small: Vec<_> = (0..20u64)
            .map(|i| {
                let url = proxy.url(&format!("/small/{i}"));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200 * i)).await;
                    let started = Instant::now();
                    let resp = send(request(Method::GET, &url, &[])).await;
                    assert_eq!(resp.status, StatusCode::OK);
                    started.elapsed()
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for elapsed in small {
            slowest = slowest.max(elapsed.await.unwrap());
        }
        println!("slowest small request beside four wide comparisons: {slowest:?}");
        assert!(
            slowest < Duration::from_secs(1),
            "a small request waited {slowest:?} behind the comparisons"
        );

        let report = wait_outcomes(&proxy, 24).await;
        assert_eq!(report["outcomes"]["compared"], 24, "{report:#}");
        assert_eq!(report["clean"], 20, "the small pairs are identical: {report:#}");
        let more = path_entry(&report, "shape", "(more)").unwrap_or_else(|| panic!("no (more) row: {report:#}"));
        assert_eq!(more["count"], 4, "{more:#}");
        let sample = &report["samples"][0];
        let listed = sample["differences"].as_array().unwrap();
        assert!(listed.len() <= 101, "{} differences in one sample", listed.len());
        assert!(!proxy.stderr_text().contains("panicked"), "{}", proxy.stderr_text());
        // And the proxy serves on.
        assert_eq!(get(&proxy.url("/small/after")).await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn secrets_anywhere_in_a_path_or_shaped_like_credentials_stay_hidden() {
    use std::os::unix::fs::PermissionsExt;
    within(30, async {
        const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWFsaWNl";
        let document = |side: &str| {
            json!({
                "user": {"password_hash": {"value": format!("pbkdf2_sha256$600000${side}-hash")}},
                "note": if side == "legacy" { JWT.to_string() } else { format!("{side}-plain-note") },
                "tokens": [format!("{side}-token-1")],
                "secrets": {"stripe": format!("{side}-stripe")},
                "api-key": format!("{side}-api-key"),
                "session": {"key": format!("{side}-session-key")},
                "private_key": format!("{side}-private-key"),
                "card_number": format!("{side}-card-number"),
                "otp": format!("{side}-otp"),
                "n": if side == "legacy" { 1 } else { 2 },
            })
        };
        let legacy = Upstream::with("legacy", move |_req| async move { json_response("legacy", document("legacy")) }).await;
        let new = Upstream::with("new", move |_req| async move { json_response("new", document("new")) }).await;
        let text = config(
            &legacy,
            &new,
            "      to: new\n      compare: { mode: values, noise: { sample: 0 } }\n",
        )
        .replace("backends:\n", "parity_log: { path: parity.jsonl }\nbackends:\n");
        let proxy = Proxy::start(&text, "api: { legacy: 100, new: 0 }\n").await;
        // A log left readable by everyone is made private when it is opened.
        let log = proxy.path("parity.jsonl");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();

        send(request(Method::GET, &proxy.url("/account"), &[])).await;
        let report = wait_outcomes(&proxy, 1).await;
        assert_eq!(path_entry(&report, "value", "/n").unwrap()["verdict"], "differs", "{report:#}");
        assert_eq!(
            path_entry(&report, "value", "/user/password_hash/value").unwrap()["left"],
            "[redacted]"
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("/user/password_hash/value"), "{logged}");
        let secrets = [
            "pbkdf2",
            "eyJhbGci",
            "token-1",
            "-stripe",
            "-api-key",
            "-session-key",
            "-private-key",
            "-card-number",
            "-otp",
        ];
        for (place, text) in [("/admin/parity", report.to_string()), ("parity.jsonl", logged)] {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} shown in {place}: {text}");
            }
        }
        // Not a secret, and its other side is no credential: kept.
        assert_eq!(path_entry(&report, "value", "/note").unwrap()["right"], "\"new-plain-note\"");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the parity log's mode");
    })
    .await;
}

/// Gzipping for the client happens after the comparison's copy is taken:
/// two backends answering alike stay alike, and the client can read its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_gzipped_for_the_client_are_compared_as_the_backends_sent_them() {
    within(30, async {
        let json = |name: &'static str| {
            Upstream::with(name, |_req| async {
                let items: Vec<String> = (0..100).map(|i| format!("{{\"id\": {i}, \"title\": \"book {i}\"}}")).collect();
                Response::builder()
                    .header("content-type", "application/json")
                    .body(full(format!("[{}]", items.join(","))))
                    .unwrap()
            })
        };
        let (legacy, new) = (json("legacy").await, json("new").await);
        let text = config(&legacy, &new, "      to: new\n      compare: { noise: { sample: 0 } }\n").replacen(
            "backends:",
            "compression: { gzip: true }\nbackends:",
            1,
        );
        let proxy = Proxy::start(&text, "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        for i in 0..5 {
            let resp = send_on(
                &client,
                request(Method::GET, &proxy.url(&format!("/books/{i}")), &[("accept-encoding", "gzip")]),
            )
            .await;
            assert_eq!((resp.status, resp.header("content-encoding")), (StatusCode::OK, Some("gzip")));
            let mut body = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&resp.body[..]), &mut body).unwrap();
            assert!(body.starts_with("[{\"id\": 0"), "{body}");
        }
        let compared = [("route", "api"), ("outcome", "compared")];
        proxy.wait_metric("cutover_mirror_requests_total", &compared, 5.0).await;
        let metrics = proxy.metrics().await;
        assert!(!metrics.contains("cutover_parity_mismatches_total{"), "{metrics}");
    })
    .await;
}
