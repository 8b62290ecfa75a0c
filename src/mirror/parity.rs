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
//! or shape change there. It is learned per endpoint, as Diffy does: an
//! endpoint's differences are weighed against its own noise samples, so the
//! mix of endpoints in the traffic never makes one endpoint's noise look like
//! a difference. Until an endpoint has a noise sample of its own, the route's
//! samples judge it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::evidence::{EXAMPLES, Example, ExampleRequest};
use crate::compare::endpoint::{Endpoint, MAX_LEARNED, OTHER};
use crate::compare::redact::Redactor;
use crate::compare::{Difference, Kind, MAX_PATH_CHARS, MAX_VALUE_CHARS, MORE, truncate};
use crate::config::{AcceptRule, MirrorSpec, ParityLogSettings};

mod report;

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
/// Entries dropped at once when a route tracks [`MAX_PATHS`]: ranking them
/// all once per this many new paths keeps a stream of new paths cheap.
const EVICTED: usize = MAX_PATHS / 8;
/// (kind, path) entries tracked per endpoint; beyond, the least seen is dropped.
pub const MAX_ENDPOINT_PATHS: usize = 25;
/// Noise samples an endpoint needs of its own before sampling alone asks
/// for more: until then every safe request of it learns noise, so its first
/// comparisons are judged by its own noise, not the route's.
pub const WARMUP_NOISE_SAMPLES: u64 = 5;
/// Endpoints in a report, the worst first, and rows shown for each.
const REPORTED_ENDPOINTS: usize = 50;
const REPORTED_ENDPOINT_PATHS: usize = 10;

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
    endpoints: HashMap<String, EndpointStat>,
    /// Learned endpoints tracked, at most [`MAX_LEARNED`].
    learned: usize,
    /// Numbers the requests behind examples.
    requests: u64,
}

/// The comparisons of one endpoint of a route, and its noise samples.
struct EndpointStat {
    compared: u64,
    clean: u64,
    compared_recent: Decaying,
    unclean_recent: Decaying,
    noise_total: Decaying,
    noise_compared: u64,
    paths: HashMap<(Kind, String), EndpointPath>,
}

struct EndpointPath {
    raw: Decaying,
    noise: Decaying,
    /// Comparisons that differed here; 0 for a path seen only as noise.
    count: u64,
    left: String,
    right: String,
    /// The newest requests that showed the difference.
    examples: VecDeque<Example>,
}

impl EndpointStat {
    fn new(now: Instant) -> EndpointStat {
        EndpointStat {
            compared: 0,
            clean: 0,
            compared_recent: Decaying::new(now),
            unclean_recent: Decaying::new(now),
            noise_total: Decaying::new(now),
            noise_compared: 0,
            paths: HashMap::new(),
        }
    }

    /// The row of (kind, path), made when new. Making one drops the least
    /// seen row, both rates counted, past [`MAX_ENDPOINT_PATHS`].
    fn row(&mut self, d: &Difference, now: Instant) -> &mut EndpointPath {
        let key = (d.kind, d.path.clone());
        if self.paths.len() >= MAX_ENDPOINT_PATHS && !self.paths.contains_key(&key) {
            let least = self
                .paths
                .iter()
                .map(|(k, p)| (p.raw.get(now) + p.noise.get(now), k))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| k.clone());
            if let Some(least) = least {
                self.paths.remove(&least);
            }
        }
        self.paths.entry(key).or_insert_with(|| EndpointPath {
            raw: Decaying::new(now),
            noise: Decaying::new(now),
            count: 0,
            left: String::new(),
            right: String::new(),
            examples: VecDeque::with_capacity(EXAMPLES),
        })
    }

    /// The totals that judge this endpoint's rows; `None` until it has a
    /// noise sample of its own, when the route's judge them.
    fn totals(&self, now: Instant) -> Option<Totals> {
        let noise = self.noise_total.get(now);
        (noise >= 1e-9).then(|| Totals {
            raw: self.compared_recent.get(now),
            noise,
        })
    }

    fn record_noise(&mut self, diffs: &[(Difference, ())], now: Instant) {
        self.noise_total.add(1.0, now);
        self.noise_compared += 1;
        for (d, ()) in diffs {
            self.row(d, now).noise.add(1.0, now);
        }
    }

    fn record_outcome(&mut self, clean: bool, now: Instant) {
        if clean {
            self.clean += 1;
        } else {
            self.unclean_recent.add(1.0, now);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub time: String,
    pub method: String,
    pub path: String,
    /// The endpoint it counted under.
    pub endpoint: String,
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
    /// The normalised path, with its query if it had one.
    pub path: &'a str,
    pub request_id: &'a str,
    pub backends: [&'a str; 2],
    pub statuses: [u16; 2],
    pub served_by: &'a str,
}

impl Exchange<'_> {
    /// The path, and the query if there is one.
    fn split_path(&self) -> (&str, Option<&str>) {
        match self.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.path, None),
        }
    }
}

