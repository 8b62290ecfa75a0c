//! Shadow traffic: a sampled share of a route's requests is also sent to
//! the other backend, and the two answers are compared.
//!
//! Nothing here may slow the primary exchange: the request and response
//! bodies are copied (bounded, by reference-counted chunks) as they stream,
//! the shadow runs in its own task with its own deadline, and when too many
//! shadows are in flight new ones are dropped, never queued.

pub mod compare;
pub mod parity;
pub mod redact;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body::Body as _;
use tokio::sync::{Semaphore, oneshot};

use crate::config::{MirrorSpec, RouteSpec};
use crate::metrics::Metrics;
use crate::proxy::body::RequestBody;
use crate::proxy::upstream::Upstream;
use crate::table::Table;
use compare::Captured;
use parity::{Exchange, Parity};

/// Marks shadow requests so a backend can skip side effects.
pub static SHADOW_HEADER: HeaderName = HeaderName::from_static("x-cutover-shadow");

/// Bounds a route's shadows in flight.
#[derive(Debug, Default)]
pub struct MirrorGate {
    in_flight: AtomicUsize,
}

/// One admitted shadow; frees its place when dropped.
pub struct Permit(Arc<MirrorGate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What became of a request its route would mirror: the `outcome` label of
/// `cutover_mirror_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both answers arrived and were compared.
    Compared,
    /// Not mirrored: the route's `max_in_flight` shadows were already running.
    Dropped,
    /// Not mirrored or not compared: a body over the limits, or the primary
    /// response never read to its end.
    Skipped,
    /// The shadow failed: no connection, a timeout or an invalid response.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Compared, Outcome::Dropped, Outcome::Skipped, Outcome::Error];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Compared => "compared",
            Outcome::Dropped => "dropped",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
        }
    }
}

/// A mirrored route's `cutover_mirror_requests_total` counters, resolved
/// when the table is built: looking one up by its label values would hash
/// them on every mirrored request.
pub struct OutcomeCounters([prometheus::IntCounter; 4]);

impl OutcomeCounters {
    pub fn new(metrics: &Metrics, route: &str) -> OutcomeCounters {
        OutcomeCounters(Outcome::ALL.map(|o| metrics.mirror_requests.with_label_values(&[route, o.label()])))
    }

    fn count(&self, outcome: Outcome) {
        // `ALL` lists the outcomes in declaration order.
        self.0[outcome as usize].inc();
    }
}

/// Counts what became of one request that route `route` of `table` would mirror.
pub fn record_outcome(table: &Table, parity: &Parity, route: usize, outcome: Outcome) {
    parity.count_outcome(&table.config.routes[route].name, outcome.label());
    if let Some(counters) = &table.routes[route].mirror_outcomes {
        counters.count(outcome);
    }
}

/// Whether a request is mirrored.
pub enum Admission {
    /// Not a candidate (route, method, sampling, or a backend outside the compared pair).
    No,
    /// A candidate that was not mirrored, and why.
    Refused(Outcome),
    Yes {
        shadow: usize,
        permit: Permit,
        noise: bool,
    },
}

/// Decides whether the request served by `primary` is mirrored, and where to.
pub fn admit(
    spec: &MirrorSpec,
    route: &RouteSpec,
    gate: &Arc<MirrorGate>,
    primary: usize,
    method: &Method,
    content_length: Option<u64>,
) -> Admission {
    let shadow = if primary == spec.to {
        route.stable
    } else if primary == route.stable {
        spec.to
    } else {
        return Admission::No;
    };
    if !spec.methods.contains(method) || (spec.share < 1.0 && rand::random::<f64>() >= spec.share) {
        return Admission::No;
    }
    if content_length.is_some_and(|n| n > spec.max_body_bytes as u64) {
        return Admission::Refused(Outcome::Skipped);
    }
    if gate.in_flight.fetch_add(1, Ordering::AcqRel) >= spec.max_in_flight {
        gate.in_flight.fetch_sub(1, Ordering::AcqRel);
        return Admission::Refused(Outcome::Dropped);
    }
    let noise = method.is_safe() && spec.noise_sample > 0.0 && rand::random::<f64>() < spec.noise_sample;
    Admission::Yes {
        shadow,
        permit: Permit(gate.clone()),
        noise,
    }
}

