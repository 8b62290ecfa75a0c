//! Fleet mode end to end: a real 3-member etcd cluster on loopback and
//! several real `cutover` replicas sharing one weight table.

mod common;

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const PREFIX: &str = "/cutover/shop";

/// The backends every replica of a test's fleet sends to.
struct Backends {
    legacy: Upstream,
    new: Upstream,
}

impl Backends {
    async fn start() -> Backends {
        Backends {
            legacy: Upstream::echo("legacy").await,
            new: Upstream::echo("new").await,
        }
    }
}

/// What a replica's config holds besides its backends and fleet section.
#[derive(Clone, Copy)]
struct Shape {
    /// The `web` route (absent: a replica whose config lacks it).
    web: bool,
    /// Lines added to the `api` route (a guard, a mirror).
    api_extra: &'static str,
    /// Lines added to the `web` route.
    web_extra: &'static str,
}

const FULL: Shape = Shape {
    web: true,
    api_extra: "",
    web_extra: "",
};

fn config(b: &Backends, endpoints: &[String], replica: &str, shape: Shape) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let web = if shape.web {
        format!(
            "  - name: web\n    match: {{ path_prefix: /web/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n{}",
            shape.web_extra
        )
    } else {
        String::new()
    };
    format!(
        "{head}backends:\n  legacy: {{ url: \"{legacy}\" }}\n  new: {{ url: \"{new}\" }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: /api/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n{extra}{web}\
         fleet:\n  etcd:\n    endpoints: [{endpoints}]\n    prefix: {PREFIX}\n  replica_id: {replica}\n",
        head = config_head("{ path: \"off\" }"),
        legacy = b.legacy.url(),
        new = b.new.url(),
        extra = shape.api_extra,
        endpoints = endpoints.join(", "),
    )
}

fn weights(api_new: u32, web_new: u32) -> String {
    format!(
        "# the fleet's table\napi: {{ legacy: {}, new: {api_new} }}\nweb: {{ legacy: {}, new: {web_new} }}\n",
        100 - api_new,
        100 - web_new
    )
}

