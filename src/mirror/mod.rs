//! Shadow traffic: a sampled share of a route's requests is also sent to
//! the other backend, and the two answers are compared.
//!
//! Nothing here may slow the primary exchange: the request and response
//! bodies are copied (bounded) as they stream, the shadow runs in its own
//! task with its own deadline, and when too many shadows are in flight new
//! ones are dropped, never queued.
//!
//! The forwarding path meets the mirror through one call, [`shadow`]; the
//! shadow's request is built by [`request_for`], as the primary's is.

pub mod evidence;
pub mod parity;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use tokio::sync::{Semaphore, oneshot};
use tower::Service;
use tower::limit::ConcurrencyLimit;

use crate::compare::{self, Body, Captured, CompareRules};
use crate::config::{MirrorSpec, RouteSpec};
use crate::metrics::ShadowOutcome;
use crate::table::Table;
use crate::upstream::{Failure, FailureKind, RequestBody, Tap, Target, origin_form, request_for, within};
use parity::{Exchange, Parity};

/// Marks shadow requests so a backend can skip side effects.
pub static SHADOW_HEADER: HeaderName = HeaderName::from_static("x-cutover-shadow");

/// A request on its way to its primary backend, as the mirror sees it.
pub struct ShadowRequest<'t, 'a> {
    pub table: &'t Arc<Table>,
    pub parity: &'a Arc<Parity>,
    pub route: usize,
    /// The backend serving the request.
    pub primary: usize,
    /// Whether the comparison counts in the route guard's windows (a
    /// tester's forced request does not).
    pub feeds_guard: bool,
    /// The head as every backend is sent it, before its target and `Host`.
    pub head: &'a Parts,
    pub target: Target<'a>,
    pub request_id: &'a HeaderValue,
}

/// A mirrored request's hold on its primary's answer.
pub struct Mirrored<'a> {
    head: oneshot::Sender<(u16, HeaderMap)>,
    body: Tap,
    rules: &'a CompareRules,
}

impl Mirrored<'_> {
    /// The primary's response head arrived: the shadow gets its status and
    /// compared headers. Returns the tap its body must be read through.
    pub fn primary_answered<B>(self, resp: &Response<B>) -> Tap {
        let _ = self
            .head
            .send((resp.status().as_u16(), compare::compared_headers(resp.headers(), self.rules)));
        self.body
    }
}

/// Mirrors `req` when its route says so and a place is free: starts the
/// shadow and returns the body to send the primary (copied as it streams)
/// with the hold on the primary's answer. Otherwise `body` comes back as it
/// was, and a refusal is counted.
pub fn shadow<'t>(req: &ShadowRequest<'t, '_>, body: RequestBody) -> (RequestBody, Option<Mirrored<'t>>) {
    let table = req.table;
    let route = &table.config.routes[req.route];
    let (Some(spec), Some(live)) = (&route.mirror, &table.routes[req.route].mirror) else {
        return (body, None);
    };
    if matches!(&body, RequestBody::Client(client) if client.is_tapped()) {
        return (body, None);
    }
    let content_length = req
        .head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (shadow, mut slot) = match admit(spec, route, &live.slots, req.primary, &req.head.method, content_length) {
        Admission::No => return (body, None),
        Admission::Refused(outcome) => {
            record_outcome(table, req.parity, req.route, outcome);
            return (body, None);
        }
        Admission::Yes { shadow, slot } => (shadow, slot),
    };
    // The shadow's own copy of what it needs: the client's bytes are
    // slices of its connection's read buffer, which they would pin.
    let Ok(uri) = origin_form("", req.target.path(&req.head.uri), req.head.uri.query()) else {
        return (body, None);
    };
    let noise = learns_noise(spec, req.parity, &route.name, &req.head.method, uri.path());
    let (body, body_copy) = match body {
        RequestBody::Full(Some(bytes)) => {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send((bytes.len() <= spec.max_body_bytes).then(|| bytes.clone()));
            (RequestBody::Full(Some(bytes)), Some(rx))
        }
        RequestBody::Client(mut client) if !client.is_end_stream() => {
            let (tap, copy) = Tap::new(spec.max_body_bytes);
            client.tap(tap);
            (RequestBody::Client(client), Some(copy))
        }
        empty => (empty, None),
    };
    let (head_tx, head_rx) = oneshot::channel();
    let (response_tap, response_copy) = Tap::new(spec.compare_max_bytes);
    let request_id = req.request_id;
    let job = ShadowJob {
        table: table.clone(),
        parity: req.parity.clone(),
        route: req.route,
        primary: req.primary,
        feeds_guard: req.feeds_guard,
        shadow,
        noise,
        method: req.head.method.clone(),
        headers: req.head.headers.clone(),
        uri,
        client_host: req.target.client_host.and_then(|h| HeaderValue::from_bytes(h.as_bytes()).ok()),
        host_in_headers: req.target.host_in_headers,
        request_id: request_id
            .to_str()
            .map_or_else(|_| String::from_utf8_lossy(request_id.as_bytes()).into_owned(), str::to_owned),
        body: body_copy,
        primary_head: Some(head_rx),
        primary_body: Some(response_copy),
    };
    tokio::spawn(slot.0.call(job));
    let mirrored = Mirrored {
        head: head_tx,
        body: response_tap,
        rules: &spec.rules,
    };
    (body, Some(mirrored))
}