/// Copies a streaming body, up to a limit, into a buffer of its own.
/// Sends the whole copy when the body ends, `None` once it overflows; a
/// body abandoned half-way sends nothing.
///
/// The chunks are copied, not kept by reference: they are slices of the
/// connection's read buffer, and while one is alive the next read cannot
/// reuse that buffer and allocates a new one, which costs more than the
/// copy of a body small enough to compare.
pub struct Tap {
    copy: BytesMut,
    limit: usize,
    done: Option<oneshot::Sender<Option<Bytes>>>,
}

impl Tap {
    pub fn new(limit: usize) -> (Tap, oneshot::Receiver<Option<Bytes>>) {
        let (tx, rx) = oneshot::channel();
        (
            Tap {
                copy: BytesMut::new(),
                limit,
                done: Some(tx),
            },
            rx,
        )
    }

    pub fn data(&mut self, chunk: &[u8]) {
        if self.done.is_none() {
            return;
        }
        if self.copy.len() + chunk.len() > self.limit {
            self.copy = BytesMut::new();
            if let Some(tx) = self.done.take() {
                let _ = tx.send(None);
            }
        } else {
            self.copy.extend_from_slice(chunk);
        }
    }

    pub fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Some(std::mem::take(&mut self.copy).freeze()));
        }
    }

    pub fn is_finished(&self) -> bool {
        self.done.is_none()
    }
}

/// Everything a shadow exchange needs, handed to its own task.
pub struct ShadowJob {
    pub table: Arc<Table>,
    pub parity: Arc<Parity>,
    pub route: usize,
    pub primary: usize,
    /// Whether the comparison counts in the route guard's windows (a
    /// tester's forced request does not).
    pub feeds_guard: bool,
    pub shadow: usize,
    pub noise: bool,
    pub permit: Permit,
    pub method: Method,
    /// The headers the primary was sent, before `Host`; taken by the exchange.
    pub headers: HeaderMap,
    pub client_host: Option<HeaderValue>,
    /// The normalised path, before any per-backend rewrite.
    pub path: String,
    pub query: Option<String>,
    pub request_id: String,
    /// The request body as the primary received it; `None` for an empty body.
    pub body: Option<oneshot::Receiver<Option<Bytes>>>,
    pub primary_head: Option<oneshot::Receiver<(u16, HeaderMap)>>,
    pub primary_body: Option<oneshot::Receiver<Option<Bytes>>>,
}

/// How long to wait for the client to finish reading the primary response.
const PRIMARY_GRACE: Duration = Duration::from_secs(60);

impl ShadowJob {
    pub async fn run(mut self) {
        let table = self.table.clone();
        let route = &table.config.routes[self.route];
        let spec = route.mirror.as_ref().expect("mirrored routes have a mirror spec");
        let outcome = settle(&route.name, caught(self.exchange(spec)).await);
        record_outcome(&table, &self.parity, self.route, outcome);
    }

    async fn exchange(&mut self, spec: &MirrorSpec) -> Outcome {
        let body = match self.body.take() {
            None => Bytes::new(),
            Some(rx) => match rx.await {
                Ok(Some(b)) => b,
                _ => return Outcome::Skipped,
            },
        };
        // Boxed: a task's future is moved several times as it is spawned, and
        // two in-flight exchanges inline would make every move kilobytes long.
        let headers = std::mem::take(&mut self.headers);
        let again_headers = self.noise.then(|| headers.clone());
        let shadow = Box::pin(self.fetch(self.shadow, headers, body.clone(), spec));
        let again = async {
            match again_headers {
                Some(headers) => Some(Box::pin(self.fetch(self.primary, headers, body.clone(), spec)).await),
                None => None,
            }
        };
        let (shadow, again) = tokio::join!(shadow, again);
        let Some(primary) = self.primary_capture().await else {
            return Outcome::Skipped;
        };
        let Ok(shadow) = shadow else {
            return Outcome::Error;
        };
        let comparison = Comparison {
            table: self.table.clone(),
            parity: self.parity.clone(),
            route: self.route,
            primary: self.primary,
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            request_id: std::mem::take(&mut self.request_id),
            primary_answer: primary,
            shadow_answer: shadow,
            again: again.and_then(Result::ok),
            feeds_guard: self.feeds_guard,
        };
        comparison.judge(spec.timeout).await
    }

    async fn primary_capture(&mut self) -> Option<Captured> {
        let head = self.primary_head.take()?;
        let body = self.primary_body.take()?;
        let captured = std::pin::pin!(async {
            let (status, headers) = head.await.ok()?;
            let body = body.await.ok()?;
            Some(Captured { status, headers, body })
        });
        // The primary has usually finished by now, and then no timer is set.
        crate::proxy::upstream::within(PRIMARY_GRACE, captured).await.flatten()
    }

