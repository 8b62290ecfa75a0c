//! The admin API against browsers and hostile local clients: pages of other
//! sites and DNS-rebound names, the token on reads, keep-alive after an
//! answer that leaves a body unread, and the limits of the admin listener
//! (connection cap, header read and idle timeouts, running out of files).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "admin-security-token-7d1e";
const WEIGHTS: &str = "api: { legacy: 90, new: 10 }\n";

fn config(legacy: &Upstream, new: &Upstream, admin_extra: &str, server: &str) -> String {
    format!(
        "{}{server}\
         backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n\
         \x20 - name: api\n    match: {{ path_prefix: /api/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n",
        admin_config_head(admin_extra, "{ path: \"off\" }"),
        legacy.url(),
        new.url()
    )
}

async fn upstreams() -> (Upstream, Upstream) {
    (Upstream::echo("legacy").await, Upstream::echo("new").await)
}

/// The proxy with `admin.token_file` holding [`TOKEN`].
async fn start_with_token(config: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    Proxy::start_in(dir, config, WEIGHTS).await
}

/// An admin request with exactly these headers (hyper adds `Host` only
/// when absent).
async fn admin(proxy: &Proxy, method: Method, path: &str, headers: Headers<'_>, body: &str) -> Resp {
    let body = if body.is_empty() { empty() } else { full(body.to_string()) };
    send(with_body(method, &proxy.admin_url(path), headers, body)).await
}

/// The live weights, read as the CLI would (loopback Host, token if any).
async fn live_weights(proxy: &Proxy, token: Option<&str>) -> Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let resp = admin(proxy, Method::GET, "/admin/weights", &headers, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp.json()
}

fn unchanged(proxy: &Proxy) {
    assert_eq!(std::fs::read_to_string(proxy.path("weights.yaml")).unwrap(), WEIGHTS);
}

fn error_of(resp: &Resp) -> String {
    resp.json()["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn cross_site_form_and_text_posts_are_refused_and_change_nothing() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let proxy = Proxy::start(&config(&legacy, &new, "", ""), WEIGHTS).await;
        let before = live_weights(&proxy, None).await;
        // What a page of any site may send without a CORS preflight: an
        // HTML form, or fetch() with a text/plain body or none at all.
        let simple: &[(Method, &str, Option<&str>, &str)] = &[
            (
                Method::POST,
                "/admin/rollback",
                Some("text/plain;charset=UTF-8"),
                r#"{"all": true}"#,
            ),
            (
                Method::POST,
                "/admin/rollback",
                Some("application/x-www-form-urlencoded"),
                r#"{"all":true}="#,
            ),
            (
                Method::POST,
                "/admin/rollback",
                Some("multipart/form-data; boundary=x"),
                "--x\r\nContent-Disposition: form-data; name=\"all\"\r\n\r\ntrue\r\n--x--\r\n",
            ),
            (Method::PUT, "/admin/weights/api", Some("text/plain"), r#"{"new": 100}"#),
            (Method::POST, "/admin/undo", None, ""),
        ];
        for (method, path, content_type, body) in simple {
            let headers: Vec<(&str, &str)> = content_type.iter().map(|c| ("content-type", *c)).collect();
            let resp = admin(&proxy, method.clone(), path, &headers, body).await;
            assert_eq!(
                resp.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {path} {content_type:?}: {}",
                resp.text()
            );
            assert!(error_of(&resp).contains("Content-Type: application/json"), "{}", resp.text());
        }
        assert_eq!(live_weights(&proxy, None).await, before);
        unchanged(&proxy);
    })
    .await;
}

