//! Parity statistics per route: how often the two backends differ, where,
//! and how much of that is noise.
//!
//! Noise is learned by asking the primary backend the same question twice
//! for a sample of requests: what differs between two answers of the *same*
//! backend (timestamps, generated ids, CSRF tokens) is noise. A JSON path
//! and kind is reported only when the backends differ there significantly
//! more often than the primary differs from itself (Diffy's rule, below).
//! Counts decay with a half-life, so the verdicts follow traffic as it changes.
//! Noise is kept per (kind, path): value noise on a path never hides a type
//! or shape change there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::compare::{Difference, Kind, truncate};
use crate::config::{MirrorSpec, ParityLogSettings};

/// Half-life of the decaying counts.
pub const HALF_LIFE: Duration = Duration::from_secs(600);
/// A path is reported when raw > noise and their relative difference exceeds this…
pub const MIN_RELATIVE_DIFFERENCE: f64 = 0.20;
/// …and their absolute difference, as a share of compared requests, exceeds this.
pub const MIN_ABSOLUTE_DIFFERENCE: f64 = 0.0003;
/// Samples kept per route.
pub const SAMPLES: usize = 20;
/// Distinct (kind, path) entries tracked per route; beyond, the least seen are dropped.
pub const MAX_PATHS: usize = 2000;

/// A count that halves every [`HALF_LIFE`].
#[derive(Debug, Clone, Copy)]
struct Decaying {
    value: f64,
    at: Instant,
}

impl Decaying {
    fn new(now: Instant) -> Decaying {
        Decaying { value: 0.0, at: now }
    }

    fn get(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(dt / HALF_LIFE.as_secs_f64())
    }

    fn add(&mut self, x: f64, now: Instant) {
        self.value = self.get(now) + x;
        self.at = now;
    }
}

/// How a single difference was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Differs,
    Noise,
    Accepted,
}

struct PathStat {
    raw: Decaying,
    noise: Decaying,
    count: u64,
    left: String,
    right: String,
    accepted: Option<String>,
}

struct RouteParity {
    compared: u64,
    clean: u64,
    /// Decaying counts behind the clean share, so it follows the backend as
    /// it is fixed rather than carrying old differences for ever.
    compared_recent: Decaying,
    clean_recent: Decaying,
    mismatched: BTreeMap<Kind, u64>,
    raw_total: Decaying,
    noise_total: Decaying,
    noise_compared: u64,
    paths: HashMap<(Kind, String), PathStat>,
    samples: VecDeque<Sample>,
    outcomes: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub time: String,
    pub method: String,
    pub path: String,
    pub request_id: String,
    /// Backend names, left (stable) then right (mirror target).
    pub backends: [String; 2],
    pub statuses: [u16; 2],
    /// Which side served the client.
    pub served_by: String,
    pub differences: Vec<SampleDifference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleDifference {
    #[serde(flatten)]
    pub difference: Difference,
    pub verdict: Verdict,
}

/// The request a comparison was made for.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub backends: [&'a str; 2],
    pub statuses: [u16; 2],
    pub served_by: &'a str,
}

/// What one comparison concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub clean: bool,
    /// Kinds with at least one real difference.
    pub mismatched: Vec<Kind>,
}

#[derive(Default)]
pub struct Parity {
    routes: Mutex<HashMap<String, RouteParity>>,
    log: Mutex<Option<ParityLog>>,
}

/// Parity samples as JSON lines, rotated to `PATH.1` past `max_bytes`.
struct ParityLog {
    settings: ParityLogSettings,
    file: Option<std::fs::File>,
    written: u64,
}