    /// Sends the request to route backend `backend` and reads the answer (bounded).
    async fn fetch(&self, backend: usize, mut headers: HeaderMap, body: Bytes, spec: &MirrorSpec) -> Result<Captured, ()> {
        let route = &self.table.config.routes[self.route];
        let rb = &route.backends[backend];
        let upstream: &Upstream = &self.table.routes[self.route].backends[backend].upstream;
        let uri = crate::proxy::upstream_uri(&rb.spec, rb.rewrite.as_ref(), &self.path, self.query.as_deref()).map_err(|_| ())?;
        headers.insert(http::header::HOST, crate::proxy::upstream_host(&rb.spec, self.client_host.clone()));
        headers.insert(SHADOW_HEADER.clone(), HeaderValue::from_static("1"));
        if body.is_empty() {
            headers.remove(http::header::CONTENT_LENGTH);
        } else {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut req = Request::new(RequestBody::full(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let exchange = std::pin::pin!(async {
            let resp = upstream.send(req).await.map_err(|_| ())?;
            let status = resp.status().as_u16();
            // Copied and the head dropped before the body is read: see `compared_headers`.
            let headers = compare::compared_headers(resp.headers(), &spec.rules);
            let mut body = resp.into_body();
            let mut collected = BytesMut::new();
            let mut overflow = false;
            while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                let frame = frame.map_err(|_| ())?;
                if let Some(data) = frame.data_ref() {
                    if collected.len() + data.len() > spec.compare_max_bytes {
                        overflow = true;
                        break;
                    }
                    collected.extend_from_slice(data);
                }
            }
            Ok(Captured {
                status,
                headers,
                body: (!overflow).then(|| collected.freeze()),
            })
        });
        crate::proxy::upstream::within(spec.timeout, exchange).await.ok_or(())?
    }
}

/// Bodies (both sides together) up to this size are compared on the
/// serving thread. At the roughly 60 MB/s parsing and comparing runs at (see
/// BENCHMARKS.md) that is a quarter of a millisecond, and recording is
/// bounded by `compare::MAX_DIFFERENCES`: about what serving a request
/// costs. Sending them to the blocking pool instead would cost a thread
/// wake-up each way and put most API answers in the queue for the few
/// compare slots.
const INLINE_COMPARE_BYTES: usize = 16 * 1024;

/// Comparisons of larger bodies running at once, process-wide: half the
/// cores, at least one, so that comparing never takes every core from the
/// serving threads. A comparison waits for a slot while its shadow still
/// holds its place among the route's `max_in_flight`, so the waiting is
/// bounded; one that waits longer than the mirror's `timeout` is skipped.
static COMPARE_SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new((cores / 2).max(1))
});

/// Both answers of a mirrored request, compared and recorded away from the
/// exchange that fetched them.
struct Comparison {
    table: Arc<Table>,
    parity: Arc<Parity>,
    route: usize,
    primary: usize,
    method: Method,
    path: String,
    request_id: String,
    primary_answer: Captured,
    shadow_answer: Captured,
    /// The primary's second answer to the same request, when learning noise.
    again: Option<Captured>,
    /// Whether the verdict counts in the route's guard (forced requests do not, by default).
    feeds_guard: bool,
}

