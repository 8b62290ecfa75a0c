//! The guard's recorder: per guarded route, each non-stable backend's
//! recent traffic in a sliding window of one-second slots — requests,
//! failures (5xx and no answer), a latency histogram, mirror comparisons,
//! passive ejections — and the verdict on it ([`breach`]). The windows are
//! per-table data, fed by the request path; the guard's controller
//! (`crate::guard`) reads them and rolls back.
//!
//! A request the split gives a non-stable backend while it is down
//! (ejected, or failing its active check) is served by another backend and
//! recorded here as a failed request ("diverted"), so the window keeps
//! filling at the backend's share of the traffic and the error rate judges
//! it as if it were still answering 5xx.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::now_secs;
use crate::config::GuardSpec;
use crate::upstream::Verdict;

/// Upper bounds (ms) of the latency histogram used for p99.
const LATENCY_BOUNDS_MS: [u64; 26] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000, 3000, 5000, 10000,
];

#[derive(Clone, Default)]
struct Slot {
    second: u64,
    /// Exchanges with the backend (the latency histogram counts these).
    requests: u64,
    failures: u64,
    latency: [u32; LATENCY_BOUNDS_MS.len() + 1],
    /// Requests the split gave the backend while it was down, served elsewhere.
    diverted: u64,
    ejections: u64,
    compared: u64,
    mismatched: u64,
}

/// One backend's recent traffic.
#[derive(Default)]
pub struct Window {
    slots: Mutex<VecDeque<Slot>>,
}

impl Window {
    fn with_slot(&self, keep: u64, f: impl FnOnce(&mut Slot)) {
        let now = now_secs();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.back().is_none_or(|s| s.second != now) {
            slots.push_back(Slot {
                second: now,
                ..Slot::default()
            });
        }
        while slots.front().is_some_and(|s| s.second + keep <= now) {
            slots.pop_front();
        }
        f(slots.back_mut().expect("pushed above"));
    }

    /// A finished exchange, failed as [`Verdict::fault`] decides.
    pub fn record(&self, keep: u64, verdict: Verdict, elapsed: Duration) {
        let ms = elapsed.as_millis() as u64;
        let bucket = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.with_slot(keep, |s| {
            s.requests += 1;
            s.failures += u64::from(verdict.fault().is_some());
            s.latency[bucket] += 1;
        });
    }

    /// A request the split gave this backend, served by another because
    /// this one was down.
    pub fn record_diverted(&self, keep: u64) {
        self.with_slot(keep, |s| s.diverted += 1);
    }

    /// Passive ejections of this backend since the last call.
    pub fn record_ejections(&self, keep: u64, ejections: u64) {
        self.with_slot(keep, |s| s.ejections += ejections);
    }

    /// A mirror comparison involving this backend.
    pub fn record_comparison(&self, keep: u64, clean: bool) {
        self.with_slot(keep, |s| {
            s.compared += 1;
            s.mismatched += u64::from(!clean);
        });
    }

