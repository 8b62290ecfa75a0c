//! The real `cutover` binary: configs written to a temporary folder, the
//! process started with `--ready-file` and its addresses read from that
//! file, its output kept for assertions, and `cutover check`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use super::{BIN, eventually, get, metric_value};

/// The `cutover` binary running with a config written to a temporary folder.
pub struct Proxy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Listener name → bound address, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Where the proxy announced its addresses (`--ready-file`).
    pub ready_file: PathBuf,
    /// Holds the ready file, apart from the config folder the proxy watches.
    _ready_dir: tempfile::TempDir,
}

impl Proxy {
    /// Writes `config` as `cutover.yaml` and `weights` as `weights.yaml`
    /// into a fresh folder and runs `cutover run -c cutover.yaml`.
    pub async fn start(config: &str, weights: &str) -> Proxy {
        Proxy::start_in(tempfile::tempdir().unwrap(), config, weights).await
    }

    /// Like [`Proxy::start`], in `dir`, which may hold other files the
    /// config names (certificates, token files).
    pub async fn start_in(dir: tempfile::TempDir, config: &str, weights: &str) -> Proxy {
        std::fs::write(dir.path().join("weights.yaml"), weights).unwrap();
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(&config_path, config).unwrap();
        Proxy::run(dir, config_path).await
    }

    /// Runs `cutover run -c config_path` on files already in place.
    pub async fn run(dir: tempfile::TempDir, config_path: PathBuf) -> Proxy {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-c").arg(&config_path);
        Proxy::spawn(cmd, dir, config_path).await
    }

    /// Runs a `cutover` command line that starts listeners and takes
    /// `--ready-file` (`run`, `demo`); returns once the ready file names
    /// the bound addresses.
    pub async fn spawn(mut cmd: Command, dir: tempfile::TempDir, config_path: PathBuf) -> Proxy {
        let ready_dir = tempfile::tempdir().unwrap();
        let ready_file = ready_dir.path().join("ready.json");
        cmd.arg("--ready-file")
            .arg(&ready_file)
            .env("RUST_LOG", "info")
            .env_remove("RUST_LOG_STYLE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cutover");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain_lines(child.stdout.take().unwrap(), stdout.clone());
        drain_lines(child.stderr.take().unwrap(), stderr.clone());
        let mut proxy = Proxy {
            child,
            dir,
            config_path,
            listeners: Vec::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            stdout,
            stderr,
            ready_file,
            _ready_dir: ready_dir,
        };
        let ready = eventually(Duration::from_secs(10), Duration::from_millis(10), async || {
            if let Ok(text) = std::fs::read_to_string(&proxy.ready_file) {
                return Ok(serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("ready file ({e}): {text:?}")));
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("cutover exited early with {status}: {}", proxy.stderr_text());
            }
            Err(format!("cutover did not write its ready file within 10s: {}", proxy.stderr_text()))
        })
        .await;
        assert_eq!(ready["pid"], proxy.pid(), "{ready}");
        proxy.admin = ready["admin"].as_str().and_then(|a| a.parse().ok()).expect("admin address");
        for listener in ready["listeners"].as_array().expect("listeners") {
            let name = listener["name"].as_str().expect("listener name");
            let addr = listener["addr"].as_str().and_then(|a| a.parse().ok()).expect("listener address");
            proxy.listeners.push((name.to_string(), addr));
        }
        assert!(!proxy.listeners.is_empty(), "no listener: {ready}");
        proxy
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
            .1
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Replaces the weight file atomically (write a temporary file, rename),
    /// so a file watcher never sees it half-written.
    pub fn write_weights(&self, text: &str) {
        let tmp = self.path(".weights.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path("weights.yaml")).unwrap();
    }

    /// Sends a signal (`HUP`, `TERM`, `INT`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// GET /metrics on the admin listener.
    pub async fn metrics(&self) -> String {
        let resp = get(&self.admin_url("/metrics")).await;
        assert_eq!(resp.status, StatusCode::OK);
        resp.text()
    }

    /// The value of `metric` with `labels` now (see [`metric_value`]).
    pub async fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, metric, labels)
    }

    /// Polls /metrics until `metric` with `labels` has `value`.
    pub async fn wait_metric(&self, metric: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_metric_until(metric, labels, &format!("== {value}"), |v| v == value).await;
    }

    /// Polls /metrics (up to 10 s) until `metric` with `labels` satisfies
    /// `pred`; returns the value.
    pub async fn wait_metric_until(&self, metric: &str, labels: &[(&str, &str)], what: &str, pred: impl Fn(f64) -> bool) -> f64 {
        eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
            let text = self.metrics().await;
            match metric_value(&text, metric, labels) {
                Some(v) if pred(v) => Ok(v),
                _ => Err(format!(
                    "{metric}{labels:?} never became {what}:\n{text}\nstderr:\n{}",
                    self.stderr_text()
                )),
            }
        })
        .await
    }

    /// Resident set size of the proxy in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("VmRSS in /proc/PID/status")
    }

    /// Peak RSS growth (KiB) of the proxy while `fut` runs, sampled every 5 ms.
    pub async fn rss_growth_during<F: std::future::Future>(&self, fut: F) -> (u64, F::Output) {
        let base = self.rss_kib();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_peak_rss(self.pid(), stop.clone());
        let out = fut.await;
        stop.store(true, Ordering::SeqCst);
        let peak = sampler.await.unwrap().max(self.rss_kib());
        (peak.saturating_sub(base), out)
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (up to 5 s) until stdout has a line for which `pred` holds, and returns it.
    pub async fn wait_stdout(&self, pred: impl Fn(&str) -> bool) -> String {
        wait_line("stdout", &self.stdout, Duration::from_secs(5), pred).await
    }

    /// Waits (up to `limit`) until the log (stderr) has a line for which
    /// `pred` holds, and returns it. Log lines reach the test a moment after
    /// the proxy wrote them.
    pub async fn wait_stderr(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        wait_line("stderr", &self.stderr, limit, pred).await
    }
}