impl ParityLog {
    fn write(&mut self, line: &str) {
        use std::io::Write;
        if self.written + line.len() as u64 > self.settings.max_bytes && self.written > 0 {
            self.file = None;
            let mut rotated = self.settings.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&self.settings.path, rotated);
            self.written = 0;
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new().create(true).append(true).open(&self.settings.path) {
                Ok(f) => {
                    self.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!(file = %self.settings.path.display(), error = %e, "cannot write the parity log");
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file
            && f.write_all(line.as_bytes()).is_ok()
        {
            self.written += line.len() as u64;
        }
    }
}

impl RouteParity {
    fn new(now: Instant) -> RouteParity {
        RouteParity {
            compared: 0,
            clean: 0,
            compared_recent: Decaying::new(now),
            clean_recent: Decaying::new(now),
            mismatched: BTreeMap::new(),
            raw_total: Decaying::new(now),
            noise_total: Decaying::new(now),
            noise_compared: 0,
            paths: HashMap::new(),
            samples: VecDeque::new(),
            outcomes: BTreeMap::new(),
        }
    }

    fn stat(&mut self, kind: Kind, path: &str, now: Instant) -> &mut PathStat {
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&(kind, path.to_string())) {
            // Forget the least significant path to stay bounded.
            if let Some(key) = self
                .paths
                .iter()
                .min_by(|a, b| a.1.raw.get(now).total_cmp(&b.1.raw.get(now)))
                .map(|(k, _)| k.clone())
            {
                self.paths.remove(&key);
            }
        }
        self.paths.entry((kind, path.to_string())).or_insert_with(|| PathStat {
            raw: Decaying::new(now),
            noise: Decaying::new(now),
            count: 0,
            left: String::new(),
            right: String::new(),
            accepted: None,
        })
    }

    /// The share of recent comparisons that were clean (decayed counts).
    fn recent_clean_share(&self, now: Instant) -> f64 {
        let compared = self.compared_recent.get(now);
        if compared < 1e-9 {
            0.0
        } else {
            (self.clean_recent.get(now) / compared).min(1.0)
        }
    }

    /// Diffy's rule, on decayed rates: is this path's difference real?
    fn significant(&self, stat: &PathStat, now: Instant) -> bool {
        let raw_total = self.raw_total.get(now).max(1e-9);
        let raw = stat.raw.get(now) / raw_total;
        let noise_total = self.noise_total.get(now);
        let noise = if noise_total < 1e-9 {
            0.0
        } else {
            (stat.noise.get(now) / noise_total).min(1.0)
        };
        significant(raw, noise)
    }
}

/// Diffy's rule: raw > noise, |raw − noise| / (raw + noise) > 20% and
/// |raw − noise| > 0.03% of requests. `raw` and `noise` are shares of
/// compared requests that showed the difference.
pub fn significant(raw: f64, noise: f64) -> bool {
    raw > noise && (raw - noise) / (raw + noise) > MIN_RELATIVE_DIFFERENCE && raw - noise > MIN_ABSOLUTE_DIFFERENCE
}

impl Parity {
    /// Sets (or removes) the parity log; unchanged settings keep the open file.
    pub fn set_log(&self, settings: Option<&ParityLogSettings>) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.as_ref().map(|l| &l.settings) != settings {
            *log = settings.map(|s| ParityLog {
                settings: s.clone(),
                file: None,
                written: 0,
            });
        }
    }