/// A request no client is waiting for (`cutover replay`), for route `route` to compare.
pub struct Replayed<'a> {
    pub route: usize,
    /// The head as every backend is sent it, before its target and `Host`.
    pub head: &'a Parts,
    pub target: Target<'a>,
    pub request_id: String,
}

/// Asks the route's stable backend and its mirror target (and the stable one
/// a second time when learning noise) the bodiless request `req`, then
/// compares and records the answers as for a mirrored request, counted
/// among the route's outcomes; the route's guard is not fed. `Skipped` for a
/// route that does not mirror.
pub async fn compare_backends(table: &Arc<Table>, parity: &Arc<Parity>, req: Replayed<'_>) -> ShadowOutcome {
    let route = &table.config.routes[req.route];
    let Some(spec) = &route.mirror else {
        return ShadowOutcome::Skipped;
    };
    let Ok(uri) = origin_form("", req.target.path(&req.head.uri), req.head.uri.query()) else {
        record_outcome(table, parity, req.route, ShadowOutcome::Skipped);
        return ShadowOutcome::Skipped;
    };
    let noise = learns_noise(spec, parity, &route.name, &req.head.method, uri.path());
    let job = ShadowJob {
        table: table.clone(),
        parity: parity.clone(),
        route: req.route,
        primary: route.stable,
        feeds_guard: false,
        shadow: spec.to,
        noise,
        method: req.head.method.clone(),
        headers: req.head.headers.clone(),
        uri,
        client_host: req.target.client_host.cloned(),
        host_in_headers: req.target.host_in_headers,
        request_id: req.request_id,
        body: None,
        primary_head: None,
        primary_body: None,
    };
    job.run().await
}

/// Counts what became of one request that route `route` of `table` would mirror.
fn record_outcome(table: &Table, parity: &Parity, route: usize, outcome: ShadowOutcome) {
    parity.count_outcome(&table.config.routes[route].name, outcome.label());
    if let Some(live) = &table.routes[route].mirror {
        live.outcomes.count(outcome);
    }
}

/// Whether a request is mirrored.
enum Admission {
    /// Not a candidate (route, method, sampling, or a backend outside the compared pair).
    No,
    /// A candidate that was not mirrored, and why.
    Refused(ShadowOutcome),
    Yes {
        shadow: usize,
        slot: Slot,
    },
}

/// Decides whether the request served by `primary` is mirrored, and where to.
fn admit(
    spec: &MirrorSpec,
    route: &RouteSpec,
    slots: &Arc<Semaphore>,
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
        return Admission::Refused(ShadowOutcome::Skipped);
    }
    let Some(slot) = Slot::take(slots) else {
        return Admission::Refused(ShadowOutcome::Dropped);
    };
    Admission::Yes { shadow, slot }
}