async fn wait_line(stream: &str, lines: &Mutex<Vec<String>>, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    eventually(limit, Duration::from_millis(10), async || {
        let lines = lines.lock().unwrap().clone();
        lines
            .iter()
            .find(|l| pred(l))
            .cloned()
            .ok_or_else(|| format!("no matching {stream} line; {stream}: {lines:#?}"))
    })
    .await
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain_lines<R: std::io::Read + Send + 'static>(from: R, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string();
                    into.lock().unwrap().push(text);
                }
            }
        }
    });
}

/// The standard head of a test config: one listener and the admin API on
/// ephemeral loopback ports, `weights.yaml`, and the given access log.
pub fn config_head(access_log: &str) -> String {
    admin_config_head("", access_log)
}

/// Like [`config_head`], with `admin_extra` (indented lines) added to the
/// `admin:` block.
pub fn admin_config_head(admin_extra: &str, access_log: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: \"127.0.0.1:0\"\n\
         admin:\n  addr: \"127.0.0.1:0\"\n{admin_extra}\
         weights_file: weights.yaml\n\
         access_log: {access_log}\n"
    )
}

/// Runs `cutover check -c path`; returns (success, stdout, stderr).
pub fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run cutover check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// VmRSS of process `pid` in KiB.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak RSS (KiB) of `pid` sampled every 5 ms until `stop` is set.
pub fn sample_peak_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::SeqCst) {
            if let Some(kib) = rss_kib_of(pid) {
                peak = kib.max(peak);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    })
}

/// The parity report of route `api`, as `/admin/parity` gives it.
pub async fn parity(proxy: &Proxy) -> Value {
    let resp = get(&proxy.admin_url("/admin/parity?route=api")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp.json()["routes"][0].clone()
}

/// Waits until route `api` has `n` mirror outcomes of any kind; its report.
pub async fn wait_outcomes(proxy: &Proxy, n: u64) -> Value {
    eventually(Duration::from_secs(15), Duration::from_millis(20), async || {
        let report = parity(proxy).await;
        let total: u64 = report["outcomes"]
            .as_object()
            .map(|o| o.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        if total >= n {
            Ok(report)
        } else {
            Err(format!("only {total} of {n} mirror outcomes: {report:#}"))
        }
    })
    .await
}
