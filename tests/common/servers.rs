//! Backends on 127.0.0.1:0, running on the test's runtime: hyper servers
//! that answer with a handler ([`Upstream`]), one that also records every
//! request and every byte it receives ([`Recorder`]), and raw sockets that
//! misbehave on purpose.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::{Body, eventually, full, read_head, zeros};

type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// Every byte a backend has read from its connections.
type RawLog = Arc<Mutex<Vec<u8>>>;

// ---------------------------------------------------------------- HTTP backends

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
        Upstream::serve(name, Arc::new(move |req| Box::pin(handler(req))), None).await
    }

    /// Serves with `handler`, copying every byte read into `raw` if given.
    async fn serve(name: &str, handler: Handler, raw: Option<RawLog>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let counter = counter.clone();
                let io = Tee {
                    inner: stream,
                    log: raw.clone(),
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
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

// ---------------------------------------------------------------- the recording backend

/// One request as a recording backend parsed it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body, or the error that cut it short.
    pub body: Result<Vec<u8>, String>,
}

impl Recorded {
    /// Every value of header `name` (lower case), as sent.
    pub fn headers(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_slice()).collect()
    }

    /// Every value of header `name`, as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers(name)
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The single value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.headers(name);
        assert!(all.len() <= 1, "{name} sent {} times: {self:?}", all.len());
        all.first().map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every header cutover reserves (`X-Cutover-*`) that reached the backend.
    pub fn reserved(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-cutover-"))
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// The body as text; empty when it was cut short.
    pub fn body_text(&self) -> String {
        self.body.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned()
    }

    /// The framing a backend must be able to trust: never both kinds.
    pub fn assert_framing_unambiguous(&self) {
        assert!(
            self.headers("content-length").is_empty() || self.headers("transfer-encoding").is_empty(),
            "backend got both Content-Length and Transfer-Encoding: {self:?}"
        );
        assert!(self.headers("content-length").len() <= 1, "several Content-Length: {self:?}");
    }
}

/// An HTTP/1.1 backend that keeps every request it parsed ([`Recorded`])
/// and every byte it read, so a test proves both what a client got and
/// what reached the backend.
#[derive(Clone)]
pub struct Recorder {
    pub upstream: Arc<Upstream>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    raw: RawLog,
}

impl Recorder {
    /// Answers request N (counting from 1) with `seen N`.
    pub async fn start() -> Recorder {
        Recorder::answering("recorder", |_, n| Response::new(full(format!("seen {n}")))).await
    }

    /// Answers each request with `reply(request, N)`, N counting from 1.
    pub async fn answering(name: &str, reply: impl Fn(&Recorded, usize) -> Response<Body> + Send + Sync + 'static) -> Recorder {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let raw = RawLog::default();
        let reply = Arc::new(reply);
        let log = requests.clone();
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let (log, reply) = (log.clone(), reply.clone());
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes().to_vec()).map_err(|e| e.to_string());
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect(),
                    body,
                };
                let n = {
                    let mut all = log.lock().unwrap();
                    all.push(recorded.clone());
                    all.len()
                };
                reply(&recorded, n)
            })
        });
        let upstream = Upstream::serve(name, handler, Some(raw.clone())).await;
        Recorder {
            upstream: Arc::new(upstream),
            requests,
            raw,
        }
    }

    pub fn url(&self) -> String {
        self.upstream.url()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests whose body arrived whole: what a backend application would act on.
    pub fn complete(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.body.is_ok()).collect()
    }

    /// Every byte received, on every connection.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).into_owned()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
        self.raw.lock().unwrap().clear();
    }

    /// Waits (up to 5 s) until `n` requests were recorded; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        eventually(Duration::from_secs(5), Duration::from_millis(10), async || {
            let seen = self.requests();
            if seen.len() >= n {
                Ok(seen)
            } else {
                Err(format!("{} of {n} requests recorded: {seen:#?}", seen.len()))
            }
        })
        .await
    }
}

/// Gives a backend time to record a request the proxy may still be forwarding.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// A socket that copies every byte read into a log, if it has one.
struct Tee {
    inner: TcpStream,
    log: Option<RawLog>,
}

impl AsyncRead for Tee {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(log)) = (&polled, &self.log) {
            log.lock().unwrap().extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Tee {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------- raw backends

/// Accepts connections and never answers; the sockets stay open.
pub async fn hanging_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move { read_until_closed(&mut stream).await });
        }
    });
    addr
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

/// A backend that reads each request head and answers with `reply(n)` (n
/// counts connections from 0), then closes the connection or, with
/// `keep_open`, waits for the proxy to close it.
pub async fn raw_backend(reply: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static, keep_open: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let bytes = reply(n);
            n += 1;
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream.write_all(&bytes).await;
                if keep_open {
                    read_until_closed(&mut stream).await;
                }
            });
        }
    });
    addr
}

/// Reads and drops whatever arrives until the peer closes.
async fn read_until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// An address with nothing listening on it, for as long as the tests run:
/// its port stays bound (never listening, so connecting is refused), and no
/// other test's listener can be given it, as one could a port let go.
pub fn dead_addr() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(socket);
    addr
}

/// A port free when asked, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
