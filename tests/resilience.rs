//! Health checks, failover, retries and the guard's automatic rollback.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http::{Method, Request, Response, StatusCode};
use serde_json::Value;

/// An upstream whose answers (and health endpoint) fail while `failing` is set.
async fn switchable(name: &'static str, failing: Arc<AtomicBool>) -> Upstream {
    Upstream::with(name, move |req: Request<hyper::body::Incoming>| {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            let status = if failing {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let _ = req.uri();
            Response::builder()
                .status(status)
                .header("x-upstream", name)
                .body(full(name))
                .unwrap()
        }
    })
    .await
}

fn config(legacy: &str, new: &str, new_extra: &str, route_extra: &str) -> String {
    format!(
        "{}backends:\n  legacy: {{ url: \"{legacy}\" }}\n  new: {{ url: \"{new}\"{new_extra} }}\n\
         routes:\n  - name: api\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n    sticky: {{ header: X-User }}\n{route_extra}",
        config_head("{ path: \"off\" }")
    )
}

fn users_on_new(n: usize, new_percent: u32) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| sticky_backend(u, new_percent) == "new")
        .take(n)
        .collect()
}

async fn backends_of(proxy: &Proxy, users: &[String]) -> Vec<(u16, String)> {
    let client = client();
    let mut out = Vec::new();
    for u in users {
        let resp = send_on(&client, request(Method::GET, &proxy.url("/api/x"), &[("x-user", u)])).await;
        out.push((resp.status.as_u16(), resp.upstream().to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_backends_users_move_and_come_back() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let failing = Arc::new(AtomicBool::new(false));
        let new = switchable("new", failing.clone()).await;
        let check = ", health_check: { path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }, passive_health: { consecutive_failures: 0 }";
        let proxy = Proxy::start(&config(&legacy.url(), &new.url(), check, ""), "api: { legacy: 50, new: 50 }\n").await;
        let users = users_on_new(20, 50);
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "new")], 1.0).await;
        assert!(backends_of(&proxy, &users).await.iter().all(|(s, b)| *s == 200 && b == "new"));

        failing.store(true, Ordering::SeqCst);
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "new")], 0.0).await;
        let moved = backends_of(&proxy, &users).await;
        assert!(moved.iter().all(|(s, b)| *s == 200 && b == "legacy"), "{moved:?}");
        let status = get(&format!("http://{}/admin/status", proxy.admin)).await.json();
        assert_eq!(status["routes"][0]["backends"][1]["health"], "unhealthy (check failing)");

        failing.store(false, Ordering::SeqCst);
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "new")], 1.0).await;
        assert!(backends_of(&proxy, &users).await.iter().all(|(s, b)| *s == 200 && b == "new"), "users return after recovery");
    })
    .await;
}

/// A Django app answers 400 to a Host outside its `ALLOWED_HOSTS`, the
/// backend's own address included: `health_check.host` names one it takes,
/// without changing the Host that clients' requests carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_sends_the_host_it_is_given() {
    within(60, async {
        let allowed_hosts = |name: &'static str| {
            Upstream::with(name, move |req: Request<hyper::body::Incoming>| {
                let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
                let status = if host == "shop.example" {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                };
                async move {
                    Response::builder()
                        .status(status)
                        .header("x-upstream", name)
                        .body(full(name))
                        .unwrap()
                }
            })
        };
        let (legacy, new) = (allowed_hosts("legacy").await, allowed_hosts("new").await);
        let check = |host: &str| {
            format!(", health_check: {{ path: /healthz,{host} interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }}")
        };
        let named = Proxy::start(
            &config(&legacy.url(), &new.url(), &check(" host: shop.example,"), ""),
            "api: { legacy: 50, new: 50 }\n",
        )
        .await;
        let unnamed = Proxy::start(&config(&legacy.url(), &new.url(), &check(""), ""), "api: { legacy: 50, new: 50 }\n").await;
        // Without it, the check sends the URL's host:port, and the app refuses it.
        unnamed.wait_metric("cutover_backend_healthy", &[("backend", "new")], 0.0).await;
        // With it, five more checks later, still healthy.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = named.metrics().await;
        assert_eq!(
            metric_value(&metrics, "cutover_backend_healthy", &[("backend", "new")]),
            Some(1.0),
            "{metrics}"
        );
        // Clients' requests keep their own Host.
        let c = client();
        let user = &users_on_new(1, 50)[0];
        let resp = send_on(
            &c,
            request(Method::GET, &named.url("/api/x"), &[("x-user", user), ("host", "shop.example")]),
        )
        .await;
        assert_eq!((resp.status, resp.upstream()), (StatusCode::OK, "new"));
        let resp = send_on(
            &c,
            request(Method::GET, &named.url("/api/x"), &[("x-user", user), ("host", "other.example")]),
        )
        .await;
        assert_eq!((resp.status, resp.upstream()), (StatusCode::BAD_REQUEST, "new"));
    })
    .await;
}