/// Whether this request to `path` is also asked of the primary a second
/// time, to learn noise: a `noise.sample` share of safe requests, and each
/// one of an endpoint still short of its warm-up samples
/// ([`Parity::lacks_noise`]).
fn learns_noise(spec: &MirrorSpec, parity: &Parity, route: &str, method: &Method, path: &str) -> bool {
    method.is_safe()
        && spec.noise_sample > 0.0
        && (rand::random::<f64>() < spec.noise_sample || parity.lacks_noise(route, spec, method.as_str(), path))
}

/// Runs a shadow job in its own task; tower's `ConcurrencyLimit` around it
/// holds the route's `max_in_flight` bound.
#[derive(Clone, Copy)]
struct ShadowRunner;

impl Service<ShadowJob> for ShadowRunner {
    type Response = ();
    type Error = Infallible;
    // Boxed: the task's future is copied into the task and again when it
    // completes, and the job's state is most of a kilobyte.
    type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: ShadowJob) -> Self::Future {
        Box::pin(async move {
            job.run().await;
            Ok(())
        })
    }
}

/// A place among a route's shadows in flight: a runner that is ready, its
/// permit taken. The place frees up when the shadow's future ends or is
/// dropped.
struct Slot(ConcurrencyLimit<ShadowRunner>);

impl Slot {
    /// A free place, if there is one now. Shadows are dropped, never
    /// queued: readiness is looked at once, without waiting for it.
    fn take(slots: &Arc<Semaphore>) -> Option<Slot> {
        let mut runner = ConcurrencyLimit::with_semaphore(ShadowRunner, slots.clone());
        match runner.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Some(Slot(runner)),
            _ => None,
        }
    }
}

/// Everything a shadow exchange needs, handed to its own task.
struct ShadowJob {
    table: Arc<Table>,
    parity: Arc<Parity>,
    route: usize,
    primary: usize,
    feeds_guard: bool,
    shadow: usize,
    noise: bool,
    method: Method,
    /// The headers the primary was sent, before `Host`; taken by the exchange.
    headers: HeaderMap,
    /// The normalised path, before any per-backend rewrite, and the query.
    uri: Uri,
    client_host: Option<HeaderValue>,
    host_in_headers: bool,
    request_id: String,
    /// The request body as the primary received it; `None` for an empty body.
    body: Option<oneshot::Receiver<Option<Bytes>>>,
    primary_head: Option<oneshot::Receiver<(u16, HeaderMap)>>,
    primary_body: Option<oneshot::Receiver<Option<Bytes>>>,
}

/// How long to wait for the client to finish reading the primary response.
const PRIMARY_GRACE: Duration = Duration::from_secs(60);

impl ShadowJob {
    async fn run(mut self) -> ShadowOutcome {
        let table = self.table.clone();
        let route = &table.config.routes[self.route];
        let spec = route.mirror.as_ref().expect("mirrored routes have a mirror spec");
        let outcome = settle(&route.name, caught(self.exchange(spec)).await);
        record_outcome(&table, &self.parity, self.route, outcome);
        outcome
    }

    async fn exchange(&mut self, spec: &MirrorSpec) -> ShadowOutcome {
        let body = match self.body.take() {
            None => Bytes::new(),
            Some(rx) => match rx.await {
                Ok(Some(b)) => b,
                _ => return ShadowOutcome::Skipped,
            },
        };
        // Boxed: a task's future is moved several times as it is spawned, and
        // two in-flight exchanges inline would make every move kilobytes long.
        let headers = std::mem::take(&mut self.headers);
        let again_headers = self.noise.then(|| headers.clone());
        // A replayed request has no client: its primary is asked here too.
        let tapped = self.primary_head.take().zip(self.primary_body.take());
        let primary_headers = tapped.is_none().then(|| headers.clone());
        let shadow = Box::pin(self.fetch(self.shadow, headers, body.clone(), spec));
        let again = async {
            match again_headers {
                Some(headers) => Some(Box::pin(self.fetch(self.primary, headers, body.clone(), spec)).await),
                None => None,
            }
        };
        let primary = async {
            match (tapped, primary_headers) {
                (Some((head, body)), _) => primary_capture(head, body).await.ok_or(ShadowOutcome::Skipped),
                (None, headers) => Box::pin(self.fetch(self.primary, headers.unwrap_or_default(), body.clone(), spec))
                    .await
                    .map_err(|failure| self.failed(&failure)),
            }
        };
        let (shadow, again, primary) = tokio::join!(shadow, again, primary);
        let primary = match primary {
            Ok(primary) => primary,
            Err(outcome) => return outcome,
        };
        let shadow = match shadow {
            Ok(shadow) => shadow,
            Err(failure) => return self.failed(&failure),
        };
        let comparison = Comparison {
            table: self.table.clone(),
            parity: self.parity.clone(),
            route: self.route,
            primary: self.primary,
            method: self.method.clone(),
            uri: self.uri.clone(),
            request_id: std::mem::take(&mut self.request_id),
            primary_answer: primary,
            shadow_answer: shadow,
            again: again.and_then(Result::ok),
            feeds_guard: self.feeds_guard,
        };
        // Most comparisons run here and now: the comparison is not moved
        // into a future first.
        match comparison.inline() {
            true => comparison.run_caught(),
            false => comparison.judge_elsewhere(spec.timeout).await,
        }
    }