/// What one comparison concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub clean: bool,
    /// Kinds with at least one real difference.
    pub mismatched: Vec<Kind>,
    /// The endpoint it counted under: a bounded set per route.
    pub endpoint: String,
}

pub struct Parity {
    routes: Mutex<HashMap<String, RouteParity>>,
    log: Mutex<Option<ParityLog>>,
    /// When counting began, RFC 3339 UTC: where a report's time window starts.
    since: String,
}

impl Default for Parity {
    fn default() -> Parity {
        Parity {
            routes: Mutex::default(),
            log: Mutex::default(),
            since: crate::clock::now_rfc3339(),
        }
    }
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
            match open_private(&self.settings.path) {
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

/// Opens a log for appending, readable and writable by its owner only:
/// samples show response values. `mode` applies only to a file being
/// created, so one found readable by others is tightened.
fn open_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Decayed totals at one instant, of a route or of one endpoint, which
/// judge its paths.
struct Totals {
    raw: f64,
    noise: f64,
}

impl Totals {
    /// The share of compared requests that differ at a path counted `raw`
    /// times, and the share of noise samples, counted `noise` times, where
    /// the primary differed from itself there.
    fn rates(&self, raw: &Decaying, noise: &Decaying, now: Instant) -> (f64, f64) {
        let raw = (raw.get(now) / self.raw.max(1e-9)).min(1.0);
        let noise = if self.noise < 1e-9 {
            0.0
        } else {
            (noise.get(now) / self.noise).min(1.0)
        };
        (raw, noise)
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
            endpoints: HashMap::new(),
            learned: 0,
            requests: 0,
        }
    }

    /// The name `endpoint` counts under, as [`RouteParity::endpoint`] would
    /// have it, without tracking it.
    fn counted_as<'e>(&self, endpoint: &'e Endpoint) -> &'e str {
        let itself = endpoint.configured || self.learned < MAX_LEARNED || self.endpoints.contains_key(&endpoint.name);
        if itself { &endpoint.name } else { OTHER }
    }

    /// The endpoint `endpoint` counts under, tracked from now on: itself,
    /// or [`OTHER`] once [`MAX_LEARNED`] endpoints were learned; and
    /// whether it is itself. An endpoint already tracked (the usual case)
    /// costs two lookups.
    fn endpoint(&mut self, endpoint: &Endpoint, now: Instant) -> (&mut EndpointStat, bool) {
        let tracked = self.endpoints.contains_key(&endpoint.name);
        let learns = !tracked && !endpoint.configured && self.learned < MAX_LEARNED;
        let itself = tracked || endpoint.configured || learns;
        if learns {
            self.learned += 1;
        }
        let name = if itself { endpoint.name.as_str() } else { OTHER };
        if !tracked && !self.endpoints.contains_key(name) {
            self.endpoints.insert(name.to_string(), EndpointStat::new(now));
        }
        (self.endpoints.get_mut(name).expect("inserted above"), itself)
    }

    /// The entry of (kind, path), made when new. Making one may drop others
    /// (never this one) to stay within [`MAX_PATHS`].
    fn stat(&mut self, kind: Kind, path: &str, now: Instant) -> &mut PathStat {
        let key = (kind, path.to_string());
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&key) {
            self.evict(now);
        }
        self.paths.entry(key).or_insert_with(|| PathStat {
            raw: Decaying::new(now),
            noise: Decaying::new(now),
            count: 0,
            left: String::new(),
            right: String::new(),
            accepted: None,
        })
    }

    /// Forgets the [`EVICTED`] least seen entries, both rates counted: a
    /// path seen only as noise still keeps that noise from being reported.
    fn evict(&mut self, now: Instant) {
        let mut weights: Vec<(f64, &(Kind, String))> = self.paths.iter().map(|(k, s)| (s.raw.get(now) + s.noise.get(now), k)).collect();
        let n = EVICTED.min(weights.len());
        if n == 0 {
            return;
        }
        weights.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
        let forgotten: Vec<(Kind, String)> = weights[..n].iter().map(|(_, k)| (*k).clone()).collect();
        for key in &forgotten {
            self.paths.remove(key);
        }
    }

    fn totals(&self, now: Instant) -> Totals {
        Totals {
            raw: self.raw_total.get(now),
            noise: self.noise_total.get(now),
        }
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
}

