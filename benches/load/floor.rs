//! The floor of a hyper proxy, for load comparisons: the least a proxy built
//! on hyper can do per request, so a report can tell the cost of cutover's
//! own work from the cost of hyper's HTTP/1 codec and tokio.
//!
//! One current-thread runtime per worker, each with its own `SO_REUSEPORT`
//! socket on the listening address (as cutover serves); every client
//! connection gets one upstream connection of its own, opened with the
//! client's first request, and every request is forwarded over it with one
//! header added (`X-Forwarded-For`). No routing, split, pool, metrics,
//! logging, timeouts or header checks.
//!
//! Usage: `bench-floor LISTEN UPSTREAM [WORKERS]`, e.g.
//! `cargo run --release --example bench-floor -- 127.0.0.1:19141 127.0.0.1:19101 2`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[path = "floor_threads.rs"]
mod floor_threads;

type Body = BoxBody<Bytes, hyper::Error>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn main() -> std::io::Result<()> {
    floor_threads::run("bench-floor", serve_connection)
}

/// The upstream connection of one client connection, opened on first use.
type UpstreamConn = Arc<Mutex<Option<SendRequest<Incoming>>>>;

async fn serve_connection(stream: TcpStream, peer: SocketAddr, upstream: SocketAddr) {
    let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a header value");
    let conn: UpstreamConn = Arc::default();
    let service = service_fn(move |req| forward(req, conn.clone(), upstream, forwarded_for.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn forward(
    mut req: Request<Incoming>,
    conn: UpstreamConn,
    upstream: SocketAddr,
    forwarded_for: HeaderValue,
) -> Result<Response<Body>, hyper::Error> {
    req.headers_mut().insert(X_FORWARDED_FOR.clone(), forwarded_for);
    if !req.headers().contains_key(HOST) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    let mut slot = conn.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        *slot = match connect(upstream).await {
            Ok(sender) => Some(sender),
            Err(_) => return Ok(status(StatusCode::BAD_GATEWAY)),
        };
    }
    let sender = slot.as_mut().expect("connected above");
    if sender.ready().await.is_err() {
        *slot = None;
        return Ok(status(StatusCode::BAD_GATEWAY));
    }
    let response = sender.send_request(req);
    drop(slot);
    match response.await {
        Ok(res) => Ok(res.map(BodyExt::boxed)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut res = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *res.status_mut() = code;
    res
}