#[tokio::test]
async fn rebound_host_names_are_refused_for_reads_and_writes_but_not_probes() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let hosts = "  hosts: [cutover-admin.internal]\n";
        let proxy = Proxy::start(&config(&legacy, &new, hosts, ""), WEIGHTS).await;
        let json_type = ("content-type", "application/json");
        for host in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.9.8.7",
        ] {
            for (method, path, body) in [
                (Method::GET, "/admin/status", ""),
                (Method::GET, "/admin/weights", ""),
                (Method::GET, "/admin/parity", ""),
                (Method::GET, "/", ""),
                (Method::POST, "/admin/rollback", r#"{"all": true}"#),
                (Method::PUT, "/admin/weights/api", r#"{"new": 100}"#),
                (Method::POST, "/admin/undo", "{}"),
            ] {
                let resp = admin(&proxy, method.clone(), path, &[("host", host), json_type], body).await;
                assert_eq!(resp.status, StatusCode::FORBIDDEN, "Host {host}: {method} {path}: {}", resp.text());
                assert!(error_of(&resp).contains("is not a name of this admin API"), "{}", resp.text());
            }
        }
        unchanged(&proxy);
        // Kubelets and Prometheus reach these by pod address.
        for path in ["/healthz", "/readyz", "/metrics"] {
            let resp = admin(&proxy, Method::GET, path, &[("host", "evil.example")], "").await;
            assert_eq!(resp.status, StatusCode::OK, "{path}");
        }
        let port = proxy.admin.port();
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            "127.0.0.53".to_string(),
            format!("cutover-admin.internal:{port}"),
        ] {
            let resp = admin(&proxy, Method::GET, "/admin/status", &[("host", &host)], "").await;
            assert_eq!(resp.status, StatusCode::OK, "Host {host}: {}", resp.text());
        }
        let resp = admin(
            &proxy,
            Method::PUT,
            "/admin/weights/api",
            &[("host", "Cutover-Admin.Internal"), json_type],
            r#"{"new": 20}"#,
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(live_weights(&proxy, None).await["api"]["new"], 20.0);
    })
    .await;
}

#[tokio::test]
async fn pages_of_other_origins_and_sites_are_refused() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let proxy = Proxy::start(&config(&legacy, &new, "", ""), WEIGHTS).await;
        let json_type = ("content-type", "application/json");
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1.evil.example:8000"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            for (method, path, body) in [
                (Method::POST, "/admin/rollback", r#"{"all": true}"#),
                (Method::PUT, "/admin/weights/api", r#"{"new": 100}"#),
                (Method::GET, "/admin/status", ""),
            ] {
                let resp = admin(&proxy, method.clone(), path, &[(name, value), json_type], body).await;
                assert_eq!(
                    resp.status,
                    StatusCode::FORBIDDEN,
                    "{name}: {value}: {method} {path}: {}",
                    resp.text()
                );
                assert!(error_of(&resp).contains("are refused"), "{}", resp.text());
            }
        }
        unchanged(&proxy);
    })
    .await;
}

#[tokio::test]
async fn a_same_origin_dashboard_call_is_accepted() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let proxy = Proxy::start(&config(&legacy, &new, "", ""), WEIGHTS).await;
        let origin = format!("http://{}", proxy.admin);
        // What Chromium sends for the dashboard's own fetch().
        let page = [
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
            ("content-type", "application/json; charset=utf-8"),
            ("x-cutover-actor", "dashboard"),
        ];
        let resp = admin(&proxy, Method::POST, "/admin/rollback", &page, r#"{"routes": ["api"]}"#).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(live_weights(&proxy, None).await["api"]["new"], 0.0);
        let resp = admin(&proxy, Method::POST, "/admin/undo", &page, "").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(live_weights(&proxy, None).await["api"]["new"], 10.0);
        let resp = admin(&proxy, Method::GET, "/admin/status", &page[..2], "").await;
        assert_eq!(resp.status, StatusCode::OK);
        // The page opens from a bookmark or from a link on another site.
        for site in ["none", "cross-site"] {
            let resp = admin(&proxy, Method::GET, "/", &[("sec-fetch-site", site)], "").await;
            assert_eq!(resp.status, StatusCode::OK, "{site}");
            assert!(resp.text().contains("<script>"));
        }
    })
    .await;
}