#[tokio::test]
async fn a_backend_named_by_host_name_is_reached_and_a_name_that_does_not_resolve_fails_like_a_dead_backend() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        // `localhost` may list ::1 first, where nothing listens: the next address is tried.
        let by_name = format!("http://localhost:{}", legacy.addr.port());
        let proxy = Proxy::start(
            &config(
                &by_name,
                "http://cutover-no-such-backend.invalid:8000",
                ", connect_timeout: 2s, passive_health: { consecutive_failures: 3, cool_off: 30s }",
                "",
            ),
            "api: { legacy: 50, new: 50 }\n",
        )
        .await;
        let seen = backends_of(&proxy, &users_on_new(10, 50)).await;
        assert!(seen.iter().all(|(s, b)| *s == 200 && b == "legacy"), "{seen:?}");
        let metrics = proxy.metrics().await;
        let connect_errors = [("route", "api"), ("backend", "new"), ("kind", "connect")];
        assert_eq!(
            metric_value(&metrics, "cutover_upstream_errors_total", &connect_errors),
            Some(3.0),
            "{metrics}"
        );
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "new")], 0.0).await;
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "legacy")], 1.0).await;
    })
    .await;
}

#[tokio::test]
async fn a_dead_backend_is_retried_then_ejected_and_posts_are_not_retried() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let dead = format!("http://{}", dead_addr());
        let proxy = Proxy::start(
            &config(
                &legacy.url(),
                &dead,
                ", passive_health: { consecutive_failures: 3, cool_off: 30s }",
                "",
            ),
            "api: { legacy: 50, new: 50 }\n",
        )
        .await;
        let users = users_on_new(10, 50);
        // Every GET succeeds: the first few by a retry on legacy, then new is ejected.
        let seen = backends_of(&proxy, &users).await;
        assert!(seen.iter().all(|(s, b)| *s == 200 && b == "legacy"), "{seen:?}");
        let metrics = proxy.metrics().await;
        let retries = metric_value(&metrics, "cutover_retries_total", &[("route", "api"), ("backend", "new")]).unwrap();
        assert_eq!(retries, 3.0, "retried until ejected after 3 failures\n{metrics}");
        assert_eq!(
            metric_value(
                &metrics,
                "cutover_upstream_errors_total",
                &[("route", "api"), ("backend", "new"), ("kind", "connect")]
            ),
            Some(3.0)
        );
        proxy.wait_metric("cutover_backend_healthy", &[("backend", "new")], 0.0).await;
        drop(proxy);

        // A POST is not retried (unless the route opts in): it gets the 502.
        let proxy = Proxy::start(
            &config(&legacy.url(), &dead, ", passive_health: { consecutive_failures: 0 }", ""),
            "api: { legacy: 0, new: 100 }\n",
        )
        .await;
        let post = send(Request::post(proxy.url("/api/orders")).body(full("{}")).unwrap()).await;
        assert_eq!(post.status, StatusCode::BAD_GATEWAY);
        let put = send(Request::put(proxy.url("/api/orders/1")).body(full("{\"n\":1}")).unwrap()).await;
        assert_eq!(put.status, StatusCode::OK, "a PUT with a small body is retried elsewhere");
        assert_eq!(put.seen().body(), "{\"n\":1}", "with its body");
        drop(proxy);
        let proxy = Proxy::start(
            &config(
                &legacy.url(),
                &dead,
                ", passive_health: { consecutive_failures: 0 }",
                "    retry: { non_idempotent: true }\n",
            ),
            "api: { legacy: 0, new: 100 }\n",
        )
        .await;
        let post = send(Request::post(proxy.url("/api/orders")).body(full("{}")).unwrap()).await;
        assert_eq!(post.status, StatusCode::OK, "the route opted in");
    })
    .await;
}

