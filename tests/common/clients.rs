//! HTTP clients: a pooled hyper client, requests, and responses read whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

use super::{Body, Seen, empty};

pub type HttpClient = Client<HttpConnector, Body>;

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
    with_body(method, url, headers, empty())
}

/// A request with the given headers and body.
pub fn with_body(method: Method, url: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).unwrap()
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`, driven by a
/// task of its own; the handle resolves when the connection ends.
pub async fn h2c(addr: std::net::SocketAddr) -> (hyper::client::conn::http2::SendRequest<Body>, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// Requests sent the whole time by several tasks, each with its own
/// `x-user`; counts those that failed (no 200, or not within 5 s).
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` tasks sending GET `url` one after the other.
    pub fn start(url: String, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let url = url.clone();
                tokio::spawn(async move {
                    let client = client();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let req = request(Method::GET, &url, &[("x-user", &format!("load-{w}-{i}"))]);
                        let ok = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                            Ok(Ok(resp)) => {
                                let status = resp.status();
                                resp.into_body().collect().await.is_ok() && status == StatusCode::OK
                            }
                            _ => false,
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load { stop, sent, failed, tasks }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the tasks; returns (sent, failed).
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}
