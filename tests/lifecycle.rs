//! The process as an operator sees it: backend failures, reloads, graceful
//! drain on SIGTERM, and the built-in demo.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, Request, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_hanging_and_closing_backends_get_502_504_and_are_counted() {
    within(30, async {
        let dead = dead_addr();
        let hanging = hanging_upstream().await;
        let closing = closing_upstream().await;
        let config = format!(
            "{}backends:\n\
             \x20 dead: {{ url: \"http://{dead}\", connect_timeout: 1s }}\n\
             \x20 hang: {{ url: \"http://{hanging}\", timeout: 300ms }}\n\
             \x20 close: {{ url: \"http://{closing}\" }}\n\
             routes:\n\
             \x20 - name: r-dead\n    match: {{ path_prefix: /dead/ }}\n    backends: {{ dead: {{}} }}\n\
             \x20 - name: r-hang\n    match: {{ path_prefix: /hang/ }}\n    backends: {{ hang: {{}} }}\n\
             \x20 - name: r-close\n    match: {{ path_prefix: /close/ }}\n    backends: {{ close: {{}} }}\n",
            config_head("{ path: off }")
        );
        let proxy = Proxy::start(&config, "").await;
        let c = client();

        let resp = send_on(&c, request(Method::GET, &proxy.url("/dead/x"), &[])).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
        assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(resp.text(), "bad gateway: cannot connect to backend dead\n");

        let started = Instant::now();
        let resp = send_on(&c, request(Method::GET, &proxy.url("/hang/x"), &[])).await;
        let waited = started.elapsed();
        assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(resp.text(), "gateway timeout: backend hang sent no response in time\n");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "504 after {waited:?}, backend timeout is 300ms"
        );

        let resp = send_on(&c, request(Method::GET, &proxy.url("/close/x"), &[])).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
        assert_eq!(resp.text(), "bad gateway: backend close closed the connection\n");

        for (route, backend, kind) in [
            ("r-dead", "dead", "connect"),
            ("r-hang", "hang", "timeout"),
            ("r-close", "close", "reset"),
        ] {
            // One client request, counted once as an error...
            proxy
                .wait_metric(
                    "cutover_requests_total",
                    &[("route", route), ("backend", backend), ("code", "error")],
                    1.0,
                )
                .await;
            // ...and every failed attempt at the backend (a connection that
            // never answered may be tried once more) by its kind.
            let errors = metric_value(
                &proxy.metrics().await,
                "cutover_upstream_errors_total",
                &[("route", route), ("backend", backend), ("kind", kind)],
            );
            assert!(
                matches!(errors, Some(n) if (1.0..=2.0).contains(&n)),
                "cutover_upstream_errors_total{{route={route},backend={backend},kind={kind}}} = {errors:?}"
            );
        }
        let text = proxy.metrics().await;
        for code in ["2xx", "5xx"] {
            assert_eq!(
                metric_value(&text, "cutover_requests_total", &[("route", "r-dead"), ("code", code)]),
                Some(0.0),
                "a failed exchange is counted as error, not {code}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    within(30, async {
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::channel::<()>(4);
        let up = Upstream::with("slow", move |req| {
            let arrived_tx = arrived_tx.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let _ = arrived_tx.send(()).await;
                    tokio::time::sleep(Duration::from_millis(3000)).await;
                }
                echo_response("slow".into(), req).await
            }
        })
        .await;
        let config = format!(
            "{}server: {{ drain_timeout: 10s }}\nbackends:\n  slow: {{ url: \"{}\" }}\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    backends: {{ slow: {{}} }}\n",
            config_head("{ path: off }"),
            up.url()
        );
        let mut proxy = Proxy::start(&config, "").await;
        let admin = proxy.admin;
        assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);

        // An idle keep-alive connection must not hold up the exit, nor one
        // that has sent nothing yet (clients open spare connections).
        let idle = client();
        let resp = send_on(&idle, request(Method::GET, &proxy.url("/fast"), &[])).await;
        assert_eq!(resp.status, 200);
        let silent = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 2.0)
            .await;

        let url = proxy.url("/slow");
        let in_flight = tokio::spawn(async move { get(&url).await });
        tokio::time::timeout(Duration::from_secs(5), arrived.recv())
            .await
            .expect("the slow request reaches the backend");
        let sent_term = Instant::now();
        proxy.signal("TERM");

        // New connections are refused while the slow request is still running.
        let addr = proxy.addr();
        let refused = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
                _ if sent_term.elapsed() > Duration::from_millis(2500) => break false,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert!(refused, "a new connection was still accepted 2.5s after SIGTERM");
        assert!(
            !in_flight.is_finished(),
            "the in-flight request ended before the refusal was observed"
        );
        // Readiness turns off while draining.
        assert_eq!(get(&format!("http://{admin}/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);

        let resp = in_flight.await.unwrap();
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.seen().uri(), "/slow");
        let status = proxy.wait_exit(Duration::from_secs(5)).await.expect("cutover exits after draining");
        assert!(status.success(), "exit status {status}");
        assert!(
            sent_term.elapsed() < Duration::from_secs(8),
            "exit took {:?}; the drain deadline is 10s",
            sent_term.elapsed()
        );
        drop(silent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_at_the_deadline() {
    within(30, async {
        let hanging = hanging_upstream().await;
        let config = format!(
            "{}server: {{ drain_timeout: 300ms }}\nbackends:\n  hang: {{ url: \"http://{hanging}\" }}\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    backends: {{ hang: {{}} }}\n",
            config_head("{ path: off }")
        );
        let mut proxy = Proxy::start(&config, "").await;
        let url = proxy.url("/forever");
        let stuck = tokio::spawn(async move { client().request(request(Method::GET, &url, &[])).await.map(|r| r.status()) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        proxy.signal("INT");
        let status = proxy
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("cutover exits once the drain deadline passes");
        assert!(status.success(), "exit status {status}");
        assert!(
            sent.elapsed() >= Duration::from_millis(250),
            "exited after {:?}, before the drain deadline",
            sent.elapsed()
        );
        let outcome = tokio::time::timeout(Duration::from_secs(5), stuck)
            .await
            .expect("the stuck client is released")
            .unwrap();
        assert!(outcome.is_err(), "stuck request got {outcome:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_weight_file_leaves_the_old_table_serving() {
    within(40, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let config = format!(
            "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
             routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n",
            config_head("{ path: off }"),
            legacy.url(),
            new.url()
        );
        let proxy = Proxy::start(&config, "api: { legacy: 0, new: 100 }\n").await;
        let c = client();
        let version_of = |text: &str| {
            parse_metrics(text)
                .into_iter()
                .find(|s| s.name == "cutover_config_version_info")
                .map(|s| s.labels["version"].clone())
                .expect("config version metric")
        };
        let reloads = |result: &'static str| [("result", result)];
        let v1 = version_of(&proxy.metrics().await);
        assert_eq!(send_on(&c, request(Method::GET, &proxy.url("/"), &[])).await.upstream(), "new");

        // A weight file that does not sum to 100 is rejected whole.
        proxy.write_weights("api: { legacy: 60, new: 60 }\n");
        proxy.signal("HUP");
        proxy
            .wait_metric_until("cutover_config_reloads_total", &reloads("error"), ">= 1", |v| v >= 1.0)
            .await;
        let text = proxy.metrics().await;
        assert_eq!(version_of(&text), v1, "a rejected file must not change the version");
        assert_eq!(
            metric_value(&text, "cutover_backend_weight_percent", &[("backend", "new")]),
            Some(100.0)
        );
        assert_eq!(metric_value(&text, "cutover_config_reloads_total", &reloads("ok")), Some(0.0));
        for _ in 0..20 {
            let resp = send_on(&c, request(Method::GET, &proxy.url("/"), &[])).await;
            assert_eq!(resp.upstream(), "new", "the previous table keeps serving");
        }

        // A good file goes live.
        proxy.write_weights("api: { legacy: 100, new: 0 }\n");
        proxy.signal("HUP");
        proxy
            .wait_metric("cutover_backend_weight_percent", &[("route", "api"), ("backend", "legacy")], 100.0)
            .await;
        assert_ne!(version_of(&proxy.metrics().await), v1);
        for _ in 0..20 {
            let resp = send_on(&c, request(Method::GET, &proxy.url("/"), &[])).await;
            assert_eq!(resp.upstream(), "legacy");
        }

        // SIGHUP by itself re-reads the files, even when nothing changed.
        let before = proxy
            .wait_metric_until("cutover_config_reloads_total", &reloads("ok"), ">= 1", |v| v >= 1.0)
            .await;
        proxy.signal("HUP");
        proxy
            .wait_metric_until("cutover_config_reloads_total", &reloads("ok"), &format!("> {before}"), |v| {
                v > before
            })
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_both_apps_and_rewrites_login_for_new() {
    within(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--legacy",
            "127.0.0.1:0",
            "--new",
            "127.0.0.1:0",
        ]);
        cmd.env("TMPDIR", dir.path());
        let config_path = dir.path().join("unused");
        let mut demo = Proxy::spawn(cmd, dir, config_path).await;
        let c = client();

        // A user whose sticky bucket is in legacy's 90%.
        let user = (0..)
            .map(|i| format!("Token user{i}"))
            .find(|u| sticky_backend(u, 10) == "legacy")
            .unwrap();
        for _ in 0..5 {
            let resp = send_on(&c, request(Method::GET, &demo.url("/api/users/"), &[("authorization", &user)])).await;
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(resp.header("x-demo-backend"), Some("legacy"));
            let body = resp.json();
            assert_eq!(body["count"], 3, "legacy answers with a paginated list: {body}");
            assert_eq!(body["results"][0]["id"], 1);
        }

        let resp = send_on(
            &c,
            request(
                Method::GET,
                &demo.url("/api/users/"),
                &[("authorization", &user), ("x-cutover-backend", "new")],
            ),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.header("x-demo-backend"), Some("new"));
        let body = resp.json();
        assert!(body.is_array(), "new answers with a bare list: {body}");
        assert_eq!(body[0]["id"], "1");

        // Login goes to legacy at the shipped weights...
        let login = || Request::post(demo.url("/api/auth/login/")).body(full("username=ada")).unwrap();
        let resp = send_on(&c, login()).await;
        assert_eq!(resp.header("x-demo-backend"), Some("legacy"));
        assert!(resp.json()["token"].as_str().unwrap().starts_with("legacy-"));

        // ...and, once the weights send it to new, is rewritten to /auth/login/,
        // the only path where the new app issues tokens. The demo keeps its
        // files in the temporary folder (pointed at a private one here).
        let weights = find_file(demo.dir.path(), "demo-weights.yaml").expect("the demo's weight file");
        let weights = weights.to_string_lossy().into_owned();
        std::fs::write(&weights, "api: { legacy: 90, new: 10 }\nauth: { legacy: 0, new: 100 }\n").unwrap();
        demo.signal("HUP");
        demo.wait_metric("cutover_backend_weight_percent", &[("route", "auth"), ("backend", "new")], 100.0)
            .await;
        let resp = send_on(&c, login()).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.header("x-demo-backend"), Some("new"));
        let token = resp.json()["token"].as_str().unwrap().to_string();
        assert!(token.starts_with("new-"), "new app token {token:?}");

        // Ctrl-C stops the demo cleanly and removes its temporary folder.
        demo.signal("INT");
        let status = demo
            .wait_exit(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("demo exits: {}", demo.stderr_text()));
        assert!(status.success(), "exit status {status}");
        let folder = std::path::Path::new(&weights).parent().unwrap();
        assert!(!folder.exists(), "{} left behind", folder.display());
    })
    .await;
}

/// The first file called `name` under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_share_every_listener_and_a_taken_port_is_an_error() {
    within(30, async {
        let up = Upstream::echo("app").await;
        let config = format!(
            "listeners:\n  - {{ name: public, addr: \"127.0.0.1:0\" }}\n  - {{ name: internal, addr: \"127.0.0.1:0\" }}\n\
             admin: {{ addr: \"127.0.0.1:0\" }}\nweights_file: weights.yaml\naccess_log: {{ path: off }}\n\
             server: {{ workers: 3 }}\n\
             backends:\n  app: {{ url: \"{}\" }}\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    backends: {{ app: {{}} }}\n",
            up.url()
        );
        let proxy = Proxy::start(&config, "").await;
        proxy.wait_stderr(Duration::from_secs(5), |l| l.contains("threads=3")).await;
        // Many connections at once on both listeners, each its own client:
        // whichever thread's socket the kernel picks, every one is answered.
        let mut calls = Vec::new();
        for i in 0..60 {
            let listener = if i % 2 == 0 { "public" } else { "internal" };
            let url = format!("http://{}/n/{i}", proxy.listener(listener));
            calls.push(tokio::spawn(async move {
                let client = client();
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    statuses.push(send_on(&client, request(Method::GET, &url, &[])).await.status);
                }
                statuses
            }));
        }
        for call in calls {
            assert!(call.await.unwrap().iter().all(|s| *s == StatusCode::OK));
        }
        assert_eq!(up.hits(), 300);

        // A port another process holds is refused, not silently shared.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clash = config.replacen("127.0.0.1:0", &taken.local_addr().unwrap().to_string(), 1);
        std::fs::write(dir.path().join("cutover.yaml"), clash).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), "").unwrap();
        let out = std::process::Command::new(BIN)
            .args(["run", "-c"])
            .arg(dir.path().join("cutover.yaml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot listen on") && stderr.contains("listener public"),
            "{stderr}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_file_names_every_bound_address_and_goes_at_shutdown() {
    within(30, async {
        let up = Upstream::echo("app").await;
        let config = format!(
            "listeners:\n  - {{ name: public, addr: \"127.0.0.1:0\" }}\n  - {{ name: internal, addr: \"127.0.0.1:0\" }}\n\
             admin: {{ addr: \"127.0.0.1:0\" }}\nweights_file: weights.yaml\naccess_log: {{ path: off }}\n\
             backends:\n  app: {{ url: \"{}\" }}\n\
             routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    backends: {{ app: {{}} }}\n",
            up.url()
        );
        let mut proxy = Proxy::start(&config, "").await;
        // Written once ready: every address in it answers at once.
        let ready: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&proxy.ready_file).unwrap()).unwrap();
        assert_eq!(ready["pid"], proxy.pid(), "{ready}");
        let names: Vec<&str> = ready["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["public", "internal"], "config order: {ready}");
        for listener in ready["listeners"].as_array().unwrap() {
            let resp = get(&format!("http://{}/x", listener["addr"].as_str().unwrap())).await;
            assert_eq!((resp.status, resp.upstream()), (StatusCode::OK, "app"), "{listener}");
        }
        let admin = ready["admin"].as_str().unwrap();
        assert_eq!(get(&format!("http://{admin}/readyz")).await.status, StatusCode::OK);

        proxy.signal("TERM");
        let status = proxy.wait_exit(Duration::from_secs(10)).await.expect("exits after SIGTERM");
        assert!(status.success(), "exit status {status}");
        assert!(!proxy.ready_file.exists(), "the ready file outlived the proxy");

        // A run that cannot start leaves the file alone: it may be a live
        // proxy's, started with the same path.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std::fs::write(
            proxy.path("cutover.yaml"),
            config.replacen("127.0.0.1:0", &taken.local_addr().unwrap().to_string(), 1),
        )
        .unwrap();
        let other = "{\"pid\":1,\"listeners\":[{\"name\":\"public\",\"addr\":\"127.0.0.1:9\"}],\"admin\":\"127.0.0.1:9\"}\n";
        std::fs::write(&proxy.ready_file, other).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["run", "-c"])
            .arg(proxy.path("cutover.yaml"))
            .arg("--ready-file")
            .arg(&proxy.ready_file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(&proxy.ready_file).unwrap(), other);
    })
    .await;
}

/// The allocator settings in `src/main.rs` are the ones the binary runs
/// with: jemalloc ignores a setting it cannot parse (with a warning) and
/// the proxy would then run on the defaults it was tuned away from.
#[test]
fn the_binary_runs_with_its_allocator_settings() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "confirm_conf:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for setting in [
        "background_thread:true",
        "dirty_decay_ms:1000",
        "muzzy_decay_ms:0",
        "slab_sizes:4097-14336:8",
        "tcache_gc_incr_bytes:4194304",
    ] {
        assert!(
            stderr.contains(&format!("Set conf value: {setting}")),
            "{setting} is not applied:\n{stderr}"
        );
    }
    assert!(!stderr.to_lowercase().contains("invalid conf"), "{stderr}");
}