async fn status(proxy: &Proxy) -> Value {
    get(&proxy.admin_url("/admin/status")).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_rolls_back_a_failing_backend_and_stays_rolled_back() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let failing = Arc::new(AtomicBool::new(false));
        let new = switchable("new", failing.clone()).await;
        let guard = "    guard: { max_error_rate: 0.2, window: 5s, min_requests: 20 }\n";
        let proxy = Proxy::start(
            &config(&legacy.url(), &new.url(), ", passive_health: { consecutive_failures: 0 }", guard),
            "api: { legacy: 50, new: 50 }\n",
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let load = {
            let (stop, sent, url) = (stop.clone(), sent.clone(), proxy.url("/api/load"));
            tokio::spawn(async move {
                let client = client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    send_on(&client, request(Method::GET, &url, &[("x-user", &format!("u{i}"))])).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        // Healthy traffic: the guard is armed and quiet.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(status(&proxy).await["routes"][0]["guard"]["last_rollback"].is_null());

        let broke = Instant::now();
        failing.store(true, Ordering::SeqCst);
        let detection = guard_rollback_within(&proxy, Duration::from_secs(20)).await - broke;
        println!(
            "guard detection time: {:.0} ms from the first failing response to the rollback",
            detection.as_secs_f64() * 1e3
        );

        let s = status(&proxy).await;
        let reason = s["routes"][0]["guard"]["last_rollback"]["reason"].as_str().unwrap().to_string();
        assert!(reason.starts_with("guard: backend new error rate"), "{reason}");
        assert_eq!(s["routes"][0]["backends"][1]["weight"], 0.0);
        let file = std::fs::read_to_string(proxy.path("weights.yaml")).unwrap();
        assert!(file.contains("api: { legacy: 100, new: 0 }"), "{file}");
        let history = std::fs::read_to_string(proxy.path("weights.history.jsonl")).unwrap();
        assert!(history.contains("\"who\":\"guard\"") && history.contains("error rate"), "{history}");

        // It stays rolled back, even when the backend recovers: no flapping.
        failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(status(&proxy).await["routes"][0]["backends"][1]["weight"], 0.0);
        let out = std::process::Command::new(BIN)
            .args(["status", "--admin", &proxy.admin.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("guard api: ROLLED BACK at") && text.contains("error rate"), "{text}");
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        assert!(sent.load(Ordering::Relaxed) > 50);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramped_guard_rollback_moves_weight_back_gradually() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let failing = Arc::new(AtomicBool::new(true));
        let new = switchable("new", failing.clone()).await;
        let guard = "    guard: { max_error_rate: 0.2, window: 5s, min_requests: 10, rollback: { ramp: 3s } }\n";
        let proxy = Proxy::start(
            &config(&legacy.url(), &new.url(), ", passive_health: { consecutive_failures: 0 }", guard),
            "api: { legacy: 40, new: 60 }\n",
        )
        .await;
        let client = client();
        for i in 0..40 {
            send_on(&client, request(Method::GET, &proxy.url("/api/x"), &[("x-user", &format!("r{i}"))])).await;
        }
        let mut seen = Vec::new();
        eventually(Duration::from_secs(15), Duration::from_millis(50), async || {
            let w = status(&proxy).await["routes"][0]["backends"][1]["weight"].as_f64().unwrap();
            if seen.last() != Some(&w) {
                seen.push(w);
            }
            if w == 0.0 {
                Ok(())
            } else {
                Err(format!("ramp never finished: {seen:?}"))
            }
        })
        .await;
        assert!(seen.len() >= 3, "weight went down in steps, not at once: {seen:?}");
        assert!(seen.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
        let history = std::fs::read_to_string(proxy.path("weights.history.jsonl")).unwrap();
        assert_eq!(history.lines().count(), 1, "one history entry for the ramp: {history}");
    })
    .await;
}

/// Requests with a new user each, one every `gap`, until stopped; records
/// when each 5xx was received.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Instant>>,
}

impl SteadyLoad {
    fn start(proxy: &Proxy, gap: Duration) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url) = (stop.clone(), proxy.url("/api/load"));
        let task = tokio::spawn(async move {
            let client = client();
            let mut errors = Vec::new();
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                i += 1;
                let resp = send_on(&client, request(Method::GET, &url, &[("x-user", &format!("s{i}"))])).await;
                if resp.status.is_server_error() {
                    errors.push(Instant::now());
                }
                tokio::time::sleep(gap).await;
            }
            errors
        });
        SteadyLoad { stop, task }
    }

    async fn finish(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_requests_all_succeed_on_a_retry_elsewhere_is_rolled_back() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let dead = format!("http://{}", dead_addr());
        // No passive ejection: every request the split gives `new` fails to
        // connect and is answered by legacy on the retry, so users see only
        // 200s; the failed attempts are what the guard has to go on.
        let guard = "    guard: { max_error_rate: 0.2, window: 10s, min_requests: 10 }\n";
        let proxy = Proxy::start(
            &config(&legacy.url(), &dead, ", passive_health: { consecutive_failures: 0 }", guard),
            "api: { legacy: 50, new: 50 }\n",
        )
        .await;
        let seen = backends_of(&proxy, &users_on_new(20, 50)).await;
        assert!(seen.iter().all(|(s, b)| *s == 200 && b == "legacy"), "{seen:?}");
        guard_rollback_within(&proxy, Duration::from_secs(10)).await;
        let s = status(&proxy).await;
        let reason = s["routes"][0]["guard"]["last_rollback"]["reason"].as_str().unwrap().to_string();
        assert!(reason.starts_with("guard: backend new error rate 100.0%"), "{reason}");
        assert_eq!(s["routes"][0]["backends"][1]["weight"], 0.0);
    })
    .await;
}

