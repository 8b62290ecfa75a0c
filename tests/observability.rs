//! Metrics (names, labels, promtool-valid exposition) and the access log
//! (nginx `combined`, byte for byte, and JSON lines).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two routes over two echo upstreams plus a dead backend, with `access_log`.
async fn observed_proxy(access_log: &str) -> (Proxy, Upstream, Upstream) {
    let legacy = Upstream::echo("legacy").await;
    let new = Upstream::echo("new").await;
    let config = format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n  dead: {{ url: \"http://{}\" }}\n\
         routes:\n\
         \x20 - name: api\n    match: {{ path_prefix: /api/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20   force_header: X-Cutover-Backend\n\
         \x20 - name: broken\n    match: {{ path_prefix: /broken/ }}\n    backends: {{ dead: {{}} }}\n",
        config_head(access_log),
        legacy.url(),
        new.url(),
        dead_addr()
    );
    let proxy = Proxy::start(&config, "api: { legacy: 75.5, new: 24.5 }\n").await;
    (proxy, legacy, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_carry_the_contract_names_and_labels() {
    within(60, async {
        let (proxy, _legacy, _new) = observed_proxy("{ path: off }").await;
        let c = client();
        for i in 0..20 {
            let backend = if i % 4 == 0 { "new" } else { "legacy" };
            let resp = send_on(
                &c,
                request(Method::GET, &proxy.url(&format!("/api/{i}")), &[("x-cutover-backend", backend)]),
            )
            .await;
            assert_eq!(resp.upstream(), backend);
        }
        assert_eq!(get(&proxy.url("/nowhere")).await.status, 404);
        assert_eq!(get(&proxy.url("/broken/x")).await.status, 502);

        drop(c);
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 0.0)
            .await;
        proxy
            .wait_metric(
                "cutover_requests_total",
                &[("route", "api"), ("backend", "legacy"), ("code", "2xx")],
                15.0,
            )
            .await;
        proxy
            .wait_metric(
                "cutover_requests_total",
                &[("route", "broken"), ("backend", "dead"), ("code", "error")],
                1.0,
            )
            .await;
        let text = proxy.metrics().await;

        promtool_check(&text);

        // Types of the contract's metric families.
        let types: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let contract: &[(&str, &str, &[&str])] = &[
            ("cutover_requests_total", "counter", &["route", "backend", "code"]),
            ("cutover_request_duration_seconds", "histogram", &["route", "backend"]),
            ("cutover_upstream_errors_total", "counter", &["route", "backend", "kind"]),
            ("cutover_backend_weight_percent", "gauge", &["route", "backend"]),
            ("cutover_active_connections", "gauge", &["listener"]),
            ("cutover_config_version_info", "gauge", &["version"]),
            ("cutover_config_reloads_total", "counter", &["result"]),
        ];
        let samples = parse_metrics(&text);
        for (name, kind, labels) in contract {
            assert_eq!(types.get(name), Some(kind), "# TYPE of {name}");
            let want: BTreeSet<&str> = labels.iter().copied().collect();
            let family: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    s.name == *name
                        || (*kind == "histogram"
                            && s.name
                                .strip_prefix(name)
                                .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest)))
                })
                .collect();
            assert!(!family.is_empty(), "no samples of {name}");
            for s in family {
                let mut got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
                if s.name.ends_with("_bucket") {
                    assert!(got.remove("le"), "{s:?} has no le");
                }
                assert_eq!(got, want, "labels of {s:?}");
            }
        }

        let v = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
        assert_eq!(
            v("cutover_requests_total", &[("route", "api"), ("backend", "new"), ("code", "2xx")]),
            Some(5.0)
        );
        assert_eq!(
            v("cutover_request_duration_seconds_count", &[("route", "api"), ("backend", "legacy")]),
            Some(15.0)
        );
        assert_eq!(
            v(
                "cutover_request_duration_seconds_bucket",
                &[("route", "api"), ("backend", "new"), ("le", "+Inf")]
            ),
            Some(5.0)
        );
        assert_eq!(v("cutover_requests_total", &[("code", "4xx")]), Some(1.0), "the unmatched request");
        let connect_errors = v(
            "cutover_upstream_errors_total",
            &[("route", "broken"), ("backend", "dead"), ("kind", "connect")],
        );
        assert!(matches!(connect_errors, Some(n) if n >= 1.0), "connect errors {connect_errors:?}");
        assert_eq!(
            v("cutover_backend_weight_percent", &[("route", "api"), ("backend", "legacy")]),
            Some(75.5)
        );
        assert_eq!(
            v("cutover_backend_weight_percent", &[("route", "api"), ("backend", "new")]),
            Some(24.5)
        );
        let versions: Vec<&Sample> = samples.iter().filter(|s| s.name == "cutover_config_version_info").collect();
        assert_eq!(versions.len(), 1, "exactly one live version");
        assert_eq!(versions[0].value, 1.0);
        assert!(!versions[0].labels["version"].is_empty());

        // An open client connection shows in cutover_active_connections.
        let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"GET /api/held HTTP/1.1\r\nHost: a\r\nX-Cutover-Backend: new\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 1.0)
            .await;
        drop(conn);
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 0.0)
            .await;

        // Health endpoints on the admin listener.
        let admin = proxy.admin;
        assert_eq!(get(&format!("http://{admin}/healthz")).await.status, 200);
        assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);
        let resp = get(&format!("http://{admin}/metrics")).await;
        assert!(resp.header("content-type").unwrap().starts_with("text/plain"), "{:?}", resp.headers);
    })
    .await;
}

