//! Shared helpers for the integration tests: real upstream servers on
//! loopback, the real `cutover` binary, and small HTTP clients.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod etcd;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpConnector, Body>;
/// Request headers as (name, value) pairs.
pub type Headers<'a> = &'a [(&'a str, &'a str)];

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cutover");

/// Runs `fut`, failing the test if it takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {secs}s"),
    }
}

// ---------------------------------------------------------------- bodies

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

/// A body of `total` zero bytes produced lazily in `chunk`-sized frames.
pub fn zeros(total: usize, chunk: usize) -> Body {
    let block = Bytes::from(vec![0u8; chunk]);
    let frames = futures_util::stream::iter((0..total.div_ceil(chunk)).map(move |i| {
        let len = chunk.min(total - i * chunk);
        Ok::<_, BoxError>(Frame::data(block.slice(..len)))
    }));
    StreamBody::new(frames).boxed()
}

// ---------------------------------------------------------------- upstreams

type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// A real HTTP/1.1 server on 127.0.0.1:0, running on the test's runtime.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Serves every request with `handler`.
    pub async fn with<F, Fut>(name: &str, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
        }
    }

    /// Answers with JSON describing the request it saw (see [`Seen`]), and
    /// an `x-upstream: <name>` header.
    pub async fn echo(name: &str) -> Upstream {
        let n = name.to_string();
        Upstream::with(name, move |req| echo_response(n.clone(), req)).await
    }

    /// Like [`Upstream::echo`], after waiting `delay` before answering.
    pub async fn slow(name: &str, delay: Duration) -> Upstream {
        let n = name.to_string();
        Upstream::with(name, move |req| {
            let n = n.clone();
            async move {
                tokio::time::sleep(delay).await;
                echo_response(n, req).await
            }
        })
        .await
    }

    /// Streams `total` zero bytes (no Content-Length) in 64 KiB frames, or
    /// as many as a `bytes=N` query asks for.
    pub async fn streaming(name: &str, total: usize) -> Upstream {
        Upstream::with(name, move |req| async move {
            let total = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(total);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(zeros(total, 64 * 1024))
                .unwrap()
        })
        .await
    }

    /// Reads the whole request body frame by frame and answers with its length.
    pub async fn counting(name: &str) -> Upstream {
        Upstream::with(name, move |req| async move {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => {
                        return Response::builder().status(500).body(full(format!("body error: {e}"))).unwrap();
                    }
                }
            }
            Response::new(full(n.to_string()))
        })
        .await
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Accepts connections and never answers; the sockets stay open.
pub async fn hanging_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
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
pub fn sample_peak_rss(pid: u32, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<u64> {
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

/// Reads from `stream` until the end of a request head (`\r\n\r\n`);
/// `None` when the peer closes first.
pub async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

/// Reads the request head, then closes the connection without answering.
pub async fn closing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                drop(stream);
            });
        }
    });
    addr
}

/// An address with nothing listening on it.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The JSON an echo upstream answers with.
pub async fn echo_response(name: String, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let seen = json!({
        "backend": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(full(seen.to_string()))
        .unwrap()
}

/// What an echo upstream saw, parsed from its answer.
#[derive(Debug, Clone)]
pub struct Seen(pub Value);

impl Seen {
    pub fn backend(&self) -> &str {
        self.0["backend"].as_str().unwrap()
    }
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap()
    }
    /// Path and query as received.
    pub fn uri(&self) -> &str {
        self.0["uri"].as_str().unwrap()
    }
    pub fn version(&self) -> &str {
        self.0["version"].as_str().unwrap()
    }
    pub fn body(&self) -> &str {
        self.0["body"].as_str().unwrap()
    }
    /// Every value of header `name` (lower case).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
    /// The single value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.headers(name);
        assert!(all.len() <= 1, "{name} sent more than once: {all:?}");
        all.into_iter().next()
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"].as_object().unwrap().keys().cloned().collect()
    }
}

// ---------------------------------------------------------------- the proxy