    fn log_sample(&self, route: &str, sample: &Sample) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = log.as_mut() {
            let mut line = serde_json::json!({ "route": route, "sample": sample }).to_string();
            line.push('\n');
            log.write(&line);
        }
    }

    fn with_route<T>(&self, route: &str, f: impl FnOnce(&mut RouteParity) -> T) -> T {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by `&str` first: the owned key is made once per route, not
        // on each of the two calls every mirrored request makes.
        if let Some(entry) = routes.get_mut(route) {
            return f(entry);
        }
        f(routes.entry(route.to_string()).or_insert_with(|| RouteParity::new(Instant::now())))
    }

    /// Counts a mirror outcome (compared, dropped, skipped, error).
    pub fn count_outcome(&self, route: &str, outcome: &'static str) {
        self.with_route(route, |r| *r.outcomes.entry(outcome).or_default() += 1);
    }

    /// Learns from two answers of the same backend.
    pub fn record_noise(&self, route: &str, diffs: &[Difference]) {
        let now = Instant::now();
        self.with_route(route, |r| {
            r.noise_total.add(1.0, now);
            r.noise_compared += 1;
            for d in unique(diffs) {
                r.stat(d.kind, &d.path, now).noise.add(1.0, now);
            }
        });
    }

    /// Records a comparison of the two backends and judges each difference.
    pub fn record(&self, route: &str, spec: &MirrorSpec, exchange: &Exchange<'_>, diffs: Vec<Difference>) -> Judgement {
        let now = Instant::now();
        // Only differences are checked against the accept rules' dates, and most exchanges have none.
        let mut today = None;
        let mut logged = None;
        let judgement = self.with_route(route, |r| {
            r.raw_total.add(1.0, now);
            r.compared += 1;
            r.compared_recent.add(1.0, now);
            let diffs: Vec<Difference> = diffs.into_iter().map(|d| redact(d, &spec.redact)).collect();
            for d in unique(&diffs) {
                let stat = r.stat(d.kind, &d.path, now);
                stat.raw.add(1.0, now);
                stat.count += 1;
                stat.left = d.left.clone();
                stat.right = d.right.clone();
            }
            let mut judged = Vec::with_capacity(diffs.len());
            for d in diffs {
                let today = *today.get_or_insert_with(|| time::OffsetDateTime::now_utc().date());
                let verdict = match spec.accept.iter().find(|a| a.covers(d.kind, &d.path, today)) {
                    Some(rule) => {
                        r.stat(d.kind, &d.path, now).accepted = Some(rule.reason.clone());
                        Verdict::Accepted
                    }
                    None => {
                        let stat = &r.paths[&(d.kind, d.path.clone())];
                        if r.significant(stat, now) {
                            Verdict::Differs
                        } else {
                            Verdict::Noise
                        }
                    }
                };
                judged.push(SampleDifference { difference: d, verdict });
            }
            let mut mismatched: Vec<Kind> = judged
                .iter()
                .filter(|d| d.verdict == Verdict::Differs)
                .map(|d| d.difference.kind)
                .collect();
            mismatched.dedup();
            mismatched.sort();
            mismatched.dedup();
            let clean = mismatched.is_empty();
            if clean {
                r.clean += 1;
                r.clean_recent.add(1.0, now);
            }
            for k in &mismatched {
                *r.mismatched.entry(*k).or_default() += 1;
            }
            if !judged.is_empty() {
                if r.samples.len() == SAMPLES {
                    r.samples.pop_front();
                }
                r.samples.push_back(Sample {
                    time: crate::control::now_rfc3339(),
                    method: exchange.method.to_string(),
                    path: truncate(exchange.path, 200),
                    request_id: exchange.request_id.to_string(),
                    backends: exchange.backends.map(str::to_string),
                    statuses: exchange.statuses,
                    served_by: exchange.served_by.to_string(),
                    differences: judged,
                });
                logged = r.samples.back().cloned();
            }
            Judgement { clean, mismatched }
        });
        if let Some(sample) = logged {
            self.log_sample(route, &sample);
        }
        judgement
    }

    /// The share of compared requests that were clean, and how many were compared.
    pub fn clean_share(&self, route: &str) -> Option<(f64, u64)> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .get(route)
            .filter(|r| r.compared > 0)
            .map(|r| (r.recent_clean_share(Instant::now()), r.compared))
    }

    /// The report of one route, for `/admin/parity` and `cutover parity`.
    pub fn report(&self, route: &str, top: usize) -> serde_json::Value {
        let now = Instant::now();
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = routes.get(route) else {
            return serde_json::json!({ "route": route, "compared": 0, "clean": 0, "clean_share": null, "outcomes": {}, "mismatch_rate": {}, "paths": [], "samples": [] });
        };
        let compared = r.compared.max(1) as f64;
        let raw_total = r.raw_total.get(now).max(1e-9);
        let noise_total = r.noise_total.get(now);
        let mut paths: Vec<(f64, serde_json::Value)> = r
            .paths
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|((kind, path), s)| {
                let rate = s.raw.get(now) / raw_total;
                let noise_rate = if noise_total < 1e-9 {
                    0.0
                } else {
                    (s.noise.get(now) / noise_total).min(1.0)
                };
                let verdict = match (&s.accepted, r.significant(s, now)) {
                    (Some(_), _) => Verdict::Accepted,
                    (None, true) => Verdict::Differs,
                    (None, false) => Verdict::Noise,
                };
                let v = serde_json::json!({
                    "kind": kind, "path": path, "verdict": verdict, "rate": round4(rate), "noise_rate": round4(noise_rate),
                    "count": s.count, "left": s.left, "right": s.right, "accepted_reason": s.accepted,
                });
                (if verdict == Verdict::Differs { 2.0 + rate } else { rate }, v)
            })
            .collect();
        paths.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mismatch_rate: BTreeMap<&str, f64> = Kind::ALL
            .iter()
            .map(|k| (k.label(), round4(r.mismatched.get(k).copied().unwrap_or(0) as f64 / compared)))
            .collect();
        serde_json::json!({
            "route": route,
            "compared": r.compared,
            "clean": r.clean,
            "clean_share": (r.compared > 0).then(|| round4(r.recent_clean_share(now))),
            "noise_samples": r.noise_compared,
            "outcomes": r.outcomes,
            "mismatch_rate": mismatch_rate,
            "paths": paths.into_iter().take(top).map(|(_, v)| v).collect::<Vec<_>>(),
            "samples": r.samples.iter().rev().collect::<Vec<_>>(),
        })
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Each (kind, path) once: several array elements can differ at one folded path.
fn unique(diffs: &[Difference]) -> impl Iterator<Item = &Difference> {
    let mut seen = std::collections::HashSet::new();
    diffs.iter().filter(move |d| seen.insert((d.kind, d.path.as_str())))
}

