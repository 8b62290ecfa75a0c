//! Live control: hot reload under load, ConfigMap swaps, rollback latency,
//! the admin API's checks and tokens, undo, and crash-safe weight writes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn config(legacy: &Upstream, new: &Upstream, admin_extra: &str) -> String {
    format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n\
         \x20 - name: api\n    match: {{ path_prefix: /api/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n    sticky: {{ header: X-User }}\n\
         \x20 - name: auth\n    match: {{ path_prefix: /auth/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n",
        admin_config_head(admin_extra, "{ path: \"off\" }"),
        legacy.url(),
        new.url()
    )
}

fn weights(api_new: u32, auth_new: u32) -> String {
    format!(
        "# the migration table\napi: {{ legacy: {}, new: {api_new} }}\nauth: {{ legacy: {}, new: {auth_new} }}\n",
        100 - api_new,
        100 - auth_new
    )
}

async fn admin_json(proxy: &Proxy, method: Method, path: &str, body: Option<Value>, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.as_deref().map(|a| ("authorization", a)));
    let body = body.map(|v| full(v.to_string())).unwrap_or_else(empty);
    send(with_body(method, &proxy.admin_url(path), &headers, body)).await
}

async fn live_new_weight(proxy: &Proxy, route: &str, token: Option<&str>) -> f64 {
    let w = admin_json(proxy, Method::GET, "/admin/weights", None, token).await.json();
    w[route]["new"].as_f64().unwrap()
}

async fn wait_new_weight(proxy: &Proxy, route: &str, value: f64) {
    eventually(Duration::from_secs(10), Duration::from_millis(10), async || {
        if live_new_weight(proxy, route, None).await == value {
            Ok(())
        } else {
            Err(format!("{route} never reached new={value}; stderr:\n{}", proxy.stderr_text()))
        }
    })
    .await;
}

/// Writes the weight file the way editors, `cp` and careless scripts do.
fn rewrite(path: &Path, text: &str, how: usize) {
    match how % 3 {
        0 => {
            let tmp = path.with_extension("swp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        1 => {
            let src = path.with_extension("src");
            std::fs::write(&src, text).unwrap();
            std::fs::copy(&src, path).unwrap();
        }
        _ => {
            // In place, in two writes: the first half alone is valid YAML
            // with a route missing, which must never be loaded.
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(path).unwrap();
            let cut = text.find("auth:").unwrap();
            f.write_all(&text.as_bytes()[..cut]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5));
            f.write_all(&text.as_bytes()[cut..]).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_rewrites_under_load_drop_nothing_and_reject_the_bad_one() {
    within(150, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let proxy = Proxy::start(&config(&legacy, &new, ""), &weights(0, 30)).await;
        let load = Load::start(proxy.url("/api/items"), 4);
        let path = proxy.path("weights.yaml");
        let probe = client();
        let mut previous = 0;
        let mut valid_writes = 0;
        for i in 0..200usize {
            if i == 100 {
                // A file that parses but does not add up is rejected whole.
                rewrite(&path, "api: { legacy: 50, new: 60 }\nauth: { legacy: 70, new: 30 }\n", i);
                proxy.wait_metric("cutover_config_reloads_total", &[("result", "error")], 1.0).await;
                let status = admin_json(&proxy, Method::GET, "/admin/status", None, None).await.json();
                assert_eq!(status["last_reload"]["result"], "error");
                let error = status["last_reload"]["error"].as_str().unwrap();
                assert!(error.contains("weights.yaml:1:1: weights of route \"api\" sum to 110"), "{error}");
                assert_eq!(
                    live_new_weight(&proxy, "api", None).await,
                    f64::from(previous),
                    "the old table must keep serving"
                );
                continue;
            }
            let mut api_new = ((i * 37) % 101) as u32;
            if api_new == previous {
                api_new = (api_new + 1) % 101;
            }
            rewrite(&path, &weights(api_new, 30), i);
            valid_writes += 1;
            wait_new_weight(&proxy, "api", f64::from(api_new)).await;
            previous = api_new;
            // The split follows the new table at once, for every user.
            for u in 0..4 {
                let user = format!("probe-{i}-{u}");
                let resp = send_on(&probe, request(Method::GET, &proxy.url("/api/x"), &[("x-user", &user)])).await;
                assert_eq!(resp.upstream(), sticky_backend(&user, api_new), "user {user} at new={api_new}");
            }
        }
        let (sent, failed) = load.finish().await;
        assert!(sent > 500, "the load loop ran ({sent} requests)");
        assert_eq!(failed, 0, "{failed} of {sent} requests failed during reloads");
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric_value(&metrics, "cutover_config_reloads_total", &[("result", "error")]),
            Some(1.0)
        );
        // One reload per settled file: no half-written file was ever loaded.
        assert_eq!(
            metric_value(&metrics, "cutover_config_reloads_total", &[("result", "ok")]),
            Some(f64::from(valid_writes)),
            "stderr:\n{}",
            proxy.stderr_text()
        );
        println!("{valid_writes} reloads under load: {sent} requests, {failed} failed");
    })
    .await;
}

/// What the kubelet does on a ConfigMap update: write a new timestamped
/// folder, point `..data_tmp` at it, and rename that over `..data`.
fn publish(root: &Path, generation: u32, config: &str, weights: &str) {
    let data = root.join(format!("..2026_11_22_00_00_0{generation}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("cutover.yaml"), config).unwrap();
    std::fs::write(data.join("weights.yaml"), weights).unwrap();
    std::os::unix::fs::symlink(data.file_name().unwrap(), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
}

#[tokio::test]
async fn configmap_symlink_swaps_are_followed() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&legacy, &new, "");
        publish(dir.path(), 0, &cfg, &weights(10, 0));
        for f in ["cutover.yaml", "weights.yaml"] {
            std::os::unix::fs::symlink(Path::new("..data").join(f), dir.path().join(f)).unwrap();
        }
        let config_path = dir.path().join("cutover.yaml");
        let proxy = Proxy::run(dir, config_path).await;
        wait_new_weight(&proxy, "api", 10.0).await;
        for (generation, api_new) in [(1, 25), (2, 50), (3, 75), (4, 0)] {
            publish(proxy.dir.path(), generation, &cfg, &weights(api_new, 0));
            wait_new_weight(&proxy, "api", f64::from(api_new)).await;
        }
    })
    .await;
}

/// Sends requests as `user` in a loop, recording when each was sent and
/// which backend answered.
fn record_user(url: String, user: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(Instant, String)>> {
    tokio::spawn(async move {
        let client = client();
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let resp = send_on(&client, request(Method::GET, &url, &[("x-user", &user)])).await;
            seen.push((at, resp.upstream().to_string()));
        }
        seen
    })
}

/// Time from `command` to the first request sent after which no request reached `new`.
fn cutoff(seen: &[(Instant, String)], command: Instant) -> Duration {
    let last_new = seen
        .iter()
        .rposition(|(_, b)| b == "new")
        .expect("the user was on new before the rollback");
    let first_safe = seen.get(last_new + 1).expect("requests were sent after the rollback").0;
    first_safe.saturating_duration_since(command)
}

fn user_on_new(api_new: u32) -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| sticky_backend(u, api_new) == "new")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_through_api_cli_and_file_is_immediate_and_persisted() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let proxy = Proxy::start(&config(&legacy, &new, ""), &weights(50, 50)).await;
        let user = user_on_new(50);
        let url = proxy.url("/api/orders");

        // Through the admin API.
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = record_user(url.clone(), user.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let command = Instant::now();
        let resp = admin_json(
            &proxy,
            Method::POST,
            "/admin/rollback",
            Some(json!({"routes": ["api"], "reason": "5xx up"})),
            None,
        )
        .await;
        let answered = command.elapsed();
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.json()["persisted"], true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let seen = recorder.await.unwrap();
        let api_latency = cutoff(&seen, command);
        assert!(seen.iter().filter(|(at, _)| *at >= command + answered).all(|(_, b)| b == "legacy"));
        let file = std::fs::read_to_string(proxy.path("weights.yaml")).unwrap();
        assert!(file.contains("api: { legacy: 100, new: 0 }"), "{file}");
        assert!(file.starts_with("# the migration table\n"), "comments are kept: {file}");
        assert!(file.contains("auth: { legacy: 50, new: 50 }"), "other routes untouched: {file}");
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric_value(&metrics, "cutover_rollbacks_total", &[("route", "api"), ("reason", "manual")]),
            Some(1.0)
        );

        // Through the CLI (which finds the proxy from the config's admin address).
        admin_json(&proxy, Method::PUT, "/admin/weights/auth", Some(json!({"new": 50})), None).await;
        let auth_user = user_on_new(50);
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = record_user(proxy.url("/auth/login/"), auth_user, stop.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let command = Instant::now();
        let out = Command::new(BIN)
            .args(["rollback", "auth", "--admin", &proxy.admin.to_string(), "-c"])
            .arg(&proxy.config_path)
            .output()
            .unwrap();
        let cli_answered = command.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("auth             legacy 100%  new 0%"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let seen = recorder.await.unwrap();
        let cli_latency = cutoff(&seen, command);
        assert!(
            seen.iter()
                .filter(|(at, _)| *at >= command + cli_answered)
                .all(|(_, b)| b == "legacy")
        );

        // Through a file edit.
        admin_json(
            &proxy,
            Method::PUT,
            "/admin/weights/api",
            Some(json!({"legacy": 50, "new": 50})),
            None,
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = record_user(url.clone(), user.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let command = Instant::now();
        rewrite(&proxy.path("weights.yaml"), &weights(0, 0), 0);
        wait_new_weight(&proxy, "api", 0.0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let seen = recorder.await.unwrap();
        let file_latency = cutoff(&seen, command);

        println!(
            "rollback latency (command to first request that cannot reach new): \
             admin API {:.2} ms (answered in {:.2} ms), CLI {:.2} ms (process exited after {:.2} ms), file edit {:.1} ms",
            api_latency.as_secs_f64() * 1e3,
            answered.as_secs_f64() * 1e3,
            cli_latency.as_secs_f64() * 1e3,
            cli_answered.as_secs_f64() * 1e3,
            file_latency.as_secs_f64() * 1e3
        );
        // Generous bounds: the figures above are what is reported.
        assert!(api_latency < Duration::from_secs(1));
        assert!(file_latency < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test]
async fn a_file_edited_back_to_earlier_text_after_a_shift_takes_effect() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let original = weights(50, 50);
        let proxy = Proxy::start(&config(&legacy, &new, ""), &original).await;
        // Let the watcher read the original file once.
        tokio::time::sleep(Duration::from_millis(600)).await;

        let resp = admin_json(&proxy, Method::PUT, "/admin/weights/api", Some(json!({"new": 10})), None).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        // An operator restores the file they kept, before the watcher has
        // looked at the shift's write: the text is the one it already saw.
        rewrite(&proxy.path("weights.yaml"), &original, 0);
        wait_new_weight(&proxy, "api", 50.0).await;
        // The change is logged just after it goes live.
        proxy
            .wait_stderr(Duration::from_secs(2), |l| l.contains("weight file changed"))
            .await;
    })
    .await;
}

#[tokio::test]
async fn bad_bodies_are_refused_without_changing_anything_and_undo_walks_back() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let proxy = Proxy::start(&config(&legacy, &new, ""), &weights(10, 0)).await;
        let version = |s: &Value| s["version"].as_str().unwrap().to_string();
        let before = admin_json(&proxy, Method::GET, "/admin/status", None, None).await.json();
        for (path, body, status, message) in [
            (
                "/admin/weights/api",
                json!({"legacy": 50, "newer": 50}),
                400,
                "route \"api\" has no backend \"newer\"",
            ),
            ("/admin/weights/api", json!({"legacy": 50, "new": 60}), 400, "sum to 110, not 100"),
            ("/admin/weights/api", json!({"new": 10.005}), 400, "more than two decimals"),
            ("/admin/weights/nope", json!({"new": 10}), 404, "unknown route \"nope\""),
            ("/admin/weights/api", json!("fifty"), 400, "expected"),
        ] {
            let resp = admin_json(&proxy, Method::PUT, path, Some(body), None).await;
            assert_eq!(resp.status.as_u16(), status, "{}", resp.text());
            assert!(resp.json()["error"].as_str().unwrap().contains(message), "{}", resp.text());
        }
        let resp = admin_json(&proxy, Method::POST, "/admin/rollback", Some(json!({"routes": ["nope"]})), None).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        let after = admin_json(&proxy, Method::GET, "/admin/status", None, None).await.json();
        assert_eq!(version(&before), version(&after), "a refused change changes nothing");
        assert_eq!(std::fs::read_to_string(proxy.path("weights.yaml")).unwrap(), weights(10, 0));

        for pct in [25, 50] {
            let resp = admin_json(&proxy, Method::PUT, "/admin/weights/api", Some(json!({"new": pct})), None).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        }
        admin_json(&proxy, Method::POST, "/admin/rollback", Some(json!({"all": true})), None).await;
        assert_eq!(live_new_weight(&proxy, "api", None).await, 0.0);
        for expected in [50.0, 25.0, 10.0] {
            let resp = admin_json(&proxy, Method::POST, "/admin/undo", None, None).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
            assert_eq!(live_new_weight(&proxy, "api", None).await, expected);
        }
        let resp = admin_json(&proxy, Method::POST, "/admin/undo", None, None).await;
        assert_eq!(resp.status, StatusCode::CONFLICT);
        assert_eq!(std::fs::read_to_string(proxy.path("weights.yaml")).unwrap(), weights(10, 0));
        assert!(
            proxy.stderr_text().contains("weights changed who=\"127.0.0.1:"),
            "one log line per change"
        );
    })
    .await;
}