#[tokio::test]
async fn with_a_token_every_read_needs_it_but_probes_and_metrics_do_not() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let proxy = start_with_token(&config(&legacy, &new, "  token_file: token\n", "")).await;
        let bearer = format!("Bearer {TOKEN}");
        for path in [
            "/admin/status",
            "/admin/parity",
            "/admin/weights",
            "/admin/parity?route=api",
            "/nowhere",
        ] {
            for headers in [vec![], vec![("authorization", "Bearer wrong")]] {
                let resp = admin(&proxy, Method::GET, path, &headers, "").await;
                assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}: {}", resp.text());
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
                assert!(!resp.text().contains("legacy"), "{}", resp.text());
            }
            let resp = admin(&proxy, Method::GET, path, &[("authorization", &bearer)], "").await;
            assert_ne!(resp.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        for path in ["/healthz", "/readyz", "/metrics", "/"] {
            assert_eq!(admin(&proxy, Method::GET, path, &[], "").await.status, StatusCode::OK, "{path}");
        }
        // The CLI sends the token of the config on reads too.
        for args in [&["status"][..], &["parity"][..]] {
            let out = Command::new(BIN)
                .args(args)
                .args(["--admin", &proxy.admin.to_string(), "-c"])
                .arg(&proxy.config_path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = Command::new(BIN)
            .args(["status", "--admin", &proxy.admin.to_string(), "-c", "/nonexistent.yaml"])
            .env_remove("CUTOVER_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("token"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn keep_alive_connections_survive_answers_that_leave_a_body_unread() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let proxy = start_with_token(&config(&legacy, &new, "  token_file: token\n", "")).await;
        let body = r#"{"new": 50}"#;
        let refused: [(&str, u16); 4] = [
            ("PUT /admin/weights/api", 401),
            ("POST /nowhere", 401),
            ("GET /healthz", 200),
            ("POST /metrics", 405),
        ];
        for (request, status) in refused {
            let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
            let head = format!(
                "{request} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            // The body a moment after the head, as from a client that
            // writes them apart: the answer is decided before it arrives.
            stream.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream.write_all(body.as_bytes()).await.unwrap();
            let mut pending = Vec::new();
            let first = read_response(&mut stream, &mut pending).await.expect("a first response");
            assert_eq!(first.status, status, "{request}");
            // Either the body was read and the connection serves on, or the
            // answer said it closes.
            if first.says_close() {
                continue;
            }
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
            let second = read_response(&mut stream, &mut pending).await;
            assert_eq!(second.map(|r| r.status), Some(200), "after {request}, without Connection: close");
        }

        // A body too big to read through, or one the client holds back
        // until 100 Continue: the answer says the connection closes.
        let big = "x".repeat(200 * 1024);
        for (extra, body) in [("", big.as_str()), ("Expect: 100-continue\r\n", body)] {
            let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
            let head = format!(
                "PUT /admin/weights/api HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            if extra.is_empty() {
                let _ = stream.write_all(body.as_bytes()).await;
            }
            let got = read_response(&mut stream, &mut Vec::new()).await.expect("a response");
            assert_eq!(got.status, 401);
            assert!(got.says_close(), "{extra:?}: {:?}", got.headers);
        }
        assert_eq!(live_weights(&proxy, Some(TOKEN)).await["api"]["new"], 10.0);
    })
    .await;
}

/// Opens `count` connections to `addr` that send part of a request head and
/// nothing more.
async fn half_open(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /admin/status HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
        held.push(s);
    }
    held
}

/// Number of file descriptors `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Sets the open-file limit (soft and hard) of the running process `pid`.
fn limit_open_files(pid: u32, limit: usize) {
    let status = Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={limit}:{limit}")])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());
}

async fn public_answers(proxy: &Proxy) -> bool {
    let req = request(Method::GET, &proxy.url("/api/x"), &[]);
    matches!(
        tokio::time::timeout(Duration::from_secs(5), client().request(req)).await,
        Ok(Ok(resp)) if resp.status() == StatusCode::OK
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admin_connections_past_the_open_file_limit_leave_public_and_admin_answering() {
    within(60, async {
        let (legacy, new) = upstreams().await;
        let proxy = Proxy::start(&config(&legacy, &new, "", "server: { workers: 1 }\n"), WEIGHTS).await;
        assert!(public_answers(&proxy).await);
        // Room for 100 more files: more than the admin listener's cap (64),
        // fewer than the connections thrown at it.
        let limit = open_files(proxy.pid()) + 100;
        limit_open_files(proxy.pid(), limit);
        let mut held = half_open(proxy.admin, 160).await;

        assert!(public_answers(&proxy).await, "the public listener must still accept");
        let resp = admin(&proxy, Method::GET, "/admin/status", &[], "").await;
        assert_eq!(resp.status, StatusCode::OK, "the admin API must still answer");
        let mut closed = 0;
        for s in &mut held {
            if closed_within(s, Duration::from_millis(20)).await {
                closed += 1;
            }
        }
        assert!(closed >= 160 - 64, "only {closed} of 160 half-open admin connections were closed");
        let refused = proxy
            .wait_metric_until(
                "cutover_connections_refused_total",
                &[("listener", "admin"), ("reason", "limit")],
                ">= 96",
                |v| v >= 96.0,
            )
            .await;
        assert!(refused >= 96.0);
        let text = proxy.metrics().await;
        let open = metric_value(&text, "cutover_active_connections", &[("listener", "admin")]).unwrap();
        assert!(open <= 65.0, "{open} admin connections open");
        drop(held);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_at_once_and_counted() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let server = "server: { max_connections: 4, workers: 2 }\n";
        let proxy = Proxy::start(&config(&legacy, &new, "", server), WEIGHTS).await;
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(TcpStream::connect(proxy.addr()).await.unwrap());
        }
        proxy
            .wait_metric(
                "cutover_connections_refused_total",
                &[("listener", "public"), ("reason", "limit")],
                2.0,
            )
            .await;
        let mut closed = 0;
        for s in &mut held {
            if closed_within(s, Duration::from_millis(200)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 2, "two of six connections are past the cap of four");
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 4.0)
            .await;
        assert!(!public_answers(&proxy).await, "a fifth connection is refused");
        drop(held);
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 0.0)
            .await;
        assert!(public_answers(&proxy).await);
        assert!(proxy.stderr_text().contains("at the connection limit"), "{}", proxy.stderr_text());
    })
    .await;
}

#[tokio::test]
async fn admin_connections_close_after_the_header_read_and_idle_timeouts() {
    within(30, async {
        let (legacy, new) = upstreams().await;
        let server = "server: { header_read_timeout: 1s, idle_timeout: 30s }\n";
        let proxy = Proxy::start(&config(&legacy, &new, "", server), WEIGHTS).await;
        let mut silent = TcpStream::connect(proxy.admin).await.unwrap();
        let mut partial = half_open(proxy.admin, 1).await.pop().unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "a connection that sends nothing"
        );
        assert!(
            closed_within(&mut partial, Duration::from_secs(5)).await,
            "a connection that stops mid-head"
        );

        let server = "server: { header_read_timeout: 30s, idle_timeout: 1s }\n";
        let proxy = Proxy::start(&config(&legacy, &new, "", server), WEIGHTS).await;
        let mut idle = TcpStream::connect(proxy.admin).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut idle, &mut Vec::new()).await.map(|r| r.status), Some(200));
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "an idle keep-alive connection"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_files_accepting_backs_off_logs_once_and_recovers() {
    within(60, async {
        let (legacy, new) = upstreams().await;
        let proxy = Proxy::start(&config(&legacy, &new, "", "server: { workers: 1 }\n"), WEIGHTS).await;
        let limit = open_files(proxy.pid()) + 8;
        limit_open_files(proxy.pid(), limit);
        // Connections wait in the backlog while the process has no file
        // descriptor left to accept them with.
        let mut held = Vec::new();
        for _ in 0..24 {
            held.push(TcpStream::connect(proxy.addr()).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(held);
        let failures = proxy
            .wait_metric_until(
                "cutover_connections_refused_total",
                &[("listener", "public"), ("reason", "emfile")],
                "> 0",
                |v| v > 0.0,
            )
            .await;
        // 10 ms doubling to 1 s: a handful of attempts in 1.5 s, not a spin.
        assert!(failures <= 20.0, "{failures} accept attempts in 1.5 s");
        assert!(public_answers(&proxy).await, "accepting again once files are free");
        let stderr = proxy.stderr_text();
        let warnings = stderr
            .lines()
            .filter(|l| l.contains("cannot accept connections") && l.contains("listener=public"))
            .count();
        assert!((1..=4).contains(&warnings), "{warnings} warnings:\n{stderr}");
        assert!(stderr.contains("accepting connections again"), "{stderr}");
    })
    .await;
}

#[test]
fn the_shipped_config_still_passes_check_and_bad_admin_hosts_are_refused() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (ok, _, stderr) = check(std::path::Path::new(&format!("{root}/config/cutover.yaml")));
    assert!(ok, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weights.yaml"), "").unwrap();
    let path = dir.path().join("cutover.yaml");
    let text = "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
                admin:\n  hosts: [ok.example, \"http://x.example\", \"*.example\"]\n\
                server: { max_connections: 0 }\n";
    std::fs::write(&path, text).unwrap();
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(
        stderr.contains("cutover.yaml:4:23: \"http://x.example\" is not a host name"),
        "{stderr}"
    );
    assert!(stderr.contains("cutover.yaml:4:43: \"*.example\" is not a host name"), "{stderr}");
    assert!(stderr.contains("max_connections must be at least 1"), "{stderr}");
}