const SECRET_WORDS: [&str; 8] = [
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "cookie",
];

/// Hides values of credential-like fields and of the configured keys.
fn redact(mut d: Difference, extra: &[String]) -> Difference {
    let last = d.path.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
    let secret = SECRET_WORDS.iter().any(|w| last.contains(w)) || extra.contains(&last) || last == "set-cookie";
    if secret && d.kind != Kind::Shape {
        d.left = "[redacted]".into();
        d.right = "[redacted]".into();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffys_rule() {
        assert!(significant(0.5, 0.0));
        assert!(!significant(0.5, 0.5), "as noisy as the primary itself");
        assert!(!significant(0.5, 0.45), "within 20% of the noise");
        assert!(significant(1.0, 0.5));
        assert!(!significant(0.0002, 0.0), "too rare to matter");
    }

    #[test]
    fn counts_halve_every_half_life() {
        let t0 = Instant::now();
        let mut d = Decaying::new(t0);
        d.add(8.0, t0);
        assert!((d.get(t0 + HALF_LIFE) - 4.0).abs() < 1e-9);
        assert!((d.get(t0 + HALF_LIFE * 3) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn credentials_are_redacted() {
        let d = Difference {
            kind: Kind::Value,
            path: "/user/auth_token".into(),
            left: "abc".into(),
            right: "def".into(),
        };
        assert_eq!(redact(d, &[]).left, "[redacted]");
        let d = Difference {
            kind: Kind::Value,
            path: "/user/email".into(),
            left: "a@x".into(),
            right: "b@x".into(),
        };
        assert_eq!(redact(d.clone(), &[]).left, "a@x");
        assert_eq!(redact(d, &["email".into()]).left, "[redacted]");
    }
}
