//! A fast upstream for load tests: answers every path with a fixed ~100-byte
//! body, `/64k` with a fixed 65,536-byte body, and `/__stats` with the
//! number of requests each listening address has served (one line per
//! address: `ADDR COUNT`), so a load test can check how a proxy split its
//! traffic.
//!
//! HTTP/1.1 keep-alive (and HTTP/2 prior knowledge, for a direct h2 ceiling)
//! on a multi-threaded tokio runtime.
//!
//! Usage: `bench-upstream [--addr-header] [--gzip | --json] ADDR [ADDR ...]`, e.g.
//! `cargo run --release --example bench-upstream -- 127.0.0.1:19101 127.0.0.1:19102`.
//! With `--addr-header` every response also carries `x-upstream: ADDR`, the
//! listening address that answered, so a client can tell which backend a
//! proxy chose for each request. With `--gzip`, `/json` answers a fixed
//! ~10 KB JSON document (also on `/json/ANYTHING`), gzip-compressed (once, at start) with
//! `Content-Encoding: gzip` when the request accepts gzip, as it is otherwise:
//! a backend that compresses its answers, as most applications do. With
//! `--json`, the same document, never compressed: a backend that leaves
//! compression to the proxy in front of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, VARY};
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

/// The `/json` answers of `--gzip` and `--json`: the document as it is and gzip-compressed.
#[derive(Clone)]
struct Json {
    plain: Bytes,
    gzip: Bytes,
    /// Gzipped when the request accepts it (`--gzip`), else always plain (`--json`).
    compresses: bool,
}

impl Json {
    /// A DRF-style paginated list of 50 objects, about 10 KB; the `sku`
    /// values vary as ids do, so it compresses about as real JSON does.
    fn new(compresses: bool) -> Json {
        let results: Vec<serde_json::Value> = (0..50u64)
            .map(|i| {
                serde_json::json!({
                    "id": i, "sku": format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    "title": format!("book {i}"), "price": "10.50", "tags": ["a", "b"],
                    "author": {"id": i % 7, "name": "someone", "email": "someone@example.com"},
                    "updated_at": "2026-11-22T10:00:00Z",
                })
            })
            .collect();
        let doc = serde_json::json!({"count": 50, "next": null, "previous": null, "results": results});
        let plain = serde_json::to_vec(&doc).expect("a JSON value serializes");
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&plain).expect("writing to a Vec");
        let gzip = encoder.finish().expect("writing to a Vec");
        Json {
            plain: plain.into(),
            gzip: gzip.into(),
            compresses,
        }
    }
}

struct Counters {
    addrs: Vec<SocketAddr>,
    served: Vec<AtomicU64>,
}

const ADDR_HEADER: &str = "x-upstream";

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| {
        let found = args.iter().position(|a| a == name);
        found.map(|i| args.remove(i)).is_some()
    };
    let addr_header = flag("--addr-header");
    let compresses = flag("--gzip");
    let json = (compresses || flag("--json")).then(|| Json::new(compresses));
    let addrs: Vec<SocketAddr> = args
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("invalid address {a:?}: {e}")))
        .collect();
    if addrs.is_empty() {
        eprintln!("usage: bench-upstream [--addr-header] [--gzip | --json] ADDR [ADDR ...]");
        std::process::exit(2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(addrs, addr_header, json))
}

async fn serve(addrs: Vec<SocketAddr>, addr_header: bool, json: Option<Json>) -> std::io::Result<()> {
    let bodies = Bodies {
        small: Bytes::from_static(SMALL),
        big: Bytes::from(vec![b'x'; BIG_LEN]),
        json,
    };
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
        tasks.push(tokio::spawn(accept_loop(listener, index, tag, bodies.clone(), counters.clone())));
    }
    for task in tasks {
        task.await.expect("accept loop panicked")?;
    }
    Ok(())
}

/// The fixed answers.
#[derive(Clone)]
struct Bodies {
    small: Bytes,
    big: Bytes,
    json: Option<Json>,
}

async fn accept_loop(
    listener: TcpListener,
    index: usize,
    tag: Option<HeaderValue>,
    bodies: Bodies,
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
        let (bodies, counters, builder, tag) = (bodies.clone(), counters.clone(), builder.clone(), tag.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let mut content_type = "text/plain";
                let mut gzipped = false;
                let body = match (req.uri().path(), &bodies.json) {
                    // Not counted: reading the counters must not move them.
                    ("/__stats", _) => Bytes::from(stats(&counters)),
                    (path, Some(json)) if path == "/json" || path.starts_with("/json/") => {
                        counters.served[index].fetch_add(1, Ordering::Relaxed);
                        content_type = "application/json";
                        gzipped = json.compresses && cutover::proxy::compress::accepts_gzip(req.headers());
                        if gzipped { json.gzip.clone() } else { json.plain.clone() }
                    }
                    (path, _) => {
                        counters.served[index].fetch_add(1, Ordering::Relaxed);
                        if path == "/64k" { bodies.big.clone() } else { bodies.small.clone() }
                    }
                };
                let mut resp = Response::new(Full::new(body));
                resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                if content_type == "application/json" {
                    resp.headers_mut().insert(VARY, HeaderValue::from_static("accept-encoding"));
                }
                if gzipped {
                    resp.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
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