/// Undoing an edit of the weight file names the edit's source once, in the
/// log line and in `status`.
#[tokio::test]
async fn undoing_a_weight_file_edit_names_the_file_once() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let proxy = Proxy::start(&config(&legacy, &new, ""), &weights(10, 0)).await;
        rewrite(&proxy.path("weights.yaml"), &weights(30, 0), 0);
        wait_new_weight(&proxy, "api", 30.0).await;
        let status = admin_json(&proxy, Method::GET, "/admin/status", None, None).await.json();
        assert_eq!(status["last_change"]["description"], "weight file changed", "{status:#}");

        let resp = admin_json(&proxy, Method::POST, "/admin/undo", None, None).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(live_new_weight(&proxy, "api", None).await, 10.0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let line = loop {
            let log = proxy.stderr_text();
            if let Some(line) = log.lines().find(|l| l.contains("undo of:")) {
                break line.to_string();
            }
            assert!(Instant::now() < deadline, "no undo logged:\n{log}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(line.contains("what=\"undo of: weight file changed at "), "{line}");
    })
    .await;
}

#[tokio::test]
async fn tokens_guard_mutations_and_open_admin_addresses_need_one() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        std::fs::write(dir.path().join("weights.yaml"), weights(0, 0)).unwrap();
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(&config_path, config(&legacy, &new, "  token_file: token\n")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-c").arg(&config_path);
        let proxy = Proxy::spawn(cmd, dir, config_path.clone()).await;
        let body = Some(json!({"new": 20}));
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer"), Some("")] {
            let resp = admin_json(&proxy, Method::PUT, "/admin/weights/api", body.clone(), token).await;
            assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "token {token:?}");
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        }
        for path in ["/admin/rollback", "/admin/undo"] {
            let resp = admin_json(&proxy, Method::POST, path, Some(json!({"all": true})), None).await;
            assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        assert_eq!(live_new_weight(&proxy, "api", Some("s3cret-token")).await, 0.0);
        assert_eq!(
            admin_json(&proxy, Method::GET, "/admin/status", None, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        let resp = admin_json(&proxy, Method::PUT, "/admin/weights/api", body, Some("s3cret-token")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(live_new_weight(&proxy, "api", Some("s3cret-token")).await, 20.0);
        // The CLI reads the token from the config.
        let out = Command::new(BIN)
            .args(["shift", "api", "new=30", "--admin", &proxy.admin.to_string(), "-c"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(live_new_weight(&proxy, "api", Some("s3cret-token")).await, 30.0);

        // A non-loopback admin address without a token refuses to start.
        let open = tempfile::tempdir().unwrap();
        std::fs::write(open.path().join("weights.yaml"), weights(0, 0)).unwrap();
        let text = config(&legacy, &new, "").replace("addr: \"127.0.0.1:0\"\nweights_file", "addr: \"0.0.0.0:0\"\nweights_file");
        std::fs::write(open.path().join("cutover.yaml"), text).unwrap();
        let out = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(open.path().join("cutover.yaml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cutover.yaml:5:9: admin address is not loopback"), "{stderr}");
    })
    .await;
}

/// A shell loop and its children, killed (SIGKILL) however the test ends.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn kill_group(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-P", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[tokio::test]
async fn killing_a_weight_writer_never_leaves_a_torn_file() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on the admin address, so the CLI edits the file.
        let text = config(&legacy, &new, "").replace(
            "addr: \"127.0.0.1:0\"\nweights_file",
            &format!("addr: \"{}\"\nweights_file", dead_addr()),
        );
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(&config_path, text).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), weights(0, 0)).unwrap();
        let config = cutover::config::Config::load(&config_path).unwrap();
        let script = format!(
            "i=0; while :; do i=$(( (i + 7) % 101 )); {BIN} shift -c {} api new=$i >/dev/null 2>&1; done",
            config_path.display()
        );
        let mut kills = 0;
        for round in 0..25u64 {
            let mut writer = KillOnDrop(
                Command::new("bash")
                    .arg("-c")
                    .arg(&script)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            // Let the writer get at least one write in (however loaded the
            // machine), then kill it at a varying point of a later one.
            let history = dir.path().join("weights.history.jsonl");
            // (The history keeps the last 50 entries: its length stops growing, its text does not.)
            let text = || std::fs::read_to_string(&history).unwrap_or_default();
            let before = text();
            let deadline = Instant::now() + Duration::from_secs(10);
            while text() == before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis((round * 7) % 40)).await;
            // SIGKILL the whole group: the loop and whichever write is under way.
            writer.kill_group();
            kills += 1;
            let text = std::fs::read_to_string(dir.path().join("weights.yaml")).unwrap();
            if let Err(e) = cutover::config::Weights::parse(&dir.path().join("weights.yaml"), &text, &config) {
                panic!("round {round}: torn weight file after a kill: {e}\n{text}");
            }
            assert!(text.contains("auth: "), "round {round}: a route went missing:\n{text}");
        }
        let history = std::fs::read_to_string(dir.path().join("weights.history.jsonl")).unwrap();
        assert!(history.lines().count() > 5, "the writer made progress between kills");
        for line in history.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("torn history line ({e}): {line}"));
        }
        println!("{kills} kills during weight writes: the file parsed after every one");
    })
    .await;
}