/// The `cutover` binary running with a config written to a temporary folder.
pub struct Proxy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Listener name → bound address, in the order they were logged.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Writes `config` as `cutover.yaml` and `weights` as `weights.yaml`
    /// into a fresh folder and runs `cutover run -c cutover.yaml`.
    pub async fn start(config: &str, weights: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weights.yaml"), weights).unwrap();
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-c").arg(&config_path);
        Proxy::spawn(cmd, dir, config_path).await
    }

    /// Runs an arbitrary `cutover` command line that starts listeners.
    pub async fn spawn(mut cmd: Command, dir: tempfile::TempDir, config_path: PathBuf) -> Proxy {
        cmd.env("RUST_LOG", "info")
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
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = proxy.stderr.lock().unwrap().clone();
            let admin = lines.iter().find(|l| l.contains("admin listening")).and_then(|l| field(l, "addr="));
            if let Some(admin) = admin {
                proxy.admin = admin.parse().expect("admin address");
                for l in lines.iter().filter(|l| l.contains("listening listener=")) {
                    let name = field(l, "listener=").unwrap();
                    let addr = field(l, "addr=").unwrap().parse().expect("listener address");
                    proxy.listeners.push((name.to_string(), addr));
                }
                assert!(!proxy.listeners.is_empty(), "no listener line: {lines:#?}");
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("cutover exited early with {status}: {lines:#?}");
            }
            if Instant::now() > deadline {
                panic!("cutover did not report its listeners within 10s: {lines:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        let resp = get(&format!("http://{}/metrics", self.admin)).await;
        assert_eq!(resp.status, StatusCode::OK);
        resp.text()
    }

    /// Polls /metrics until `metric` with `labels` has `value`.
    pub async fn wait_metric(&self, metric: &str, labels: &[(&str, &str)], value: f64) {
        self.wait_metric_until(metric, labels, &format!("== {value}"), |v| v == value).await;
    }

    /// Polls /metrics (up to 10 s) until `metric` with `labels` satisfies
    /// `pred`; returns the value.
    pub async fn wait_metric_until(&self, metric: &str, labels: &[(&str, &str)], what: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if let Some(v) = metric_value(&text, metric, labels)
                && pred(v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{metric}{labels:?} never became {what}:\n{text}\nstderr:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size of the proxy in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("VmRSS in /proc/PID/status")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until stdout has a line for which `pred` holds, and returns it.
    pub async fn wait_stdout(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no matching stdout line; stdout: {:#?}",
                self.stdout_lines()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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

/// The value after `key` up to the next space in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

/// The standard head of a test config: one listener and the admin API on
/// ephemeral loopback ports, `weights.yaml`, and the given access log.
pub fn config_head(access_log: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: \"127.0.0.1:0\"\n\
         admin:\n  addr: \"127.0.0.1:0\"\n\
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

// ---------------------------------------------------------------- clients

/// A keep-alive HTTP/1.1 client with a bounded pool.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(32).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn seen(&self) -> Seen {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        Seen(self.json())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// The `x-upstream` header set by test upstreams.
    pub fn upstream(&self) -> &str {
        self.header("x-upstream").unwrap_or("<none>")
    }
}

/// Sends `req` on `client` and reads the whole response (10 s limit).
pub async fn send_on(client: &HttpClient, req: Request<Body>) -> Resp {
    let fut = async {
        let resp = client.request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("response within 10s")
}

pub async fn send(req: Request<Body>) -> Resp {
    send_on(&client(), req).await
}

pub async fn get(url: &str) -> Resp {
    send(request(Method::GET, url, &[])).await
}

/// A bodiless request with the given headers.
pub fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

/// Writes `raw` to a new connection to `addr` and reads until the peer
/// closes (5 s limit). Send `Connection: close` to end a good exchange.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("raw exchange within 5s")
}

/// Splits a raw HTTP/1.1 response into status code, headers (lower-case
/// names) and body (chunked bodies decoded).
pub fn parse_raw_response(raw: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, headers, body)
}

// ---------------------------------------------------------------- metrics

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => {
                let (n, r) = line.split_once(' ').unwrap();
                (n, r)
            }
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = 0;
            loop {
                // name="value" pairs separated by commas, ending with '}'.
                let mut key = String::new();
                let mut done = false;
                for (i, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            end = i;
                            done = true;
                            break;
                        }
                        ',' | ' ' => {}
                        c => key.push(c),
                    }
                }
                if done {
                    break;
                }
                let mut value = String::new();
                chars.next(); // opening quote
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (true, 'n') => {
                            value.push('\n');
                            escaped = false
                        }
                        (true, c) => {
                            value.push(c);
                            escaped = false
                        }
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        (false, c) => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
            body[end + 1..].trim()
        } else {
            rest.trim()
        };
        let value = value_text
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels include all of `labels`
/// (summed when several match).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}