impl Comparison {
    /// Compares on the serving thread when the bodies are small, else on the
    /// blocking pool once a compare slot frees up within `wait`.
    async fn judge(self, wait: Duration) -> Outcome {
        let body = |c: &Captured| c.body.as_ref().map_or(0, Bytes::len);
        let size = body(&self.primary_answer) + body(&self.shadow_answer) + self.again.as_ref().map_or(0, body);
        if size <= INLINE_COMPARE_BYTES {
            return self.run_caught();
        }
        let Some(Ok(slot)) = crate::proxy::upstream::within(wait, std::pin::pin!(COMPARE_SLOTS.acquire())).await else {
            return Outcome::Skipped;
        };
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            self.run_caught()
        });
        // Panics are caught inside the job: an error here is a job cancelled
        // as the runtime shuts down.
        job.await.unwrap_or(Outcome::Error)
    }

    fn run_caught(self) -> Outcome {
        let table = self.table.clone();
        let route = &table.config.routes[self.route].name;
        settle(route, std::panic::catch_unwind(AssertUnwindSafe(|| self.run())))
    }

    fn run(self) -> Outcome {
        let table = &self.table;
        let route = &table.config.routes[self.route];
        let spec = route.mirror.as_ref().expect("mirrored routes have a mirror spec");
        let rules = &spec.rules;
        let primary_is_stable = self.primary == route.stable;
        if let Some(again) = &self.again {
            let noise = compare::compare(&self.primary_answer, again, &rules.same_side(primary_is_stable));
            self.parity.record_noise(&route.name, &spec.redact, noise);
        }
        let (left, right) = if primary_is_stable {
            (&self.primary_answer, &self.shadow_answer)
        } else {
            (&self.shadow_answer, &self.primary_answer)
        };
        let diffs = compare::compare(left, right, rules);
        let names = [&*route.backends[route.stable].spec.name, &*route.backends[spec.to].spec.name];
        let exchange = Exchange {
            method: self.method.as_str(),
            path: &self.path,
            request_id: &self.request_id,
            backends: names,
            statuses: [left.status, right.status],
            served_by: &route.backends[self.primary].spec.name,
        };
        let judgement = self.parity.record(&route.name, spec, &exchange, diffs);
        if let Some(guard) = &table.routes[self.route].guard
            && self.feeds_guard
        {
            guard.record_comparison(spec.to, judgement.clean);
        }
        for kind in judgement.mismatched {
            table
                .metrics
                .parity_mismatches
                .with_label_values(&[&route.name, kind.label()])
                .inc();
        }
        Outcome::Compared
    }
}

/// Runs `fut`, returning the panic it raises, if any, instead of unwinding.
async fn caught<F: Future>(fut: F) -> std::thread::Result<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    })
    .await
}

/// The outcome of a shadow whose work may have panicked: a bug, but one
/// that costs a shadow (counted as `error`), never the client's answer or
/// the thread serving it.
fn settle(route: &str, result: std::thread::Result<Outcome>) -> Outcome {
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        tracing::error!(route, panic = message, "a shadow exchange panicked; counted as an error");
        Outcome::Error
    })
}

#[cfg(test)]
mod tests {
    use super::{Metrics, Outcome, OutcomeCounters, Tap, caught, settle};
    use bytes::Bytes;

    #[tokio::test]
    async fn a_panic_in_the_shadow_path_is_an_error_outcome() {
        let exchange = async {
            tokio::task::yield_now().await;
            panic!("a bug in the comparison");
        };
        let outcome: Outcome = settle("api", caught(exchange).await);
        assert_eq!(outcome, Outcome::Error);
        let comparison = std::panic::catch_unwind(|| -> Outcome { panic!("{}", String::from("formatted")) });
        assert_eq!(settle("api", comparison), Outcome::Error);
        assert_eq!(settle("api", caught(async { Outcome::Compared }).await), Outcome::Compared);
    }

    #[test]
    fn every_outcome_counts_under_its_own_label() {
        let metrics = Metrics::new();
        let counters = OutcomeCounters::new(&metrics, "api");
        for (times, outcome) in (1..).zip(Outcome::ALL) {
            for _ in 0..times {
                counters.count(outcome);
            }
        }
        for (times, outcome) in (1..).zip(Outcome::ALL) {
            let counted = metrics.mirror_requests.with_label_values(&["api", outcome.label()]).get();
            assert_eq!(counted, times, "{outcome:?}");
        }
        assert_eq!(Outcome::ALL.map(Outcome::label), ["compared", "dropped", "skipped", "error"]);
    }

    #[test]
    fn a_tap_sends_a_copy_of_the_whole_body_or_nothing_past_its_limit() {
        let (mut tap, mut copy) = Tap::new(10);
        let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"you")];
        for chunk in &chunks {
            tap.data(chunk);
        }
        assert!(copy.try_recv().is_err(), "nothing is sent before the body ends");
        tap.finish();
        let body = copy.try_recv().unwrap().unwrap();
        assert_eq!(body, "hello you");
        assert!(
            chunks.iter().all(|c| !std::ptr::eq(c.as_ptr(), body.as_ptr())),
            "the copy owns its bytes"
        );

        let (mut tap, mut copy) = Tap::new(4);
        tap.data(b"12");
        tap.data(b"345");
        assert!(tap.is_finished(), "an overflow ends the copy at once");
        assert_eq!(copy.try_recv().unwrap(), None);
        tap.finish();
    }
}