/// Runs `cutover ARGS` to completion (30 s at most).
async fn cutover(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("cutover finished within 30s")
        .expect("run cutover")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a control command (`shift`, `rollback`, `status` ...) against a replica.
async fn control(replica: &Proxy, args: &[&str]) -> Output {
    let admin = replica.admin.to_string();
    let config = replica.config_path.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--admin", &admin, "-c", &config]);
    cutover(&all).await
}

/// Seeds the fleet with `weights` through `cutover fleet seed`, from a
/// folder of its own.
async fn seed(b: &Backends, etcd: &EtcdCluster, weights: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.yaml");
    std::fs::write(&path, config(b, &etcd.endpoints(), "seeder", FULL)).unwrap();
    std::fs::write(dir.path().join("weights.yaml"), weights).unwrap();
    let out = cutover(&["fleet", "seed", "-c", path.to_str().unwrap()]).await;
    assert!(out.status.success(), "seed failed: {}", text(&out));
}

/// A replica with its own folder, whose weight file is `cache`.
async fn replica(b: &Backends, endpoints: &[String], id: &str, shape: Shape, cache: &str) -> Proxy {
    Proxy::start(&config(b, endpoints, id, shape), cache).await
}

/// A seeded fleet of replicas `ids`, each knowing every etcd member.
async fn fleet(b: &Backends, etcd: &EtcdCluster, ids: &[&str], shape: Shape, table: &str) -> Vec<Proxy> {
    seed(b, etcd, table).await;
    let mut replicas = Vec::new();
    for id in ids {
        replicas.push(replica(b, &etcd.endpoints(), id, shape, table).await);
    }
    replicas
}

async fn served_by(replica: &Proxy, path: &str) -> String {
    get(&replica.url(path)).await.upstream().to_string()
}

async fn wait_served_by(replica: &Proxy, path: &str, backend: &str, limit: Duration) {
    eventually(limit, Duration::from_millis(20), async || match served_by(replica, path).await {
        b if b == backend => Ok(()),
        b => Err(format!(
            "{path} still served by {b}, not {backend}; stderr:\n{}",
            replica.stderr_text()
        )),
    })
    .await;
}

/// Stops a replica cleanly and runs it again on the same files.
async fn restart(mut replica: Proxy) -> Proxy {
    replica.signal("TERM");
    assert!(
        replica.wait_exit(Duration::from_secs(10)).await.is_some(),
        "the replica did not stop"
    );
    let dir = std::mem::replace(&mut replica.dir, tempfile::tempdir().unwrap());
    let config_path = replica.config_path.clone();
    drop(replica);
    Proxy::run(dir, config_path).await
}

/// The `new` share of `route` on `replica`, polled every 5 ms until
/// `stop`: each value seen, in order.
fn watch_weight(replica: &Proxy, route: &'static str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<f64>> {
    let url = replica.admin_url("/admin/weights");
    tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            // Read once more after `stop`: the caller stops us once it has seen
            // the last value, which this loop may not have sampled yet.
            let stopping = stop.load(Ordering::Relaxed);
            let share = get(&url).await.json()[route]["new"].as_f64().unwrap();
            if seen.last() != Some(&share) {
                seen.push(share);
            }
            if stopping {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Waits until `replica` sends `new` percent of `route` to the new backend.
async fn wait_weight(replica: &Proxy, route: &str, new: f64) {
    eventually(Duration::from_secs(30), Duration::from_millis(20), async || {
        let w = admin(replica, Method::GET, "/admin/weights", None).await.json();
        match w[route]["new"].as_f64() {
            Some(share) if share == new => Ok(()),
            other => Err(format!(
                "{route} sends {other:?}% to new, not {new}; stderr:\n{}",
                replica.stderr_text()
            )),
        }
    })
    .await;
}

async fn admin(replica: &Proxy, method: Method, path: &str, body: Option<Value>) -> Resp {
    let body = body.map(|v| full(v.to_string())).unwrap_or_else(empty);
    send(with_body(
        method,
        &replica.admin_url(path),
        &[("content-type", "application/json")],
        body,
    ))
    .await
}

async fn fleet_view(replica: &Proxy) -> Value {
    let resp = admin(replica, Method::GET, "/admin/fleet", None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp.json()
}

async fn status(replica: &Proxy) -> Value {
    admin(replica, Method::GET, "/admin/status", None).await.json()
}

/// The fleet table and history as etcd holds them.
async fn stored(etcd: &EtcdCluster) -> (String, Vec<Value>) {
    let table = etcd.etcdctl(&["get", &format!("{PREFIX}/weights"), "--print-value-only"]).await;
    let history = etcd.etcdctl(&["get", &format!("{PREFIX}/history"), "--print-value-only"]).await;
    let entries = history.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (table, entries)
}

/// Waits until every replica in `view` of `replica` applied `revision`.
async fn wait_converged(replica: &Proxy, replicas: usize) -> Value {
    eventually(Duration::from_secs(20), Duration::from_millis(50), async || {
        let view = fleet_view(replica).await;
        let listed = view["replicas"].as_array().map_or(0, Vec::len);
        if view["converged"] == json!(true) && listed == replicas {
            Ok(view)
        } else {
            Err(format!("the fleet did not converge on {replicas} replicas: {view:#}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_through_one_replica_is_served_by_every_replica_and_wait_returns_once_they_apply_it() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let replicas = fleet(&b, &etcd, &["a", "b", "c"], FULL, &weights(0, 0)).await;
        let [a, rb, c] = &replicas[..] else { unreachable!() };
        for r in &replicas {
            assert_eq!(served_by(r, "/api/x").await, "legacy");
        }
        let seeded = wait_converged(a, 3).await["revision"].as_i64().unwrap();

        let out = control(a, &["shift", "api", "new=100", "--wait", "--timeout", "20"]).await;
        assert!(out.status.success(), "{}", text(&out));
        let said = text(&out);
        assert!(said.contains("all 3 replicas serve revision"), "{said}");
        // Returned once B and C serve it: no waiting here.
        assert_eq!(served_by(rb, "/api/x").await, "new");
        assert_eq!(served_by(c, "/api/x").await, "new");
        assert_eq!(served_by(c, "/web/x").await, "legacy");

        let view = fleet_view(c).await;
        let revision = view["revision"].as_i64().unwrap();
        assert!(revision > seeded, "{view:#}");
        assert_eq!(view["converged"], true, "{view:#}");
        assert_eq!(view["etcd_reachable"], true);
        let mut applied: Vec<(String, i64)> = view["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r["applied_revision"].as_i64().unwrap()))
            .collect();
        applied.sort();
        assert_eq!(applied, [("a".into(), revision), ("b".into(), revision), ("c".into(), revision)]);

        // The fleet table in etcd, the history naming who and where, the
        // cache on every replica.
        let (table, history) = stored(&etcd).await;
        assert!(
            table.contains("api: { legacy: 0, new: 100 }") && table.starts_with("# the fleet's table"),
            "{table}"
        );
        let last = history.last().unwrap();
        assert!(last["who"].as_str().unwrap().ends_with("on replica a"), "{last}");
        assert_eq!(last["why"], "shift api");
        for r in &replicas {
            let cache = std::fs::read_to_string(r.path("weights.yaml")).unwrap();
            assert!(cache.contains("api: { legacy: 0, new: 100 }"), "{cache}");
        }

        // Metrics: the revision each applied, the connection, the replicas seen.
        rb.wait_metric("cutover_fleet_weights_revision", &[], revision as f64).await;
        rb.wait_metric("cutover_fleet_connected", &[], 1.0).await;
        rb.wait_metric("cutover_fleet_replicas", &[], 3.0).await;
        rb.wait_metric("cutover_fleet_pending_writes", &[], 0.0).await;
        rb.wait_metric("cutover_fleet_rejected_total", &[("reason", "skew")], 0.0).await;
        promtool_check(&rb.metrics().await);

        let out = control(c, &["status", "--fleet"]).await;
        let shown = text(&out);
        assert!(
            out.status.success() && shown.contains(&format!("fleet table revision {revision}")),
            "{shown}"
        );
        assert!(shown.contains("converged") && !shown.contains("NOT CONVERGED"), "{shown}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_through_the_cli_against_one_replica_rolls_back_all_and_is_in_the_fleet_history() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let replicas = fleet(&b, &etcd, &["a", "b", "c"], FULL, &weights(100, 100)).await;
        let [a, rb, c] = &replicas[..] else { unreachable!() };
        wait_converged(a, 3).await;

        let out = control(rb, &["rollback", "api", "--reason", "pager", "--wait"]).await;
        assert!(out.status.success(), "{}", text(&out));
        for r in &replicas {
            assert_eq!(served_by(r, "/api/x").await, "legacy");
            assert_eq!(served_by(r, "/web/x").await, "new", "other routes stay");
        }
        let (table, history) = stored(&etcd).await;
        assert!(
            table.contains("api: { legacy: 100, new: 0 }") && table.contains("web: { legacy: 0, new: 100 }"),
            "{table}"
        );
        let last = history.last().unwrap();
        assert_eq!(last["why"], "rollback api: pager");
        assert!(last["who"].as_str().unwrap().ends_with("on replica b"), "{last}");
        assert_eq!(last["before"]["api"]["new"], 100.0);
        assert_eq!(last["after"]["api"]["new"], 0.0);

        // Every replica's status shows the fleet's last change.
        eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
            let s = status(c).await;
            match s["last_change"]["why"].as_str() {
                Some("rollback api: pager") => Ok(()),
                _ => Err(format!("C's status does not show the rollback: {s:#}")),
            }
        })
        .await;
        // Undo through another replica restores what the rollback replaced, fleet-wide.
        let out = control(a, &["undo"]).await;
        assert!(out.status.success(), "{}", text(&out));
        wait_served_by(rb, "/api/x", "new", Duration::from_secs(10)).await;
        wait_served_by(c, "/api/x", "new", Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_shifts_never_lose_an_update() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let replicas = fleet(&b, &etcd, &["a", "b"], FULL, &weights(0, 0)).await;
        let [a, rb] = &replicas[..] else { unreachable!() };
        wait_converged(a, 2).await;

        let mut conflicts = 0;
        for round in 0..10u32 {
            let (x, y) = (round * 2 + 1, round * 2 + 2);
            let (ra, rbb) = tokio::join!(
                admin(a, Method::PUT, "/admin/weights/api", Some(json!({"new": x}))),
                admin(rb, Method::PUT, "/admin/weights/api", Some(json!({"new": y}))),
            );
            let ok: Vec<&Resp> = [&ra, &rbb].into_iter().filter(|r| r.status == StatusCode::OK).collect();
            assert!(!ok.is_empty(), "neither shift won: {} / {}", ra.text(), rbb.text());
            for (r, lost) in [(&ra, &rbb), (&rbb, &ra)] {
                if r.status == StatusCode::CONFLICT {
                    conflicts += 1;
                    // The loser is shown the table that won.
                    let winner = lost.json();
                    assert_eq!(r.json()["current"]["api"], winner["weights"]["api"], "{}", r.text());
                } else {
                    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                }
            }
            // Both replicas settle on what etcd holds.
            wait_converged(a, 2).await;
        }
        assert!(conflicts > 0, "no two shifts ever met: the test proved nothing");
        // No lost update: each change in the history replaced the one before it.
        let (table, history) = stored(&etcd).await;
        let shifts: Vec<&Value> = history.iter().filter(|e| e["why"] == "shift api").collect();
        for pair in shifts.windows(2) {
            assert_eq!(pair[1]["before"], pair[0]["after"], "an update was lost: {:#}", json!(shifts));
        }
        let last = shifts.last().unwrap()["after"]["api"]["new"].as_f64().unwrap();
        assert!(table.contains(&format!("new: {last}")), "{table}");
        for r in &replicas {
            let w = admin(r, Method::GET, "/admin/weights", None).await.json();
            assert_eq!(w["api"]["new"].as_f64(), Some(last));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_go_on_after_the_etcd_leader_is_killed_and_no_replica_steps_back() {
    within(120, async {
        let mut etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let replicas = fleet(&b, &etcd, &["a", "b"], FULL, &weights(0, 0)).await;
        let [a, rb] = &replicas[..] else { unreachable!() };
        wait_converged(a, 2).await;

        // B's table, watched the whole time: never older than one seen before.
        let watcher = {
            let url = rb.admin_url("/admin/weights");
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let task = tokio::spawn(async move {
                let mut seen = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let w = get(&url).await.json();
                    let (api, web) = (w["api"]["new"].as_f64().unwrap(), w["web"]["new"].as_f64().unwrap());
                    if seen.last() != Some(&(api, web)) {
                        seen.push((api, web));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            });
            (stop, task)
        };
        const SHIFTS: u32 = 16;
        for n in 1..=SHIFTS {
            if n == 6 {
                let leader = etcd.leader().await;
                etcd.kill(leader);
            }
            // A shift during the election is refused (503), or lost in a
            // timeout and then refused as a conflict (409) until A has
            // the table: it is tried again.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let both = admin(a, Method::PUT, "/admin/weights/api", Some(json!({"new": n}))).await;
                if both.status == StatusCode::OK {
                    break;
                }
                assert!(
                    matches!(both.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT),
                    "{}",
                    both.text()
                );
                assert!(Instant::now() < deadline, "shift {n} never went through: {}", both.text());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let out = admin(a, Method::PUT, "/admin/weights/web", Some(json!({"new": n}))).await;
            assert!(
                matches!(out.status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT),
                "{}",
                out.text()
            );
        }
        wait_weight(rb, "api", f64::from(SHIFTS)).await;
        let view = wait_converged(a, 2).await;
        let (stop, task) = watcher;
        stop.store(true, Ordering::Relaxed);
        let seen = task.await.unwrap();
        assert_eq!(seen.last().map(|s| s.0), Some(f64::from(SHIFTS)), "{seen:?}");
        // In order, whole: each table B served is one A wrote, none older than the one before.
        for pair in seen.windows(2) {
            assert!(pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1, "B stepped back: {seen:?}");
        }
        assert!(view["revision"].as_i64().unwrap() > 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_traffic_flows_a_rollback_is_local_at_once_a_restart_serves_the_cache_and_the_fleet_follows_when_etcd_returns() {
    within(120, async {
        let mut etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let mut replicas = fleet(&b, &etcd, &["a", "b"], FULL, &weights(0, 0)).await;
        wait_converged(&replicas[0], 2).await;
        // The fleet moves on from the seed: B's cache holds api new=100 now.
        let out = control(&replicas[0], &["shift", "api", "new=100", "--wait"]).await;
        assert!(out.status.success(), "{}", text(&out));

        let old_b = replicas.pop().unwrap();
        let a = &replicas[0];
        let load = Load::start(a.url("/api/items"), 4);
        for member in 0..etcd.size() {
            etcd.stop(member);
        }
        a.wait_metric("cutover_fleet_connected", &[], 0.0).await;
        // What A last saw of the fleet, never claimed to be converged.
        let view = fleet_view(a).await;
        assert_eq!(
            (view["etcd_reachable"].as_bool(), view["converged"].as_bool()),
            (Some(false), Some(false)),
            "{view:#}"
        );
        assert_eq!(view["replicas"].as_array().map(Vec::len), Some(2), "{view:#}");

        // A rollback takes effect at once, and says it is not in etcd yet.
        let started = Instant::now();
        let resp = admin(
            a,
            Method::POST,
            "/admin/rollback",
            Some(json!({"routes": ["api"], "reason": "outage"})),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let answer = resp.json();
        assert_eq!(answer["persisted"], false, "{answer}");
        assert!(
            answer["persist_error"].as_str().unwrap().contains("NOT yet in the fleet table"),
            "{answer}"
        );
        assert_eq!(served_by(a, "/api/x").await, "legacy");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the rollback waited on etcd: {:?}",
            started.elapsed()
        );
        a.wait_metric("cutover_fleet_pending_writes", &[], 1.0).await;
        let s = status(a).await;
        assert_eq!(s["fleet"]["pending_rollbacks"][0]["routes"], json!(["api"]), "{s:#}");
        let out = control(a, &["status"]).await;
        assert!(text(&out).contains("ROLLBACK NOT YET IN ETCD"), "{}", text(&out));
        assert!(text(&out).contains("etcd UNREACHABLE"), "{}", text(&out));
        // A shift cannot be made fleet-wide now: refused, nothing changes.
        let refused = admin(a, Method::PUT, "/admin/weights/web", Some(json!({"new": 50}))).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
        assert_eq!(served_by(a, "/web/x").await, "legacy");

        // B, restarted while etcd is down, serves the fleet table it cached.
        let rb = restart(old_b).await;
        assert_eq!(served_by(&rb, "/api/x").await, "new", "B serves its cache: {}", rb.stderr_text());
        let (sent, failed) = load.finish().await;
        assert!(sent > 50, "too little load to tell: {sent}");
        assert_eq!(failed, 0, "{failed} of {sent} requests failed while etcd was down");

        // A, restarted too, still holds its rollback: it was kept on disk.
        let a = restart(replicas.pop().unwrap()).await;
        assert_eq!(served_by(&a, "/api/x").await, "legacy", "{}", a.stderr_text());
        assert_eq!(status(&a).await["fleet"]["pending_rollbacks"][0]["routes"], json!(["api"]));

        // etcd is back: the rollback reaches the fleet table, and B follows.
        etcd.restart_stopped().await;
        wait_served_by(&rb, "/api/x", "legacy", Duration::from_secs(30)).await;
        a.wait_metric("cutover_fleet_pending_writes", &[], 0.0).await;
        let (table, history) = stored(&etcd).await;
        assert!(table.contains("api: { legacy: 100, new: 0 }"), "{table}");
        let last = history.last().unwrap();
        let why = last["why"].as_str().unwrap();
        assert!(
            why.starts_with("rollback api: outage (held on the replica while etcd was unreachable"),
            "{why}"
        );
        // Once A serves a table holding it, the rollback is no longer kept aside.
        let pending = a.path("weights.fleet-pending.json");
        eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
            match pending.exists() {
                false => Ok(()),
                true => Err(format!("{} is still there", pending.display())),
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_held_while_cut_off_is_written_over_the_newer_fleet_table_and_keeps_other_routes() {
    within(120, async {
        let mut etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        seed(&b, &etcd, &weights(100, 0)).await;
        // A reaches etcd through member 0 only; B through the others.
        let a = replica(&b, &[etcd.endpoint(0)], "a", FULL, &weights(100, 0)).await;
        let rb = replica(&b, &[etcd.endpoint(1), etcd.endpoint(2)], "b", FULL, &weights(100, 0)).await;
        wait_converged(&a, 2).await;

        etcd.stop(0);
        a.wait_metric("cutover_fleet_connected", &[], 0.0).await;
        let resp = admin(&a, Method::POST, "/admin/rollback", Some(json!({"routes": ["api"]}))).await;
        assert_eq!(resp.json()["persisted"], false, "{}", resp.text());
        let stop = Arc::new(AtomicBool::new(false));
        let a_api = watch_weight(&a, "api", stop.clone());
        // Meanwhile the fleet changes: B moves web, and api too.
        for (route, new) in [("web", 40), ("api", 70)] {
            let out = admin(&rb, Method::PUT, &format!("/admin/weights/{route}"), Some(json!({ "new": new }))).await;
            assert_eq!(out.status, StatusCode::OK, "{}", out.text());
        }
        etcd.restart(0).await;
        // The rollback wins on its route; the newer change to web stays.
        wait_weight(&rb, "api", 0.0).await;
        let (table, history) = stored(&etcd).await;
        assert!(
            table.contains("api: { legacy: 100, new: 0 }") && table.contains("web: { legacy: 60, new: 40 }"),
            "{table}"
        );
        let why = history.last().unwrap()["why"].as_str().unwrap().to_string();
        assert!(
            why.contains("WARNING: re-applied over revision") && why.contains("which had changed api"),
            "{why}"
        );
        wait_converged(&a, 2).await;
        let w = admin(&a, Method::GET, "/admin/weights", None).await.json();
        assert_eq!((w["api"]["new"].as_f64(), w["web"]["new"].as_f64()), (Some(0.0), Some(40.0)));
        // A took in B's newer tables with api still rolled back: never a moment on new.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(a_api.await.unwrap(), [0.0]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_trip_on_one_replica_rolls_back_every_replica() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends {
            legacy: Upstream::echo("legacy").await,
            new: Upstream::with("new", |_req| async {
                let mut resp = http::Response::new(full("broken"));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                resp
            })
            .await,
        };
        // api rolls back at once, web in steps over 2 s.
        let shape = Shape {
            web: true,
            api_extra: "    guard: { max_error_rate: 0.2, window: 10s, min_requests: 10 }\n",
            web_extra: "    guard: { max_error_rate: 0.2, window: 10s, min_requests: 10, rollback: { ramp: 2s } }\n",
        };
        let replicas = fleet(&b, &etcd, &["a", "b", "c"], shape, &weights(100, 100)).await;
        let [a, rb, c] = &replicas[..] else { unreachable!() };
        wait_converged(a, 3).await;
        let stop = Arc::new(AtomicBool::new(false));
        let b_web = watch_weight(rb, "web", stop.clone());
        // Only A sees the failures; B and C get no traffic at all (their
        // own guards and ejections stay out of it).
        for _ in 0..15 {
            get(&a.url("/api/x")).await;
            get(&a.url("/web/x")).await;
        }
        for r in [rb, c] {
            wait_weight(r, "api", 0.0).await;
            wait_weight(r, "web", 0.0).await;
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(b_web.await.unwrap(), [100.0, 50.0, 0.0], "B follows each step of A's ramp");
        let (_, history) = stored(&etcd).await;
        let guard: Vec<&Value> = history.iter().filter(|e| e["who"] == "guard on replica a").collect();
        let reasons: Vec<&str> = guard.iter().map(|e| e["why"].as_str().unwrap()).collect();
        assert_eq!(guard.len(), 2, "one entry per rollback, one for the whole ramp: {reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("guard: backend new error rate") && !r.contains("ramp")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.ends_with("(ramp step 1/2)")), "{reasons:?}");
        a.wait_metric("cutover_rollbacks_total", &[("route", "api"), ("reason", "guard")], 1.0)
            .await;
        a.wait_metric("cutover_rollbacks_total", &[("route", "web"), ("reason", "guard")], 1.0)
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_the_fleet_when_its_lease_expires_and_a_stopped_one_at_once() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let mut replicas = fleet(&b, &etcd, &["a", "b", "c"], FULL, &weights(0, 0)).await;
        wait_converged(&replicas[0], 3).await;
        let ids = async |r: &Proxy| -> Vec<String> {
            let view = fleet_view(r).await;
            let mut ids: Vec<String> = view["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        // SIGKILL: nothing is cleaned up; the lease (5 s) runs out.
        let killed = replicas.pop().unwrap();
        let at = Instant::now();
        drop(killed);
        eventually(Duration::from_secs(15), Duration::from_millis(100), async || {
            match ids(&replicas[0]).await {
                ids if ids == ["a", "b"] => Ok(()),
                ids => Err(format!("c is still listed: {ids:?}")),
            }
        })
        .await;
        assert!(
            at.elapsed() >= Duration::from_secs(2),
            "gone before its lease could expire: {:?}",
            at.elapsed()
        );
        // A clean stop removes the registration at once.
        let stopping = replicas.pop().unwrap();
        stopping.signal("TERM");
        let at = Instant::now();
        eventually(
            Duration::from_secs(3),
            Duration::from_millis(50),
            async || match ids(&replicas[0]).await {
                ids if ids == ["a"] => Ok(()),
                ids => Err(format!("b is still listed: {ids:?}")),
            },
        )
        .await;
        assert!(at.elapsed() < Duration::from_secs(3));
        replicas[0].wait_metric("cutover_fleet_replicas", &[], 1.0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_config_lacks_a_route_of_the_fleet_table_refuses_it_and_reports_skew() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        seed(&b, &etcd, &weights(0, 50)).await;
        let a = replica(&b, &etcd.endpoints(), "a", FULL, &weights(0, 50)).await;
        let narrow = Shape { web: false, ..FULL };
        let cache = "api: { legacy: 100, new: 0 }\n";
        let rb = replica(&b, &etcd.endpoints(), "b", narrow, cache).await;
        rb.wait_metric("cutover_fleet_rejected_total", &[("reason", "skew")], 1.0).await;
        let s = status(&rb).await;
        let refused = &s["fleet"]["rejected"];
        assert_eq!(refused["reason"], "skew", "{s:#}");
        assert!(refused["error"].as_str().unwrap().contains("unknown route \"web\""), "{s:#}");
        assert!(rb.stderr_text().contains("fleet table refused"), "{}", rb.stderr_text());

        let view = fleet_view(&a).await;
        assert_eq!(view["converged"], false, "{view:#}");
        assert_eq!(view["rejected"][0]["id"], "b", "{view:#}");
        let shown = text(&control(&a, &["status", "--fleet"]).await);
        assert!(shown.contains("NOT CONVERGED") && shown.contains("REJECTED by b"), "{shown}");
        assert!(text(&control(&rb, &["status"]).await).contains("CONFIG SKEW"));

        // Changes through the skewed replica are refused, saying why.
        let refused = admin(&rb, Method::PUT, "/admin/weights/api", Some(json!({"new": 5}))).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
        assert!(
            refused.text().contains("this replica refused the fleet table"),
            "{}",
            refused.text()
        );
        // A shift the skewed replica cannot take: --wait names it.
        let out = control(&a, &["shift", "api", "new=100", "--wait", "--timeout", "10"]).await;
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("replica b refused the fleet table"), "{}", text(&out));
        assert_eq!(served_by(&rb, "/api/x").await, "legacy", "B keeps its table");

        // B's config gains the route: B takes the fleet table.
        std::fs::write(&rb.config_path, config(&b, &etcd.endpoints(), "b", FULL)).unwrap();
        wait_served_by(&rb, "/api/x", "new", Duration::from_secs(15)).await;
        wait_converged(&a, 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseeded_fleet_serves_the_weight_file_says_so_and_follows_once_seeded() {
    within(60, async {
        let etcd = EtcdCluster::start(3).await;
        let b = Backends::start().await;
        let a = replica(&b, &etcd.endpoints(), "a", FULL, &weights(100, 0)).await;
        assert_eq!(served_by(&a, "/api/x").await, "new");
        let s = status(&a).await;
        assert_eq!(s["fleet"]["unseeded"], true, "{s:#}");
        assert!(text(&control(&a, &["status"]).await).contains("UNSEEDED"));
        let refused = admin(&a, Method::PUT, "/admin/weights/api", Some(json!({"new": 0}))).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
        assert!(refused.text().contains("cutover fleet seed"), "{}", refused.text());

        seed(&b, &etcd, &weights(0, 0)).await;
        wait_served_by(&a, "/api/x", "legacy", Duration::from_secs(10)).await;
        // Undoing the seed leaves the seeded table.
        let undone = admin(&a, Method::POST, "/admin/undo", Some(json!({}))).await;
        assert_eq!(undone.status, StatusCode::OK, "{}", undone.text());
        assert_eq!(served_by(&a, "/api/x").await, "legacy");
        // With no replica answering, the CLI does not edit the weight file:
        // in fleet mode it only caches the fleet table.
        let before = std::fs::read_to_string(a.path("weights.yaml")).unwrap();
        let config_path = a.config_path.display().to_string();
        let out = cutover(&["shift", "api", "new=5", "-c", &config_path, "--admin", "127.0.0.1:1"]).await;
        assert!(
            !out.status.success() && text(&out).contains("in fleet mode a change goes through a running replica"),
            "{}",
            text(&out)
        );
        assert_eq!(std::fs::read_to_string(a.path("weights.yaml")).unwrap(), before);
        // A second seed does not overwrite the fleet's table.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cutover.yaml");
        std::fs::write(&path, config(&b, &etcd.endpoints(), "seeder", FULL)).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), weights(100, 100)).unwrap();
        let out = cutover(&["fleet", "seed", "-c", path.to_str().unwrap()]).await;
        assert!(!out.status.success() && text(&out).contains("--force"), "{}", text(&out));
        let out = cutover(&["fleet", "seed", "-c", path.to_str().unwrap(), "--force"]).await;
        assert!(out.status.success(), "{}", text(&out));
        wait_served_by(&a, "/web/x", "new", Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parity_gate_and_report_sum_every_replica() {
    within(90, async {
        let etcd = EtcdCluster::start(3).await;
        // Both answer alike: every comparison is clean.
        let alike = |name: &'static str| {
            Upstream::with(name, |_req| async {
                let mut resp = http::Response::new(full("{\"ok\": true}"));
                resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                resp
            })
        };
        let b = Backends {
            legacy: alike("legacy").await,
            new: alike("new").await,
        };
        let shape = Shape {
            api_extra: "    mirror: { to: new, min_clean_share: 0.9 }\n",
            ..FULL
        };
        let replicas = fleet(&b, &etcd, &["a", "b"], shape, &weights(0, 0)).await;
        let [a, rb] = &replicas[..] else { unreachable!() };
        wait_converged(a, 2).await;
        let shift = async || admin(a, Method::PUT, "/admin/weights/api", Some(json!({"new": 10}))).await;
        let refused = shift().await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
        assert!(refused.text().contains("not measured yet"), "{}", refused.text());

        // Only B sees traffic, all of it compared clean.
        for _ in 0..30 {
            get(&rb.url("/api/x")).await;
        }
        eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
            let p = admin(rb, Method::GET, "/admin/parity", None).await.json();
            match p["routes"][0]["compared"].as_u64() {
                Some(n) if n >= 30 => Ok(()),
                other => Err(format!("B compared {other:?}")),
            }
        })
        .await;
        let fleet = eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
            let p = admin(a, Method::GET, "/admin/parity?fleet=true", None).await.json();
            match p["routes"][0]["compared"].as_u64() {
                Some(n) if n >= 30 => Ok(p),
                _ => Err(format!("A's fleet parity does not count B's yet: {p:#}")),
            }
        })
        .await;
        assert_eq!(fleet["replicas"], 2);
        assert_eq!(fleet["routes"][0]["clean_share"], 1.0, "{fleet:#}");
        let own = admin(a, Method::GET, "/admin/parity", None).await.json();
        assert_eq!(own["routes"][0]["compared"], 0, "A itself compared nothing: {own:#}");

        // A's gate counts B's comparisons (as listed at most a second ago).
        eventually(Duration::from_secs(5), Duration::from_millis(100), async || match shift().await {
            r if r.status == StatusCode::OK => Ok(()),
            r => Err(format!("the gate still refuses: {}", r.text())),
        })
        .await;
        let out = control(a, &["parity", "--fleet"]).await;
        let shown = text(&out);
        assert!(out.status.success() && shown.contains("summed over 2 live replicas"), "{shown}");
        assert!(shown.contains("100.0% clean (meets the bar of 90.0%"), "{shown}");
    })
    .await;
}