/// Diffy's rule: raw > noise, |raw − noise| / (raw + noise) > 20% and
/// |raw − noise| > 0.03% of requests. `raw` and `noise` are shares of
/// compared requests that showed the difference.
pub fn significant(raw: f64, noise: f64) -> bool {
    raw > noise && (raw - noise) / (raw + noise) > MIN_RELATIVE_DIFFERENCE && raw - noise > MIN_ABSOLUTE_DIFFERENCE
}

impl Parity {
    /// When counting began, RFC 3339 UTC.
    pub fn since(&self) -> &str {
        &self.since
    }

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

    /// Has the parity log opened again by its name before the next sample
    /// is written: logrotate has moved the old file away.
    pub fn reopen_log(&self) {
        if let Some(log) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            log.file = None;
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

    /// Whether the endpoint of a `method` request to `path` (normalised,
    /// without its query) has fewer than [`WARMUP_NOISE_SAMPLES`] noise
    /// samples of its own, on route `route`.
    pub fn lacks_noise(&self, route: &str, spec: &MirrorSpec, method: &str, path: &str) -> bool {
        let endpoint = spec.endpoints.of(method, path);
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = routes.get(route) else { return true };
        r.endpoints
            .get(r.counted_as(&endpoint))
            .is_none_or(|e| e.noise_compared < WARMUP_NOISE_SAMPLES)
    }

    /// Counts a mirror outcome (compared, dropped, skipped, error).
    pub fn count_outcome(&self, route: &str, outcome: &'static str) {
        self.with_route(route, |r| *r.outcomes.entry(outcome).or_default() += 1);
    }

    /// Learns from two answers of the same backend to `exchange`'s request.
    pub fn record_noise(&self, route: &str, spec: &MirrorSpec, exchange: &Exchange<'_>, diffs: Vec<Difference>) {
        let now = Instant::now();
        // Kept under the same keys as the differences `record` sees.
        let diffs = unique(diffs.into_iter().map(|d| (stored(d, &spec.redact), ())));
        let endpoint = spec.endpoints.of(exchange.method, exchange.split_path().0);
        self.with_route(route, |r| {
            r.noise_total.add(1.0, now);
            r.noise_compared += 1;
            for (d, ()) in &diffs {
                r.stat(d.kind, &d.path, now).noise.add(1.0, now);
            }
            r.endpoint(&endpoint, now).0.record_noise(&diffs, now);
        });
    }

    /// Records a comparison of the two backends and judges each difference.
    pub fn record(&self, route: &str, spec: &MirrorSpec, exchange: &Exchange<'_>, diffs: Vec<Difference>) -> Judgement {
        let now = Instant::now();
        // Only differences are checked against the accept rules' dates, and most exchanges have none.
        let mut today = None;
        // Accept rules name paths as compared, before they are redacted or cut.
        let mut accepted_by = |d: &Difference| -> Option<&AcceptRule> {
            if spec.accept.is_empty() {
                return None;
            }
            let today = *today.get_or_insert_with(crate::clock::today_utc);
            spec.accept.iter().find(|a| a.covers(d.kind, &d.path, today))
        };
        let diffs = unique(diffs.into_iter().map(|d| {
            let rule = accepted_by(&d);
            (stored(d, &spec.redact), rule)
        }));
        let (path, query) = exchange.split_path();
        let endpoint = spec.endpoints.of(exchange.method, path);
        let sample = (!diffs.is_empty()).then(|| Sample {
            time: crate::clock::now_rfc3339(),
            method: exchange.method.to_string(),
            path: bounded(Redactor::hide_credentials(path), MAX_PATH_CHARS),
            endpoint: String::new(),
            request_id: bounded(Redactor::hide_credentials(exchange.request_id), MAX_PATH_CHARS),
            backends: exchange.backends.map(str::to_string),
            statuses: exchange.statuses,
            served_by: exchange.served_by.to_string(),
            differences: Vec::new(),
        });
        let mut logged = None;
        let judgement = self.with_route(route, |r| {
            r.raw_total.add(1.0, now);
            r.compared += 1;
            r.compared_recent.add(1.0, now);
            r.requests += 1;
            let request = sample.as_ref().map(|s| {
                Arc::new(ExampleRequest {
                    seq: r.requests,
                    request_id: s.request_id.clone(),
                    time: s.time.clone(),
                    method: s.method.clone(),
                    path: super::evidence::shown_path(path, query, &spec.redact),
                })
            });
            let totals = r.totals(now);
            // The route's rates are read at once: recording a later path may drop this one.
            let route_rated: Vec<(Difference, bool, (f64, f64))> = diffs
                .into_iter()
                .map(|(d, rule)| {
                    let stat = r.stat(d.kind, &d.path, now);
                    stat.raw.add(1.0, now);
                    stat.count += 1;
                    stat.left.clone_from(&d.left);
                    stat.right.clone_from(&d.right);
                    stat.accepted = rule.map(|a| a.reason.clone());
                    let rates = totals.rates(&stat.raw, &stat.noise, now);
                    (d, rule.is_some(), rates)
                })
                .collect();
            let (stat, itself) = r.endpoint(&endpoint, now);
            stat.compared += 1;
            stat.compared_recent.add(1.0, now);
            let endpoint_totals = stat.totals(now);
            let mut judged = Vec::with_capacity(route_rated.len());
            let mut mismatched = Vec::new();
            for (d, accepted, route_rates) in route_rated {
                let row = stat.row(&d, now);
                row.raw.add(1.0, now);
                row.count += 1;
                row.left.clone_from(&d.left);
                row.right.clone_from(&d.right);
                if let Some(request) = &request {
                    super::evidence::keep(&mut row.examples, Example::new(request, &d));
                }
                let (raw, noise) = match &endpoint_totals {
                    Some(t) => t.rates(&row.raw, &row.noise, now),
                    None => route_rates,
                };
                let verdict = if accepted {
                    Verdict::Accepted
                } else if significant(raw, noise) {
                    Verdict::Differs
                } else {
                    Verdict::Noise
                };
                if verdict == Verdict::Differs && !mismatched.contains(&d.kind) {
                    mismatched.push(d.kind);
                }
                judged.push(SampleDifference { difference: d, verdict });
            }
            mismatched.sort();
            let clean = mismatched.is_empty();
            stat.record_outcome(clean, now);
            if clean {
                r.clean += 1;
                r.clean_recent.add(1.0, now);
            }
            for k in &mismatched {
                *r.mismatched.entry(*k).or_default() += 1;
            }
            let endpoint = match itself {
                true => endpoint.name,
                false => OTHER.to_string(),
            };
            // The example values are kept by the endpoint's rows; a sample shows types.
            for j in &mut judged {
                j.difference.values = None;
            }
            if let Some(mut sample) = sample {
                sample.endpoint.clone_from(&endpoint);
                sample.differences = judged;
                if r.samples.len() == SAMPLES {
                    r.samples.pop_front();
                }
                r.samples.push_back(sample);
                logged = r.samples.back().cloned();
            }
            Judgement {
                clean,
                mismatched,
                endpoint,
            }
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
}

/// Each (kind, path) once: paths cut or redacted alike would count twice.
fn unique<T>(items: impl Iterator<Item = (Difference, T)>) -> Vec<(Difference, T)> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|(d, _)| seen.insert((d.kind, d.path.clone()))).collect()
}

/// A difference as parity keeps it: redacted, and bounded in length.
fn stored(d: Difference, redactor: &Redactor) -> Difference {
    let d = redactor.redact(d);
    Difference {
        kind: d.kind,
        path: bounded(d.path, MAX_PATH_CHARS),
        left: bounded(d.left, MAX_VALUE_CHARS),
        right: bounded(d.right, MAX_VALUE_CHARS),
        values: d.values.map(|v| Box::new(v.map(|side| bounded(side, MAX_VALUE_CHARS)))),
    }
}

/// `s` cut to `max` characters; untouched, without a copy, when shorter.
fn bounded(s: String, max: usize) -> String {
    if s.len() <= max { s } else { truncate(&s, max) }
}

#[cfg(test)]
mod tests;
