//! A fast upstream for load tests: answers every path with a fixed ~100-byte
//! body, `/64k` with a fixed 65,536-byte body, and `/__stats` with the
//! number of requests each listening address has served (one line per
//! address: `ADDR COUNT`), so a load test can check how a proxy split its
//! traffic.
//!
//! HTTP/1.1 keep-alive (and HTTP/2 prior knowledge, for a direct h2 ceiling)
//! on a multi-threaded tokio runtime.
//!
//! Usage: `bench-upstream [--addr-header] ADDR [ADDR ...]`, e.g.
//! `cargo run --release --example bench-upstream -- 127.0.0.1:19101 127.0.0.1:19102`.
//! With `--addr-header` every response also carries `x-upstream: ADDR`, the
//! listening address that answered, so a client can tell which backend a
//! proxy chose for each request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// 100 bytes: the "small" response.
const SMALL: &[u8] = b"cutover benchmark upstream: a small fixed response body of exactly one hundred bytes, newline end.\n\n";
const _: () = assert!(SMALL.len() == 100);
const BIG_LEN: usize = 65_536;

struct Counters {
    addrs: Vec<SocketAddr>,
    served: Vec<AtomicU64>,
}

const ADDR_HEADER: &str = "x-upstream";

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr_header = args.first().is_some_and(|a| a == "--addr-header");
    if addr_header {
        args.remove(0);
    }
    let addrs: Vec<SocketAddr> = args
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("invalid address {a:?}: {e}")))
        .collect();
    if addrs.is_empty() {
        eprintln!("usage: bench-upstream [--addr-header] ADDR [ADDR ...]");
        std::process::exit(2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(addrs, addr_header))
}

async fn serve(addrs: Vec<SocketAddr>, addr_header: bool) -> std::io::Result<()> {
    let small = Bytes::from_static(SMALL);
    let big = Bytes::from(vec![b'x'; BIG_LEN]);
    let counters = Arc::new(Counters {
        addrs: addrs.clone(),
        served: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    let mut tasks = Vec::new();
    for (index, addr) in addrs.into_iter().enumerate() {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        eprintln!("bench-upstream listening addr={local}");
        let tag = addr_header.then(|| HeaderValue::from_str(&local.to_string()).expect("an address is a header value"));
        let (small, big, counters) = (small.clone(), big.clone(), counters.clone());
        tasks.push(tokio::spawn(accept_loop(listener, index, tag, small, big, counters)));
    }
    for task in tasks {
        task.await.expect("accept loop panicked")?;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    index: usize,
    tag: Option<HeaderValue>,
    small: Bytes,
    big: Bytes,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (small, big, counters, builder, tag) = (small.clone(), big.clone(), counters.clone(), builder.clone(), tag.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = match req.uri().path() {
                    // Not counted: reading the counters must not move them.
                    "/__stats" => Bytes::from(stats(&counters)),
                    path => {
                        counters.served[index].fetch_add(1, Ordering::Relaxed);
                        if path == "/64k" { big.clone() } else { small.clone() }
                    }
                };
                let mut resp = Response::new(Full::new(body));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                if let Some(tag) = &tag {
                    resp.headers_mut().insert(HeaderName::from_static(ADDR_HEADER), tag.clone());
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn stats(counters: &Counters) -> String {
    counters
        .addrs
        .iter()
        .zip(&counters.served)
        .map(|(addr, n)| format!("{addr} {}\n", n.load(Ordering::Relaxed)))
        .collect()
}