    fn failed(&self, failure: &Failure) -> ShadowOutcome {
        tracing::debug!(route = %self.table.config.routes[self.route].name, ?failure, "shadow request failed");
        ShadowOutcome::Error
    }

    /// Sends the request to route backend `backend` and reads the answer (bounded).
    async fn fetch(&self, backend: usize, mut headers: HeaderMap, body: Bytes, spec: &MirrorSpec) -> Result<Captured, Failure> {
        let client = &self.table.routes[self.route].backends[backend].client;
        headers.insert(SHADOW_HEADER.clone(), HeaderValue::from_static("1"));
        if body.is_empty() {
            headers.remove(header::CONTENT_LENGTH);
        } else {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut req = Request::new(RequestBody::full(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        let target = Target {
            normalised: None,
            client_host: self.client_host.as_ref(),
            host_in_headers: self.host_in_headers,
        };
        request_for(&self.table.config.routes[self.route].backends[backend], &mut req, target)?;
        let exchange = pin!(async {
            let resp = client.send(req).await?;
            let status = resp.status().as_u16();
            // Copied and the head dropped before the body is read: see `compared_headers`.
            let headers = compare::compared_headers(resp.headers(), &spec.rules);
            let mut body = resp.into_body();
            let mut collected = BytesMut::new();
            let mut overflow = false;
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                let frame = frame.map_err(|_| Failure::Backend(FailureKind::Body))?;
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
                body: Body::captured((!overflow).then(|| collected.freeze())),
            })
        });
        within(spec.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Backend(FailureKind::Timeout)))
    }
}

/// The primary's answer as the client read it, copied as it streamed.
async fn primary_capture(head: oneshot::Receiver<(u16, HeaderMap)>, body: oneshot::Receiver<Option<Bytes>>) -> Option<Captured> {
    let captured = pin!(async {
        let (status, headers) = head.await.ok()?;
        let body = Body::captured(body.await.ok()?);
        Some(Captured { status, headers, body })
    });
    // The primary has usually finished by now, and then no timer is set.
    within(PRIMARY_GRACE, captured).await.flatten()
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
    /// The normalised path and the query.
    uri: Uri,
    request_id: String,
    primary_answer: Captured,
    shadow_answer: Captured,
    /// The primary's second answer to the same request, when learning noise.
    again: Option<Captured>,
    /// Whether the verdict counts in the route's guard (forced requests do not, by default).
    feeds_guard: bool,
}

impl Comparison {
    /// Whether to compare on the serving thread: the bodies are small and
    /// not compressed. Else [`Comparison::judge_elsewhere`]: decoding may
    /// inflate a small body up to the limit.
    fn inline(&self) -> bool {
        let answers = || {
            [Some(&self.primary_answer), Some(&self.shadow_answer), self.again.as_ref()]
                .into_iter()
                .flatten()
        };
        let size: usize = answers().map(|c| c.body.len()).sum();
        size <= INLINE_COMPARE_BYTES && !answers().any(Captured::is_encoded)
    }