/// Puts `make(tmp)`'s creation beside `path`, then renames it over `path`.
fn replace_with(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("new");
    make(&tmp);
    std::fs::rename(&tmp, path).unwrap();
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

async fn reload_errors(proxy: &Proxy) -> f64 {
    proxy
        .metric("cutover_config_reloads_total", &[("result", "error")])
        .await
        .unwrap_or(0.0)
}

/// Polls `last_reload` in `/admin/status` (up to 10 s) until it is `result`
/// with an error containing `error`.
async fn wait_last_reload(proxy: &Proxy, result: &str, error: &str) -> Value {
    eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
        let state = admin_json(proxy, Method::GET, "/admin/status", None, None).await.json()["last_reload"].clone();
        if state["result"] == result && state["error"].as_str().unwrap_or("").contains(error) {
            Ok(state)
        } else {
            Err(format!(
                "last reload never became {result} {error:?}: {state}\nstderr:\n{}",
                proxy.stderr_text()
            ))
        }
    })
    .await
}

async fn served_by(proxy: &Proxy) -> String {
    get_with_user(proxy, "someone").await
}

async fn get_with_user(proxy: &Proxy, user: &str) -> String {
    let resp = send(request(Method::GET, &proxy.url("/api/x"), &[("x-user", user)])).await;
    assert_eq!(resp.status, StatusCode::OK);
    resp.upstream().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_file_replaced_by_a_fifo_blocks_nothing_and_is_reported_once() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let mut proxy = Proxy::start(&config(&legacy, &new, ""), &weights(100, 0)).await;
        let path = proxy.path("weights.yaml");

        replace_with(&path, mkfifo);
        let state = wait_last_reload(&proxy, "error", "weights.yaml: is a FIFO, not a regular file").await;
        assert_eq!(reload_errors(&proxy).await, 1.0, "{state}");
        assert_eq!(served_by(&proxy).await, "new", "the old table keeps serving");
        // Two more polls see the same problem: still shown, not counted again.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(reload_errors(&proxy).await, 1.0, "{}", proxy.stderr_text());
        wait_last_reload(&proxy, "error", "is a FIFO").await;

        // SIGHUP reads it too, reports it, and leaves the process responsive.
        proxy.signal("HUP");
        proxy.wait_metric("cutover_config_reloads_total", &[("result", "error")], 2.0).await;
        let resp = admin_json(&proxy, Method::PUT, "/admin/weights/api", Some(json!({"new": 0})), None).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        // The change wrote a regular file over the FIFO, which the watcher finds good.
        wait_last_reload(&proxy, "ok", "").await;
        assert!(std::fs::read_to_string(&path).unwrap().contains("api: { legacy: 100, new: 0 }"));
        assert_eq!(served_by(&proxy).await, "legacy");

        // With a FIFO in place, SIGTERM still drains and exits.
        replace_with(&path, mkfifo);
        proxy.wait_metric("cutover_config_reloads_total", &[("result", "error")], 3.0).await;
        proxy.signal("TERM");
        let exit = proxy.wait_exit(Duration::from_secs(10)).await.expect("exits after SIGTERM");
        assert!(exit.success(), "{exit:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_endless_binary_and_directory_weight_files_are_rejected_and_reported() {
    within(90, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let original = weights(100, 0);
        let proxy = Proxy::start(&config(&legacy, &new, ""), &original).await;
        let path = proxy.path("weights.yaml");
        let mut errors = 0.0;
        let rejected = async |what: &str, errors: &mut f64| {
            wait_last_reload(&proxy, "error", what).await;
            let now = reload_errors(&proxy).await;
            assert!(now > *errors, "each problem is counted: {now} after {errors}");
            *errors = now;
            assert_eq!(served_by(&proxy).await, "new", "the old table keeps serving");
        };

        let baseline = proxy.rss_kib();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample_peak_rss(proxy.pid(), stop.clone());
        // 50 MiB of comment lines: valid YAML, so only its size can stop it.
        let line = format!("#{}\n", "x".repeat(1022));
        replace_with(&path, |tmp| std::fs::write(tmp, line.repeat(50 * 1024)).unwrap());
        rejected("weights.yaml: is 50 MiB, larger than the 4 MiB limit", &mut errors).await;
        replace_with(&path, |tmp| std::os::unix::fs::symlink("/dev/zero", tmp).unwrap());
        rejected("weights.yaml: is a character device, not a regular file", &mut errors).await;
        // Two polls later nothing has been read.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        stop.store(true, Ordering::SeqCst);
        let peak = peak.await.unwrap();
        assert!(peak < baseline + 16 * 1024, "RSS grew from {baseline} KiB to {peak} KiB");

        replace_with(&path, |tmp| {
            std::fs::write(tmp, b"api: { legacy: 0, new: 100 } # caf\xe9\n").unwrap()
        });
        rejected("weights.yaml: is not UTF-8 at byte 34", &mut errors).await;
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        rejected("weights.yaml: is a directory, not a regular file", &mut errors).await;

        // The very text that is live: nothing to install, but the error is over.
        std::fs::remove_dir(&path).unwrap();
        replace_with(&path, |tmp| std::fs::write(tmp, &original).unwrap());
        wait_last_reload(&proxy, "ok", "").await;
        assert_eq!(served_by(&proxy).await, "new");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_edits_apply_while_a_log_in_the_same_folder_is_written_without_pause() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let config = config(&legacy, &new, "").replace("access_log: { path: \"off\" }", "access_log: { path: access.log }");
        let proxy = Proxy::start(&config, &weights(0, 0)).await;
        // A line in access.log, beside the weight file, every 20 ms or so.
        let load = Load::start(proxy.url("/api/items"), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(std::fs::metadata(proxy.path("access.log")).unwrap().len() > 0);
        rewrite(&proxy.path("weights.yaml"), &weights(100, 0), 0);
        let edited = Instant::now();
        wait_new_weight(&proxy, "api", 100.0).await;
        assert!(edited.elapsed() < Duration::from_secs(4), "applied after {:?}", edited.elapsed());
        let (_, failed) = load.finish().await;
        assert_eq!(failed, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watcher_reads_the_files_only_on_its_poll() {
    use notify::Watcher;
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let proxy = Proxy::start(&config(&legacy, &new, ""), &weights(0, 0)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Every open of the config file in the next 4.5 s: two polls, each
        // reading it until two reads agree.
        let opens = Arc::new(AtomicUsize::new(0));
        let counter = opens.clone();
        let config_path = proxy.config_path.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event
                && matches!(e.kind, notify::EventKind::Access(notify::event::AccessKind::Open(_)))
                && e.paths.contains(&config_path)
            {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
        watcher.watch(proxy.dir.path(), notify::RecursiveMode::NonRecursive).unwrap();
        tokio::time::sleep(Duration::from_millis(4500)).await;
        drop(watcher);
        let opens = opens.load(Ordering::SeqCst);
        assert!((1..=8).contains(&opens), "the config file was opened {opens} times");
    })
    .await;
}
