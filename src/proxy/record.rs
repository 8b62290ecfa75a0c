//! The bookkeeping of one request: what is counted of each attempt at a
//! backend as it ends, and of the whole exchange when its response body has
//! been sent or abandoned. Every count reads the exchange's [`Verdict`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::conn::ActiveRequest;
use crate::access_log::{AccessLog, LogRecord, Outcome};
use crate::table::Table;
use crate::upstream::{Failure, FailureKind, Verdict};

/// One request's record: counted into metrics, the guard and the access log
/// when dropped, i.e. when the response body has been sent or abandoned.
pub struct RequestRecord {
    started: Instant,
    table: Arc<Table>,
    /// (route, backend) indexes once a backend was chosen.
    target: Option<(usize, usize)>,
    /// The status the client was sent.
    status: u16,
    /// The backend's status, for the access log.
    upstream_status: Option<u16>,
    /// How the exchange with the backend ended; until it says otherwise,
    /// the client went away first.
    verdict: Verdict,
    /// Whether the exchange counts in the route guard's windows.
    feeds_guard: bool,
    body_bytes: u64,
    log: Option<(Arc<AccessLog>, LogRecord)>,
    /// Keeps the request in flight on its connection until the response ends.
    request: Option<ActiveRequest>,
}

impl RequestRecord {
    pub fn new(started: Instant, table: Arc<Table>, log: Option<(Arc<AccessLog>, LogRecord)>) -> RequestRecord {
        RequestRecord {
            started,
            table,
            target: None,
            status: 0,
            upstream_status: None,
            verdict: Verdict::Abandoned,
            feeds_guard: true,
            body_bytes: 0,
            log,
            request: None,
        }
    }

    /// Ties the request's in-flight mark to this record's life.
    pub fn hold(&mut self, request: ActiveRequest) {
        self.request = Some(request);
    }

    /// Backend `backend` of route `route` was chosen; `feeds_guard` says
    /// whether the exchange counts in the route guard's windows.
    pub fn chose(&mut self, route: usize, backend: usize, feeds_guard: bool) {
        self.target = Some((route, backend));
        self.feeds_guard = feeds_guard;
        if let Some((_, rec)) = &mut self.log {
            let spec = &self.table.config.routes[route];
            rec.route = Some(spec.name.clone());
            rec.backend = Some(spec.backends[backend].spec.name.clone());
        }
    }

    pub fn feeds_guard(&self) -> bool {
        self.feeds_guard
    }

    pub fn request_id(&mut self, id: &HeaderValue) {
        if let Some((_, rec)) = &mut self.log {
            rec.request_id = Some(id.clone());
        }
    }

    /// An attempt at route backend `backend` ended with `verdict`, at its
    /// response head: passive health and `cutover_upstream_errors_total`.
    pub fn attempted(&self, backend: usize, verdict: Verdict) {
        let Some((ri, _)) = self.target else {
            return;
        };
        let live = &self.table.routes[ri].backends[backend];
        if verdict.judges_backend() {
            live.health.record(verdict.fault().is_none());
        }
        if let Some(kind) = verdict.backend_failure() {
            self.count_upstream_error(backend, kind);
        }
    }

    /// `failed` gave no answer and the request is sent again to `next`: the
    /// failed attempt counts in `failed`'s guard window and in
    /// `cutover_retries_total`, and the request is now `next`'s.
    pub fn retried(&mut self, failed: usize, failure: Failure, next: usize) {
        let Some((ri, _)) = self.target else {
            return;
        };
        let route = &self.table.config.routes[ri];
        self.table
            .metrics
            .retries
            .with_label_values(&[&route.name, &route.backends[failed].spec.name])
            .inc();
        self.guard_record(ri, failed, Verdict::Failed(failure), self.started.elapsed());
        self.target = Some((ri, next));
        if let Some((_, rec)) = &mut self.log {
            rec.backend = Some(self.table.config.routes[ri].backends[next].spec.name.clone());
        }
    }

    /// The backend's response head, with `status`, is passed on.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
        self.upstream_status = Some(status);
        self.verdict = Verdict::Answered(status);
    }

    /// The proxy answers itself with `status`, after `failure` if the
    /// exchange with a backend failed.
    pub fn refused(&mut self, status: u16, failure: Option<Failure>) {
        self.status = status;
        if let Some(failure) = failure {
            self.verdict = Verdict::Failed(failure);
        }
    }

    /// The chosen backend's name, for messages.
    pub fn backend_name(&self) -> &str {
        self.target
            .map_or("-", |(ri, bi)| &self.table.config.routes[ri].backends[bi].spec.name)
    }

    /// The chosen backend's `body_timeout`.
    pub fn body_timeout(&self) -> Duration {
        self.target.map_or(Duration::ZERO, |(ri, bi)| {
            self.table.config.routes[ri].backends[bi].spec.body_timeout
        })
    }

    /// The backend's response body broke after its head was passed on.
    pub fn body_failed(&mut self) {
        if let Some((_, bi)) = self.target {
            self.count_upstream_error(bi, FailureKind::Body);
        }
        self.verdict = Verdict::Failed(Failure::Backend(FailureKind::Body));
    }

    /// `n` more bytes of response body were sent.
    pub fn sent(&mut self, n: usize) {
        self.body_bytes += n as u64;
    }

    fn count_upstream_error(&self, backend: usize, kind: FailureKind) {
        if let Some((ri, _)) = self.target {
            let route = &self.table.config.routes[ri];
            self.table
                .metrics
                .upstream_errors
                .with_label_values(&[&route.name, &route.backends[backend].spec.name, kind.label()])
                .inc();
        }
    }

    /// Counts `verdict` in the guard window of route backend `backend`:
    /// never the stable backend's (it is what the guard rolls back to), nor
    /// a forced request's unless its force header says so, nor one that
    /// says nothing about the backend.
    fn guard_record(&self, route: usize, backend: usize, verdict: Verdict, elapsed: Duration) {
        if let Some(guard) = &self.table.routes[route].guard
            && self.feeds_guard
            && backend != self.table.config.routes[route].stable
            && verdict.judges_backend()
        {
            guard.record(backend, verdict, elapsed);
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        if let Some(request) = &mut self.request {
            request.ends_at(now);
        }
        match self.target {
            Some((ri, bi)) => {
                let route = &self.table.routes[ri];
                route.backends[bi].metrics.observe(self.verdict.status(), elapsed.as_secs_f64());
                self.guard_record(ri, bi, self.verdict, elapsed);
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
