//! The integration tests' one harness: real backends on loopback
//! ([`servers`]), HTTP clients ([`clients`]) and hand-written bytes on raw
//! connections ([`raw`]), the real `cutover` binary ([`process`]), a real
//! etcd cluster ([`etcd`]), and a Prometheus text parser ([`prometheus`]).
//! Each test binary includes it with `mod common;` and uses `common::*`.

#![allow(dead_code, unused_imports)]

pub mod clients;
pub mod etcd;
pub mod process;
pub mod prometheus;
pub mod raw;
pub mod servers;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

pub use clients::*;
pub use process::*;
pub use prometheus::*;
pub use raw::*;
pub use servers::*;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
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

/// Runs `probe` every `every` until it gives `Ok`, and returns that; once
/// `limit` has passed, fails the test with the last `Err` (which says what
/// was awaited and what was seen instead).
pub async fn eventually<T>(limit: Duration, every: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// The backend (`legacy` or `new`) a sticky key lands on while `new` has
/// `new_percent` percent of a two-backend route, by `cutover::split`'s buckets.
pub fn sticky_backend(key: &str, new_percent: u32) -> &'static str {
    let bucket = cutover::split::sticky_bucket(key.as_bytes());
    if u32::from(bucket) >= 10_000 - new_percent * 100 {
        "new"
    } else {
        "legacy"
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

/// `data` in frames of `chunk` bytes, with no length announced.
pub fn frames(data: impl Into<Bytes>, chunk: usize) -> Body {
    let data = data.into();
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(Frame::data(data.slice(at..data.len().min(at + chunk)))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}
