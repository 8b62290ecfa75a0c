//! Prometheus metrics. Names and labels are part of the product's contract.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Label value for requests that matched no route.
pub const NO_ROUTE: &str = "-";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub backend_weight: GaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_version: IntGaugeVec,
    pub active_connections: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub rollbacks: IntCounterVec,
    pub mirror_requests: IntCounterVec,
    pub parity_mismatches: IntCounterVec,
    pub parity_endpoint_mismatches: IntCounterVec,
    pub backend_healthy: IntGaugeVec,
    pub retries: IntCounterVec,
    /// Fleet mode's metrics; exposed once [`Metrics::register_fleet`] is called.
    pub fleet: FleetMetrics,
}

/// Fleet mode's gauges and counters.
#[derive(Clone)]
pub struct FleetMetrics {
    pub weights_revision: IntGauge,
    pub connected: IntGauge,
    pub replicas: IntGauge,
    pub rejected: IntCounterVec,
    pub pending_writes: IntGauge,
}

/// The `reason` labels of `cutover_fleet_rejected_total`.
pub const FLEET_REJECTED_REASONS: [&str; 2] = ["skew", "unreadable"];

impl FleetMetrics {
    fn new() -> FleetMetrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        FleetMetrics {
            weights_revision: gauge(
                "cutover_fleet_weights_revision",
                "The etcd revision of the fleet weight table this replica applied (0 before it applied one).",
            ),
            connected: gauge("cutover_fleet_connected", "1 while this replica's watch on the fleet table in etcd is live, else 0."),
            replicas: gauge("cutover_fleet_replicas", "Live replicas registered in the fleet, as last listed from etcd."),
            rejected: IntCounterVec::new(
                Opts::new(
                    "cutover_fleet_rejected_total",
                    "Fleet weight tables this replica refused, by reason: skew (the table does not fit this replica's config), unreadable (not text).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            pending_writes: gauge(
                "cutover_fleet_pending_writes",
                "Rollbacks live on this replica that are not yet written to etcd (etcd unreachable).",
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "cutover_requests_total",
                "Requests proxied, by route, backend and status class (or error when the backend gave no response or cut its body short).",
            ),
            &["route", "backend", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "cutover_request_duration_seconds",
                "Time from receiving a request to the end of its response body.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "backend"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "cutover_upstream_errors_total",
                "Failed exchanges with a backend, by kind (connect, timeout, reset, protocol, body).",
            ),
            &["route", "backend", "kind"],
        )
        .expect("valid metric");
        let backend_weight = GaugeVec::new(
            Opts::new(
                "cutover_backend_weight_percent",
                "Live weight of each backend of each route, in percent.",
            ),
            &["route", "backend"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("cutover_config_reloads_total", "Config and weight reloads, by result."),
            &["result"],
        )
        .expect("valid metric");
        let config_version = IntGaugeVec::new(
            Opts::new(
                "cutover_config_version_info",
                "Always 1; the label is a hash of the live config and weights.",
            ),
            &["version"],
        )
        .expect("valid metric");
        let active_connections = IntGaugeVec::new(
            Opts::new("cutover_active_connections", "Open client connections, by listener."),
            &["listener"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "cutover_connections_refused_total",
                "Client connections refused, by listener and reason: limit (closed at once: the listener was at server.max_connections; on the admin listener, the oldest idle connection closed to make room), emfile (an attempt to accept failed for want of file descriptors, retried with backoff).",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "cutover_access_log_dropped_total",
            "Access log lines dropped because the log writer could not keep up.",
        )
        .expect("valid metric");
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "cutover_rollbacks_total",
                "Rollbacks to the stable backend, by route and reason (manual, guard).",
            ),
            &["route", "reason"],
        )
        .expect("valid metric");
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "cutover_mirror_requests_total",
                "Shadow requests by route and outcome (compared, dropped, skipped, error).",
            ),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let parity_mismatches = IntCounterVec::new(
            Opts::new(
                "cutover_parity_mismatches_total",
                "Compared requests whose backends differed, by route and kind of difference (noise and accepted differences excluded).",
            ),
            &["route", "kind"],
        )
        .expect("valid metric");
        let parity_endpoint_mismatches = IntCounterVec::new(
            Opts::new(
                "cutover_parity_endpoint_mismatches_total",
                "Compared requests with at least one real difference, by route and endpoint (method and path template; at most 200 learned per route, the rest as `other`).",
            ),
            &["route", "endpoint"],
        )
        .expect("valid metric");
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "cutover_backend_healthy",
                "1 when the backend is healthy (active check passing and not ejected), else 0.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "cutover_retries_total",
                "Requests sent again after the backend gave no answer, by route and the backend that failed.",
            ),
            &["route", "backend"],
        )
        .expect("valid metric");
        for c in [
            Box::new(rollbacks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(backend_healthy.clone()),
            Box::new(retries.clone()),
            Box::new(mirror_requests.clone()),
            Box::new(parity_mismatches.clone()),
            Box::new(parity_endpoint_mismatches.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(backend_weight.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_version.clone()),
            Box::new(active_connections.clone()),
            Box::new(connections_refused.clone()),
            Box::new(access_log_dropped.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        // Both results exist from the start so rate() and alerts see a zero.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            fleet: FleetMetrics::new(),
            requests,
            request_duration,
            upstream_errors,
            backend_weight,
            config_reloads,
            config_version,
            active_connections,
            connections_refused,
            access_log_dropped,
            rollbacks,
            mirror_requests,
            parity_mismatches,
            parity_endpoint_mismatches,
            backend_healthy,
            retries,
        }
    }

    /// Exposes the fleet metrics (fleet mode). Called once.
    pub fn register_fleet(&self) {
        let f = &self.fleet;
        for c in [
            Box::new(f.weights_revision.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(f.connected.clone()),
            Box::new(f.replicas.clone()),
            Box::new(f.rejected.clone()),
            Box::new(f.pending_writes.clone()),
        ] {
            if let Err(e) = self.registry.register(c) {
                tracing::debug!(error = %e, "fleet metric already registered");
            }
        }
        for reason in FLEET_REJECTED_REASONS {
            f.rejected.with_label_values(&[reason]);
        }
    }

    /// Resolved per-(route, backend) handles, so the request path does no label lookups.
    pub fn route_backend(&self, route: &str, backend: &str) -> RouteBackendMetrics {
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"].map(|code| self.requests.with_label_values(&[route, backend, code]));
        RouteBackendMetrics {
            by_class,
            duration: self.request_duration.with_label_values(&[route, backend]),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Clone)]
pub struct RouteBackendMetrics {
    by_class: [IntCounter; 6],
    duration: Histogram,
}

impl RouteBackendMetrics {
    /// Records one finished exchange; `status` is `None` when the backend gave no response.
    pub fn observe(&self, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(s @ 100..=599) => usize::from(s / 100 - 1),
            _ => 5,
        };
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }

    /// (all requests, failed ones: 5xx or no response).
    pub fn counts(&self) -> (u64, u64) {
        let total = self.by_class.iter().map(IntCounter::get).sum();
        (total, self.by_class[4].get() + self.by_class[5].get())
    }
}

/// What became of a request its route would mirror: the `outcome` label of
/// `cutover_mirror_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
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

impl ShadowOutcome {
    pub const ALL: [ShadowOutcome; 4] = [
        ShadowOutcome::Compared,
        ShadowOutcome::Dropped,
        ShadowOutcome::Skipped,
        ShadowOutcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ShadowOutcome::Compared => "compared",
            ShadowOutcome::Dropped => "dropped",
            ShadowOutcome::Skipped => "skipped",
            ShadowOutcome::Error => "error",
        }
    }
}

/// A mirrored route's `cutover_mirror_requests_total` counters, resolved
/// when the table is built: looking one up by its label values would hash
/// them on every mirrored request.
pub struct ShadowOutcomeCounters([IntCounter; 4]);

impl ShadowOutcomeCounters {
    pub fn new(metrics: &Metrics, route: &str) -> ShadowOutcomeCounters {
        ShadowOutcomeCounters(ShadowOutcome::ALL.map(|o| metrics.mirror_requests.with_label_values(&[route, o.label()])))
    }

    pub fn count(&self, outcome: ShadowOutcome) {
        // `ALL` lists the outcomes in declaration order.
        self.0[outcome as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, ShadowOutcome, ShadowOutcomeCounters};

    #[test]
    fn every_shadow_outcome_counts_under_its_own_label() {
        let metrics = Metrics::new();
        let counters = ShadowOutcomeCounters::new(&metrics, "api");
        for (times, outcome) in (1..).zip(ShadowOutcome::ALL) {
            for _ in 0..times {
                counters.count(outcome);
            }
        }
        for (times, outcome) in (1..).zip(ShadowOutcome::ALL) {
            let counted = metrics.mirror_requests.with_label_values(&["api", outcome.label()]).get();
            assert_eq!(counted, times, "{outcome:?}");
        }
        assert_eq!(
            ShadowOutcome::ALL.map(ShadowOutcome::label),
            ["compared", "dropped", "skipped", "error"]
        );
    }
}