    /// Compares on the blocking pool once a compare slot frees up within `wait`.
    async fn judge_elsewhere(self, wait: Duration) -> ShadowOutcome {
        let Some(Ok(slot)) = within(wait, pin!(COMPARE_SLOTS.acquire())).await else {
            return ShadowOutcome::Skipped;
        };
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            self.run_caught()
        });
        // Panics are caught inside the job: an error here is a job cancelled
        // as the runtime shuts down.
        job.await.unwrap_or(ShadowOutcome::Error)
    }

    fn run_caught(self) -> ShadowOutcome {
        let table = self.table.clone();
        let route = &table.config.routes[self.route].name;
        settle(route, std::panic::catch_unwind(AssertUnwindSafe(|| self.run())))
    }

    fn run(self) -> ShadowOutcome {
        let table = &self.table;
        let route = &table.config.routes[self.route];
        let spec = route.mirror.as_ref().expect("mirrored routes have a mirror spec");
        let rules = &spec.rules;
        let primary_is_stable = self.primary == route.stable;
        let limit = rules.max_body_bytes;
        // A body that decodes past the limit is not compared, and costs no more than the limit.
        let (Ok(primary), Ok(shadow)) = (self.primary_answer.decoded(limit), self.shadow_answer.decoded(limit)) else {
            return ShadowOutcome::Skipped;
        };
        let (left, right) = if primary_is_stable {
            (&primary, &shadow)
        } else {
            (&shadow, &primary)
        };
        let names = [&*route.backends[route.stable].spec.name, &*route.backends[spec.to].spec.name];
        let exchange = Exchange {
            method: self.method.as_str(),
            path: self.uri.path_and_query().map_or("/", |p| p.as_str()),
            request_id: &self.request_id,
            backends: names,
            statuses: [left.status, right.status],
            served_by: &route.backends[self.primary].spec.name,
        };
        if let Some(Ok(again)) = self.again.map(|again| again.decoded(limit)) {
            let noise = compare::compare(&primary, &again, &rules.same_side(primary_is_stable));
            self.parity.record_noise(&route.name, spec, &exchange, noise);
        }
        let diffs = compare::compare(left, right, rules);
        let judgement = self.parity.record(&route.name, spec, &exchange, diffs);
        if let Some(guard) = &table.routes[self.route].guard
            && self.feeds_guard
        {
            guard.record_comparison(spec.to, judgement.clean);
        }
        for kind in &judgement.mismatched {
            table
                .metrics
                .parity_mismatches
                .with_label_values(&[&route.name, kind.label()])
                .inc();
        }
        if !judgement.clean {
            table
                .metrics
                .parity_endpoint_mismatches
                .with_label_values(&[&*route.name, judgement.endpoint.as_str()])
                .inc();
        }
        ShadowOutcome::Compared
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
fn settle(route: &str, result: std::thread::Result<ShadowOutcome>) -> ShadowOutcome {
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        tracing::error!(route, panic = message, "a shadow exchange panicked; counted as an error");
        ShadowOutcome::Error
    })
}

#[cfg(test)]
mod tests {
    use super::{ShadowOutcome, Slot, caught, settle};
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_panic_in_the_shadow_path_is_an_error_outcome() {
        let exchange = async {
            tokio::task::yield_now().await;
            panic!("a bug in the comparison");
        };
        let outcome: ShadowOutcome = settle("api", caught(exchange).await);
        assert_eq!(outcome, ShadowOutcome::Error);
        let comparison = std::panic::catch_unwind(|| -> ShadowOutcome { panic!("{}", String::from("formatted")) });
        assert_eq!(settle("api", comparison), ShadowOutcome::Error);
        assert_eq!(
            settle("api", caught(async { ShadowOutcome::Compared }).await),
            ShadowOutcome::Compared
        );
    }

    #[test]
    fn shadows_past_the_limit_are_dropped_and_a_place_frees_up_when_one_ends() {
        let slots = Arc::new(Semaphore::new(2));
        let first = Slot::take(&slots).expect("a free place");
        let second = Slot::take(&slots).expect("a free place");
        assert!(Slot::take(&slots).is_none(), "full: dropped, not queued");
        assert_eq!(slots.available_permits(), 0);
        drop(first);
        let _third = Slot::take(&slots).expect("the first one's place");
        assert!(Slot::take(&slots).is_none());
        drop(second);
        assert_eq!(slots.available_permits(), 1);
    }
}