/// Runs `cutover ARGS` for at most 10 s; returns (success, stderr), or
/// `None` if it had to be killed.
async fn run_bounded(args: &[&std::ffi::OsStr]) -> Option<(bool, String)> {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cutover");
    let mut stderr = child.stderr.take().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await.unwrap();
        (child.wait().await.unwrap().success(), text)
    })
    .await;
    waited.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_refuse_fifo_device_and_oversized_files_at_once() {
    within(60, async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cutover.yaml");
        std::fs::write(
            &config,
            format!(
                "{}backends:\n  legacy: {{ url: \"http://127.0.0.1:9\" }}\n\
                 routes:\n  - name: api\n    backends: {{ legacy: {{}} }}\n",
                config_head("{ path: off }")
            ),
        )
        .unwrap();
        let weights = dir.path().join("weights.yaml");
        let fifo = std::process::Command::new("mkfifo").arg(&weights).status().unwrap();
        assert!(fifo.success());
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; 5 * 1024 * 1024]).unwrap();
        // The config names a FIFO as its weight file; then the config itself
        // is a device, and a file past the size limit.
        let cases: [(&std::path::Path, &str); 3] = [
            (&config, "weights.yaml: is a FIFO, not a regular file"),
            (
                std::path::Path::new("/dev/zero"),
                "/dev/zero: is a character device, not a regular file",
            ),
            (&big, "big.yaml: is 5 MiB, larger than the 4 MiB limit"),
        ];
        for (file, expected) in cases {
            for command in ["check", "run"] {
                let args = [command.as_ref(), "-c".as_ref(), file.as_os_str()];
                let (ok, stderr) = run_bounded(&args)
                    .await
                    .unwrap_or_else(|| panic!("cutover {command} -c {} hung", file.display()));
                assert!(!ok && stderr.contains(expected), "{command} {}: {stderr}", file.display());
            }
        }
    })
    .await;
}