/// Waits (up to `bound`) for the guard to roll `api` back; returns when it did.
async fn guard_rollback_within(proxy: &Proxy, bound: Duration) -> Instant {
    eventually(bound, Duration::from_millis(20), async || {
        let metrics = proxy.metrics().await;
        match metric_value(&metrics, "cutover_rollbacks_total", &[("route", "api"), ("reason", "guard")]) {
            Some(1.0) => Ok(Instant::now()),
            _ => Err(format!(
                "no guard rollback within {bound:?}\n{metrics}\n{}\n{}",
                status(proxy).await["routes"][0]["guard"],
                proxy.stderr_text()
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_that_passive_ejection_keeps_taking_out_is_rolled_back() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = switchable("new", Arc::new(AtomicBool::new(true))).await;
        // Passive ejection at its defaults: 5 failures in a row, 10 s out.
        // Without diverted requests counted, the window would hold at most 5
        // failures per cool-off and never reach min_requests.
        let guard = "    guard: { max_error_rate: 0.2, window: 30s, min_requests: 40 }\n";
        let proxy = Proxy::start(&config(&legacy.url(), &new.url(), "", guard), "api: { legacy: 50, new: 50 }\n").await;
        let load = SteadyLoad::start(&proxy, Duration::from_millis(5));
        let started = Instant::now();
        let rolled_back = guard_rollback_within(&proxy, Duration::from_secs(8)).await;
        println!("rolled back {:.1} s after the load started", (rolled_back - started).as_secs_f64());

        let s = status(&proxy).await;
        let reason = s["routes"][0]["guard"]["last_rollback"]["reason"].as_str().unwrap().to_string();
        assert!(
            reason.starts_with("guard: backend new error rate") && reason.contains("diverted while it was down"),
            "{reason}"
        );
        assert_eq!(s["routes"][0]["backends"][1]["weight"], 0.0);
        let history = std::fs::read_to_string(proxy.path("weights.history.jsonl")).unwrap();
        assert!(history.contains("\"who\":\"guard\"") && history.contains("diverted"), "{history}");
        // It stays rolled back, and users stop seeing errors.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let errors = load.finish().await;
        assert!(errors.iter().all(|&at| at <= rolled_back), "5xx after the rollback");
        assert_eq!(status(&proxy).await["routes"][0]["backends"][1]["weight"], 0.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_ejections_roll_a_quiet_route_back() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = switchable("new", Arc::new(AtomicBool::new(true))).await;
        // Ten requests a second: the default window and min_requests (60 s,
        // 50) would take half a minute; the third ejection decides first.
        let passive = ", passive_health: { consecutive_failures: 2, cool_off: 1s }";
        let guard = "    guard: { max_error_rate: 0.05 }\n";
        let proxy = Proxy::start(&config(&legacy.url(), &new.url(), passive, guard), "api: { legacy: 50, new: 50 }\n").await;
        let load = SteadyLoad::start(&proxy, Duration::from_millis(100));
        guard_rollback_within(&proxy, Duration::from_secs(15)).await;
        let reason = status(&proxy).await["routes"][0]["guard"]["last_rollback"]["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(reason, "guard: backend new ejected 3 times over 1m (max_ejections 3)");
        let errors = load.finish().await;
        assert!(errors.len() >= 6, "three ejections of two failures each: {}", errors.len());
    })
    .await;
}
