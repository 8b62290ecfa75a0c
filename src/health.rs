//! Backend health: active checks and passive ejection on live traffic.
//!
//! A backend is healthy when its active check (if any) passes and it is not
//! ejected. Passive ejection follows `consecutive_failures` connect failures,
//! resets or 5xx answers in a row, and lasts `cool_off`. State is kept per
//! backend name and survives reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, header};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::{BackendSpec, Config, HealthCheckSpec, PassiveSpec};
use crate::metrics::Metrics;
use crate::upstream::{BackendClient, RequestBody};

/// One backend's health, read on every request with two atomic loads.
#[derive(Debug)]
pub struct BackendHealth {
    name: Arc<str>,
    /// False while the active check says unhealthy (always true without one).
    active_ok: AtomicBool,
    /// Ejected until this time (ms on the process clock); 0 when not ejected.
    ejected_until: AtomicU64,
    failures: AtomicU32,
    /// Passive ejections since start, read by the guard.
    ejections: AtomicU64,
    passive: Mutex<Option<PassiveSpec>>,
}

impl BackendHealth {
    fn new(name: Arc<str>) -> BackendHealth {
        BackendHealth {
            name,
            active_ok: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            passive: Mutex::new(None),
        }
    }

    pub fn is_healthy(&self) -> bool {
        // Never ejected (the common case): no clock read on the request path.
        let until = self.ejected_until.load(Ordering::Relaxed);
        self.active_ok.load(Ordering::Relaxed) && (until == 0 || now_ms() >= until)
    }

    /// How many times passive ejection has taken this backend out.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Records the outcome of a live exchange: `ok` is a response below 500.
    pub fn record(&self, ok: bool) {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let Some(passive) = *self.passive.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= passive.consecutive_failures && now_ms() >= self.ejected_until.load(Ordering::Relaxed) {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until
                .store(now_ms() + passive.cool_off.as_millis() as u64, Ordering::Relaxed);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend = %self.name, failures, cool_off = ?passive.cool_off, "backend ejected after consecutive failures");
        }
    }
}

struct Entry {
    spec: Arc<BackendSpec>,
    state: Arc<BackendHealth>,
    checker: Option<CancellationToken>,
}

/// Health states by backend name, and their active checkers.
#[derive(Default)]
pub struct HealthRegistry {
    entries: Mutex<HashMap<String, Entry>>,
    running: AtomicBool,
}

impl HealthRegistry {
    /// The state for a backend; created on first use, kept across reloads.
    pub fn state(&self, spec: &Arc<BackendSpec>) -> Arc<BackendHealth> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(spec.name.to_string()).or_insert_with(|| Entry {
            spec: spec.clone(),
            state: Arc::new(BackendHealth::new(spec.name.clone())),
            checker: None,
        });
        *entry.state.passive.lock().unwrap_or_else(|e| e.into_inner()) = spec.passive;
        entry.state.clone()
    }

    /// Starts, restarts or stops active checkers to match `config`.
    /// `upstream` gives the client for a backend.
    pub fn sync(&self, config: &Config, upstream: impl Fn(&Arc<BackendSpec>) -> Arc<BackendClient>, metrics: &Arc<Metrics>) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|name, entry| {
            let keep = config.backends.iter().any(|b| *b.name == **name);
            if !keep && let Some(token) = &entry.checker {
                token.cancel();
            }
            keep
        });
        for spec in &config.backends {
            let Some(entry) = entries.get_mut(&*spec.name) else {
                continue;
            };
            let changed = *entry.spec != **spec;
            if changed || (entry.checker.is_none() && spec.health_check.is_some()) {
                if let Some(token) = entry.checker.take() {
                    token.cancel();
                }
                entry.spec = spec.clone();
                match &spec.health_check {
                    Some(check) => {
                        let token = CancellationToken::new();
                        tokio::spawn(run_checker(entry.state.clone(), check.clone(), upstream(spec), token.clone()));
                        entry.checker = Some(token);
                    }
                    None => entry.state.active_ok.store(true, Ordering::Relaxed),
                }
            }
        }
        drop(entries);
        self.publish(metrics);
    }

    /// Enables active checks (not wanted when the CLI edits files offline).
    pub fn start(&self) {
        self.running.store(true, Ordering::SeqCst);
    }

    /// Updates `cutover_backend_healthy` for every backend.
    pub fn publish(&self, metrics: &Metrics) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        metrics.backend_healthy.reset();
        for (name, entry) in entries.iter() {
            metrics
                .backend_healthy
                .with_label_values(&[name])
                .set(i64::from(entry.state.is_healthy()));
        }
    }

    /// "healthy", "unhealthy (check failing)" or "ejected (…)", for status.
    pub fn describe(&self, backend: &str) -> String {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get(backend) else {
            return "unknown".into();
        };
        let s = &entry.state;
        let until = s.ejected_until.load(Ordering::Relaxed);
        if !s.active_ok.load(Ordering::Relaxed) {
            "unhealthy (check failing)".into()
        } else if now_ms() < until {
            format!("ejected ({} s left)", (until - now_ms()).div_ceil(1000))
        } else if entry.spec.health_check.is_some() {
            "healthy".into()
        } else {
            "healthy (passive)".into()
        }
    }
}