    fn stats(&self, keep: u64) -> WindowStats {
        let now = now_secs();
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = Slot::default();
        for s in slots.iter().filter(|s| s.second + keep > now) {
            total.requests += s.requests;
            total.failures += s.failures;
            total.diverted += s.diverted;
            total.ejections += s.ejections;
            total.compared += s.compared;
            total.mismatched += s.mismatched;
            for (t, c) in total.latency.iter_mut().zip(s.latency) {
                *t += c;
            }
        }
        let p99 = (total.requests > 0).then(|| {
            let target = (total.requests as f64 * 0.99).ceil() as u64;
            let mut seen = 0u64;
            let i = total.latency.iter().position(|&c| {
                seen += u64::from(c);
                seen >= target
            });
            Duration::from_millis(i.and_then(|i| LATENCY_BOUNDS_MS.get(i).copied()).unwrap_or(30_000))
        });
        let requests = total.requests + total.diverted;
        WindowStats {
            requests,
            error_rate: ratio(total.failures + total.diverted, requests),
            diverted: total.diverted,
            ejections: total.ejections,
            p99,
            compared: total.compared,
            mismatch_rate: ratio(total.mismatched, total.compared),
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowStats {
    /// Exchanges with the backend plus requests diverted from it.
    pub requests: u64,
    /// Failed exchanges and diverted requests, over `requests`.
    pub error_rate: f64,
    pub diverted: u64,
    pub ejections: u64,
    #[serde(serialize_with = "as_ms")]
    pub p99: Option<Duration>,
    pub compared: u64,
    pub mismatch_rate: f64,
}

fn as_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

/// A route's guard windows, one per backend (the stable one's unused).
pub struct RouteGuard {
    pub spec: GuardSpec,
    stable: usize,
    windows: Vec<Window>,
    /// Per backend, its ejection count when the windows last took it in.
    ejections_seen: Box<[AtomicU64]>,
}

impl RouteGuard {
    /// `ejections` holds each backend's ejection count so far: only later
    /// ejections count against it.
    pub fn new(spec: GuardSpec, stable: usize, ejections: impl Iterator<Item = u64>) -> RouteGuard {
        let ejections_seen: Box<[AtomicU64]> = ejections.map(AtomicU64::new).collect();
        RouteGuard {
            spec,
            stable,
            windows: (0..ejections_seen.len()).map(|_| Window::default()).collect(),
            ejections_seen,
        }
    }

    fn keep(&self) -> u64 {
        self.spec.window.as_secs().max(1)
    }

    pub fn record(&self, backend: usize, verdict: Verdict, elapsed: Duration) {
        self.windows[backend].record(self.keep(), verdict, elapsed);
    }

    /// The split gave `backend` a request, but it was down and another
    /// backend served it. Counted against non-stable backends only.
    pub fn record_diverted(&self, backend: usize) {
        if backend != self.stable {
            self.windows[backend].record_diverted(self.keep());
        }
    }

    /// Takes in `backend`'s ejection count (ever), recording new ejections.
    pub fn take_ejections(&self, backend: usize, total: u64) {
        let before = self.ejections_seen[backend].swap(total, Ordering::Relaxed);
        if total > before {
            self.windows[backend].record_ejections(self.keep(), total - before);
        }
    }

    pub fn record_comparison(&self, backend: usize, clean: bool) {
        self.windows[backend].record_comparison(self.keep(), clean);
    }

    pub fn stats(&self, backend: usize) -> WindowStats {
        self.windows[backend].stats(self.keep())
    }
}

/// Why a backend's window breaches the guard, if it does.
pub fn breach(spec: &GuardSpec, stats: &WindowStats) -> Option<String> {
    let window = humantime::format_duration(spec.window);
    if stats.requests >= spec.min_requests {
        if let Some(max) = spec.max_error_rate
            && stats.error_rate > max
        {
            let diverted = match stats.diverted {
                0 => String::new(),
                n => format!(", {n} diverted while it was down"),
            };
            return Some(format!(
                "error rate {:.1}% > {:.1}% over {window} ({} requests{diverted})",
                stats.error_rate * 100.0,
                max * 100.0,
                stats.requests
            ));
        }
        // Latency is judged on answered requests only.
        if let (Some(max), Some(p99)) = (spec.max_p99_latency, stats.p99)
            && stats.requests - stats.diverted >= spec.min_requests
            && p99 > max
        {
            return Some(format!(
                "p99 latency {} ms > {} ms over {window} ({} requests)",
                p99.as_millis(),
                max.as_millis(),
                stats.requests
            ));
        }
    }
    if let Some(max) = spec.max_mismatch_rate
        && stats.compared >= spec.min_requests
        && stats.mismatch_rate > max
    {
        return Some(format!(
            "parity mismatch rate {:.1}% > {:.1}% over {window} ({} compared)",
            stats.mismatch_rate * 100.0,
            max * 100.0,
            stats.compared
        ));
    }
    if let Some(max) = spec.max_ejections
        && stats.ejections >= u64::from(max)
    {
        return Some(format!("ejected {} times over {window} (max_ejections {max})", stats.ejections));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GuardSpec {
        GuardSpec {
            max_error_rate: Some(0.05),
            max_p99_latency: Some(Duration::from_millis(800)),
            max_mismatch_rate: Some(0.02),
            window: Duration::from_secs(60),
            min_requests: 50,
            max_ejections: Some(3),
            ramp: None,
        }
    }

    #[test]
    fn no_verdict_without_enough_traffic() {
        let w = Window::default();
        for _ in 0..49 {
            w.record(60, Verdict::Answered(500), Duration::from_millis(5));
        }
        assert_eq!(breach(&spec(), &w.stats(60)), None);
        w.record(60, Verdict::Answered(500), Duration::from_millis(5));
        assert!(breach(&spec(), &w.stats(60)).unwrap().starts_with("error rate 100.0% > 5.0%"));
    }

    #[test]
    fn requests_diverted_from_a_backend_that_is_down_count_as_failures() {
        let w = Window::default();
        for _ in 0..5 {
            w.record(60, Verdict::Answered(500), Duration::from_millis(5));
        }
        for _ in 0..44 {
            w.record_diverted(60);
        }
        let stats = w.stats(60);
        assert_eq!((stats.requests, stats.diverted), (49, 44));
        assert_eq!(breach(&spec(), &stats), None, "below min_requests");
        w.record_diverted(60);
        assert_eq!(
            breach(&spec(), &w.stats(60)).unwrap(),
            "error rate 100.0% > 5.0% over 1m (50 requests, 45 diverted while it was down)"
        );
        // Latency is not judged on the 5 that were answered.
        let slow = GuardSpec {
            max_error_rate: None,
            ..spec()
        };
        let w = Window::default();
        w.record(60, Verdict::Answered(200), Duration::from_millis(3000));
        for _ in 0..60 {
            w.record_diverted(60);
        }
        assert_eq!(breach(&slow, &w.stats(60)), None);
    }

    #[test]
    fn repeated_ejections_breach_whatever_the_traffic() {
        let guard = RouteGuard::new(spec(), 0, [0, 7].into_iter());
        guard.take_ejections(1, 7);
        assert_eq!(guard.stats(1).ejections, 0, "ejections before the table count for nothing");
        guard.take_ejections(1, 9);
        assert_eq!(breach(&guard.spec, &guard.stats(1)), None);
        guard.take_ejections(1, 10);
        assert_eq!(
            breach(&guard.spec, &guard.stats(1)).unwrap(),
            "ejected 3 times over 1m (max_ejections 3)"
        );
        let off = GuardSpec {
            max_ejections: None,
            ..spec()
        };
        assert_eq!(breach(&off, &guard.stats(1)), None);
        guard.record_diverted(0);
        assert_eq!(guard.stats(0).requests, 0, "the stable backend is never judged");
    }

    #[test]
    fn p99_and_mismatch_breaches() {
        let w = Window::default();
        for i in 0..100 {
            w.record(60, Verdict::Answered(200), Duration::from_millis(if i < 5 { 1500 } else { 20 }));
        }
        assert_eq!(w.stats(60).p99, Some(Duration::from_millis(1500)));
        assert!(breach(&spec(), &w.stats(60)).unwrap().starts_with("p99 latency 1500 ms > 800 ms"));
        let w = Window::default();
        for i in 0..60 {
            w.record(60, Verdict::Answered(200), Duration::from_millis(3));
            w.record_comparison(60, i % 10 != 0);
        }
        assert!(
            breach(&spec(), &w.stats(60))
                .unwrap()
                .starts_with("parity mismatch rate 10.0% > 2.0%")
        );
    }
}