/// nginx's `$time_local` for `t`, via the `time` crate's own formatter
/// (independent of the proxy's hand-written one).
fn time_local(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    t.format(&format).unwrap()
}

/// Splits a combined line into (time, the line with the time replaced by
/// `TIME`), checking the time is well-formed and within the last minute.
fn strip_time(line: &str) -> (String, String) {
    let re =
        regex::Regex::new(r"\[(\d{2}/(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d{2}:\d{2}:\d{2} ([+-])(\d{2})(\d{2}))\]")
            .unwrap();
    let caps = re.captures(line).unwrap_or_else(|| panic!("no [$time_local] in {line:?}"));
    let logged = caps[1].to_string();
    let sign: i8 = if &caps[2] == "-" { -1 } else { 1 };
    let offset = time::UtcOffset::from_hms(sign * caps[3].parse::<i8>().unwrap(), sign * caps[4].parse::<i8>().unwrap(), 0).unwrap();
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    let recent = (0..60).any(|s| time_local(now - time::Duration::seconds(s)) == logged);
    assert!(recent, "logged time {logged} is not within the last minute");
    (logged, re.replace(line, "[TIME]").into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_access_log_matches_nginx_byte_for_byte() {
    within(30, async {
        let (proxy, _legacy, _new) = observed_proxy("{ format: combined, path: stdout }").await;
        // (raw request, expected line with the time as [TIME] and the body length as {len})
        let cases = [
            (
                "GET /api/users/?page=2&q=a%20b HTTP/1.1\r\nHost: example.test\r\n\
                 User-Agent: Mozilla/5.0 \"quoted\" \\slash\r\n\
                 Referer: http://ref.example/page?x=1\r\n\
                 Authorization: Basic YWRhOnNlY3JldA==\r\n\
                 X-Cutover-Backend: legacy\r\nConnection: close\r\n\r\n",
                "127.0.0.1 - ada [TIME] \"GET /api/users/?page=2&q=a%20b HTTP/1.1\" 200 {len} \
                 \"http://ref.example/page?x=1\" \"Mozilla/5.0 \\x22quoted\\x22 \\x5Cslash\"",
            ),
            (
                "GET /nowhere HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
                "127.0.0.1 - - [TIME] \"GET /nowhere HTTP/1.1\" 404 {len} \"-\" \"-\"",
            ),
            (
                "POST /api/form HTTP/1.0\r\nContent-Length: 3\r\nUser-Agent: curl/8.5.0\r\n\
                 X-Cutover-Backend: new\r\n\r\na=1",
                "127.0.0.1 - - [TIME] \"POST /api/form HTTP/1.0\" 200 {len} \"-\" \"curl/8.5.0\"",
            ),
            (
                "GET /broken/x HTTP/1.1\r\nHost: example.test\r\nUser-Agent: caf\u{e9}\r\n\
                 Connection: close\r\n\r\n",
                "127.0.0.1 - - [TIME] \"GET /broken/x HTTP/1.1\" 502 {len} \"-\" \"caf\\xC3\\xA9\"",
            ),
        ];
        for (raw, want) in cases {
            let resp = raw_exchange(proxy.addr(), raw.as_bytes()).await;
            let (code, _, body) = parse_raw_response(&resp);
            assert!(code == 200 || code == 404 || code == 502, "{resp}");
            let want = want.replace("{len}", &body.len().to_string());
            let path = raw.split(' ').nth(1).unwrap();
            let line = proxy.wait_stdout(|l| l.contains(&format!(" {path} "))).await;
            let (_, line) = strip_time(&line);
            assert_eq!(line, want, "access log line for {path}");
        }
        // One line per request, nothing else on stdout.
        assert_eq!(proxy.stdout_lines().len(), 4, "{:#?}", proxy.stdout_lines());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_object_per_request_with_route_and_backend() {
    within(30, async {
        let (proxy, _legacy, _new) = observed_proxy("{ format: json, path: access.log }").await;
        let c = client();
        let requests: &[(&str, Headers, u16)] = &[
            ("/api/a?x=1", &[("x-cutover-backend", "new"), ("user-agent", "t/1")], 200),
            ("/api/b", &[("x-cutover-backend", "legacy"), ("x-request-id", "rid-7")], 200),
            ("/nowhere", &[], 404),
            ("/broken/y", &[], 502),
        ];
        for (path, headers, status) in requests {
            let resp = send_on(&c, request(Method::GET, &proxy.url(path), headers)).await;
            assert_eq!(resp.status, StatusCode::from_u16(*status).unwrap());
        }
        let file = proxy.path("access.log");
        let lines = eventually(Duration::from_secs(5), Duration::from_millis(20), async || {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= requests.len() {
                Ok(lines)
            } else {
                Err(format!("{} of {} access log lines: {lines:#?}", lines.len(), requests.len()))
            }
        })
        .await;
        assert_eq!(lines.len(), requests.len(), "{lines:#?}");
        let objects: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let by_uri = |uri: &str| {
            objects
                .iter()
                .find(|o| o["uri"] == uri)
                .unwrap_or_else(|| panic!("no entry for {uri}: {objects:#?}"))
        };
        let a = by_uri("/api/a?x=1");
        assert_eq!(a["route"], "api");
        assert_eq!(a["backend"], "new");
        assert_eq!(a["status"], 200);
        assert_eq!(a["upstream_status"], 200);
        assert_eq!(a["method"], "GET");
        assert_eq!(a["user_agent"], "t/1");
        assert_eq!(a["remote_addr"], "127.0.0.1");
        assert!(a["body_bytes_sent"].as_u64().unwrap() > 0);
        assert!(a["duration_ms"].as_f64().is_some());
        assert!(a["time"].as_str().is_some_and(|t| t.len() >= 20));
        let b = by_uri("/api/b");
        assert_eq!((&b["route"], &b["backend"]), (&"api".into(), &"legacy".into()));
        assert_eq!(b["request_id"], "rid-7");
        let unmatched = by_uri("/nowhere");
        assert_eq!(unmatched["status"], 404);
        assert!(unmatched["route"].is_null() && unmatched["backend"].is_null());
        let broken = by_uri("/broken/y");
        assert_eq!((&broken["route"], &broken["backend"]), (&"broken".into(), &"dead".into()));
        assert_eq!(broken["status"], 502);
        assert!(broken["upstream_status"].is_null());
        // Logging to a file leaves stdout empty.
        assert!(proxy.stdout_lines().is_empty(), "{:#?}", proxy.stdout_lines());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_whose_fault_a_failure_was() {
    within(60, async {
        // A backend that promises 100 bytes of body, sends 5 and closes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let short = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if read_head(&mut stream).await.is_some() {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").await;
                    }
                });
            }
        });
        let ok = Upstream::echo("ok").await;
        let config = format!(
            "{}server: {{ max_body_bytes: 10 }}\nbackends:\n  short: {{ url: \"http://{short}\" }}\n  ok: {{ url: \"{}\" }}\n\
             routes:\n  - name: short\n    match: {{ path_prefix: /short/ }}\n    backends: {{ short: {{}} }}\n  \
             - name: ok\n    backends: {{ ok: {{}} }}\n",
            config_head("{ path: off }"),
            ok.url()
        );
        let proxy = Proxy::start(&config, "").await;
        let ask = |path: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };

        // The backend cut its body short: a failed exchange, the backend's.
        let reply = raw_exchange(proxy.addr(), ask("/short/x", "").as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        proxy
            .wait_metric(
                "cutover_requests_total",
                &[("route", "short"), ("backend", "short"), ("code", "error")],
                1.0,
            )
            .await;
        // The client's body is over the limit: its fault, counted as the 413 it got.
        let reply = raw_exchange(proxy.addr(), ask("/x", "more than ten bytes").as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
        proxy
            .wait_metric(
                "cutover_requests_total",
                &[("route", "ok"), ("backend", "ok"), ("code", "4xx")],
                1.0,
            )
            .await;
        let text = proxy.metrics().await;
        for (route, code) in [("short", "2xx"), ("ok", "error")] {
            assert_eq!(
                metric_value(&text, "cutover_requests_total", &[("route", route), ("code", code)]),
                Some(0.0),
                "{route} {code}\n{text}"
            );
        }
        assert_eq!(
            metric_value(&text, "cutover_upstream_errors_total", &[("route", "short"), ("kind", "body")]),
            Some(1.0)
        );
        assert_eq!(metric_value(&text, "cutover_upstream_errors_total", &[("route", "ok")]), None);
    })
    .await;
}

/// The lines of a log file so far (none when it does not exist).
fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_moved_away_by_logrotate_is_opened_again_on_sigusr1_and_no_line_is_lost() {
    within(30, async {
        let (proxy, _legacy, _new) = observed_proxy("{ format: combined, path: access.log }").await;
        let (log, moved) = (proxy.path("access.log"), proxy.path("access.log.1"));
        let c = client();
        let get = async |path: &str| send_on(&c, request(Method::GET, &proxy.url(path), &[])).await;
        let has = async |file: &std::path::Path, uri: &str| {
            eventually(Duration::from_secs(5), Duration::from_millis(20), async || {
                let lines = log_lines(file);
                match lines.iter().any(|l| l.contains(uri)) {
                    true => Ok(()),
                    false => Err(format!("{uri} not in {}: {lines:#?}", file.display())),
                }
            })
            .await
        };
        get("/api/before").await;
        has(&log, "/api/before").await;
        // logrotate moves the file; until told, cutover writes on to it.
        std::fs::rename(&log, &moved).unwrap();
        get("/api/moved").await;
        has(&moved, "/api/moved").await;
        proxy.signal("USR1");
        // A request sent as the signal lands goes to one file or the other.
        let mut sent = 2;
        eventually(Duration::from_secs(5), Duration::from_millis(50), async || {
            sent += 1;
            get(&format!("/api/after/{sent}")).await;
            match log_lines(&log).is_empty() {
                false => Ok(()),
                true => Err("nothing written to a new access.log".to_string()),
            }
        })
        .await;
        has(&log, &format!("/api/after/{sent}")).await;
        let (old, new) = (log_lines(&moved), log_lines(&log));
        assert!(old.iter().any(|l| l.contains("/api/before")) && old.iter().any(|l| l.contains("/api/moved")));
        assert!(new.iter().all(|l| l.contains("/api/after/")), "{new:#?}");
        assert_eq!(old.len() + new.len(), sent, "every request logged once: {old:#?} {new:#?}");
    })
    .await;
}