async fn run_checker(state: Arc<BackendHealth>, check: HealthCheckSpec, upstream: Arc<BackendClient>, stop: CancellationToken) {
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut every = tokio::time::interval(check.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let ok = probe(&upstream, &check).await;
        if ok {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let healthy = state.active_ok.load(Ordering::Relaxed);
        if healthy && failures >= check.unhealthy_threshold {
            state.active_ok.store(false, Ordering::Relaxed);
            tracing::warn!(backend = %state.name, failures, "backend unhealthy: health check failing");
        } else if !healthy && successes >= check.healthy_threshold {
            state.active_ok.store(true, Ordering::Relaxed);
            // A recovered backend starts with a clean passive record.
            state.ejected_until.store(0, Ordering::Relaxed);
            tracing::info!(backend = %state.name, successes, "backend healthy again");
        }
    }
}

async fn probe(upstream: &BackendClient, check: &HealthCheckSpec) -> bool {
    let spec = &upstream.spec;
    let uri = format!("{}{}", spec.url.base_path, check.path);
    let Ok(mut req) = Request::get(uri).body(RequestBody::full(bytes::Bytes::new())) else {
        return false;
    };
    let host = check
        .host
        .as_ref()
        .or(spec.host_header.as_ref())
        .cloned()
        .unwrap_or_else(|| header::HeaderValue::from_str(spec.url.authority.as_str()).expect("valid"));
    req.headers_mut().insert(header::HOST, host);
    req.headers_mut()
        .insert(header::USER_AGENT, header::HeaderValue::from_static("cutover-health-check"));
    let exchange = async {
        let resp = upstream.send(req).await.ok()?;
        let status = resp.status();
        // Read the body so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        Some(status.is_success() || status.is_redirection())
    };
    matches!(tokio::time::timeout(check.timeout, exchange).await, Ok(Some(true)))
}

/// How often `cutover_backend_healthy` is refreshed (ejections end on their own).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_eject_a_backend_until_its_cool_off_ends() {
        let health = BackendHealth::new("new".into());
        *health.passive.lock().unwrap() = Some(PassiveSpec {
            consecutive_failures: 2,
            cool_off: Duration::from_millis(200),
        });
        assert!(health.is_healthy(), "a backend starts healthy");
        health.record(false);
        assert!(health.is_healthy(), "one failure of two allowed does not eject");
        health.record(true);
        health.record(false);
        assert!(health.is_healthy(), "a success in between resets the count");
        health.record(false);
        assert!(!health.is_healthy(), "two failures in a row eject");
        std::thread::sleep(Duration::from_millis(300));
        assert!(health.is_healthy(), "the ejection ends with the cool-off");
    }
}
