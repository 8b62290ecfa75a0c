//! The response body handed to hyper: the backend's streaming body or a short
//! local one, carrying the [`Exchange`] that is recorded when the body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::UpstreamBody;
use super::upstream::FailureKind;
use super::{ActiveRequest, ConnInfo};
use crate::access_log::{AccessLog, LogRecord, Outcome};
use crate::mirror::Tap;
use crate::table::Table;

/// One request's bookkeeping: recorded into metrics and the access log
/// when dropped, i.e. when the response body has been sent or abandoned.
pub struct Exchange {
    started: Instant,
    table: Arc<Table>,
    /// (route, backend) indexes once a backend was chosen.
    pub target: Option<(usize, usize)>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Whether the exchange counts in the route guard's windows.
    pub feeds_guard: bool,
    body_bytes: u64,
    log: Option<(Arc<AccessLog>, LogRecord)>,
    /// Keeps the request in flight on its connection until the response ends.
    request: Option<ActiveRequest>,
}

impl Exchange {
    pub fn new(started: Instant, table: Arc<Table>, log: Option<(Arc<AccessLog>, LogRecord)>) -> Exchange {
        Exchange {
            started,
            table,
            target: None,
            status: 0,
            upstream_status: None,
            feeds_guard: true,
            body_bytes: 0,
            log,
            request: None,
        }
    }

    /// Ties the request's in-flight mark to this exchange's life.
    pub fn hold(&mut self, request: ActiveRequest) {
        self.request = Some(request);
    }

    pub fn log_record(&mut self) -> Option<&mut LogRecord> {
        self.log.as_mut().map(|(_, rec)| rec)
    }

    /// Counts a failed exchange with the chosen backend.
    pub fn record_failure(&self, kind: FailureKind) {
        if let Some((ri, bi)) = self.target {
            let route = &self.table.config.routes[ri];
            self.table
                .metrics
                .upstream_errors
                .with_label_values(&[&route.name, &route.backends[bi].spec.name, kind.label()])
                .inc();
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        match self.target {
            Some((ri, bi)) => {
                let route = &self.table.routes[ri];
                route.backends[bi].metrics.observe(self.upstream_status, elapsed.as_secs_f64());
                if let Some(guard) = &route.guard
                    && self.feeds_guard
                    && bi != self.table.config.routes[ri].stable
                {
                    guard.record(bi, self.upstream_status, elapsed);
                }
            }
            None => self.table.unmatched.observe(Some(self.status), elapsed.as_secs_f64()),
        }
        if let Some((log, rec)) = &self.log {
            let outcome = Outcome {
                status: self.status,
                body_bytes: self.body_bytes,
                duration: elapsed,
                upstream_status: self.upstream_status,
            };
            log.write(rec, &outcome);
        }
    }
}

enum Inner {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
}

pub struct ResponseBody {
    inner: Inner,
    exchange: Option<Box<Exchange>>,
    /// A bounded copy for the mirror comparison, when the request is mirrored.
    tap: Option<Tap>,
}

impl ResponseBody {
    pub fn upstream(body: UpstreamBody, exchange: Box<Exchange>, tap: Option<Tap>) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream(body),
            exchange: Some(exchange),
            tap,
        }
    }

    pub fn local(text: impl Into<Bytes>, exchange: Option<Box<Exchange>>) -> ResponseBody {
        let bytes = text.into();
        ResponseBody {
            inner: Inner::Local((!bytes.is_empty()).then_some(bytes)),
            exchange,
            tap: None,
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(ex) = &mut self.exchange {
            ex.body_bytes += n as u64;
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (HEAD, 204,
        // Content-Length: 0): it is complete all the same.
        if let (Some(tap), Inner::Upstream(body)) = (&mut self.tap, &self.inner)
            && body.is_end_stream()
        {
            tap.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Upstream(body) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            this.count(data.len());
                            if let Some(tap) = &mut this.tap {
                                tap.data(data);
                            }
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(ex) = &this.exchange {
                            ex.record_failure(FailureKind::Body);
                        }
                        // A broken body is not compared.
                        this.tap = None;
                    }
                    None => {
                        if let Some(tap) = &mut this.tap {
                            tap.finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
            Inner::Local(bytes) => {
                let frame = bytes.take();
                if let Some(b) = &frame {
                    let n = b.len();
                    this.count(n);
                }
                Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Why the proxy stopped reading a client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    TooLarge,
    TooSlow,
    /// Malformed (a bad chunk) or cut short by the client.
    Broken,
}

/// Shared between a client body and the request handler, which turns a
/// failed exchange into 413 or 408 when the body was the cause.
#[derive(Debug, Default)]
pub struct BodyVerdict(std::sync::atomic::AtomicU8);

impl BodyVerdict {
    fn set(&self, problem: BodyProblem) {
        let v = match problem {
            BodyProblem::TooLarge => 1,
            BodyProblem::TooSlow => 2,
            BodyProblem::Broken => 3,
        };
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<BodyProblem> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(BodyProblem::TooLarge),
            2 => Some(BodyProblem::TooSlow),
            3 => Some(BodyProblem::Broken),
            _ => None,
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, read with a size limit and an idle timeout.
pub struct ClientBody {
    inner: Incoming,
    limit: u64,
    received: u64,
    idle: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    verdict: Arc<BodyVerdict>,
    /// Told once the body has been read to its end.
    conn: Option<Arc<ConnInfo>>,
}

impl ClientBody {
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        idle: std::time::Duration,
        verdict: Arc<BodyVerdict>,
        conn: Option<Arc<ConnInfo>>,
    ) -> ClientBody {
        ClientBody {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            received: 0,
            idle,
            timer: None,
            verdict,
            conn,
        }
    }

    fn ended(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.body_read();
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.received > self.limit {
                    self.verdict.set(BodyProblem::TooLarge);
                    return Poll::Ready(Some(Err("request body larger than server.max_body_bytes".into())));
                }
                self.timer = None;
                if self.inner.is_end_stream() {
                    self.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The client's fault, not the backend's: 400, and no mark against its health.
                self.verdict.set(BodyProblem::Broken);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.verdict.set(BodyProblem::TooSlow);
                    return Poll::Ready(Some(Err("request body stalled longer than server.body_read_timeout".into())));
                }
                Poll::Pending
            }
        }
    }
}

/// The body sent to a backend: the client's, the client's with a copy taken
/// for a shadow request, or one held in memory.
pub enum RequestBody {
    Client(ClientBody),
    Tapped(ClientBody, Tap),
    Full(Option<Bytes>),
}

impl RequestBody {
    pub fn full(bytes: Bytes) -> RequestBody {
        RequestBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Client(body) => body.poll_frame(cx),
            RequestBody::Tapped(body, tap) => {
                let frame = ready!(body.poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            tap.data(data);
                        }
                        // The client may never be polled again once it reports the end.
                        if body.is_end_stream() {
                            tap.finish();
                        }
                    }
                    Some(Err(_)) => {}
                    None => tap.finish(),
                }
                Poll::Ready(frame)
            }
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) | RequestBody::Tapped(body, _) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) | RequestBody::Tapped(body, _) => body.inner.size_hint(),
            RequestBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
