//! The parity report of a route: its rows, the worst first, its endpoints,
//! the worst first, each row with its examples.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

use super::*;
use crate::mirror::evidence::{self, EXAMPLES, Example};

impl Parity {
    /// The report of one route, for `/admin/parity` and `cutover parity`:
    /// its `top` rows, and its endpoints, the worst first.
    pub fn report(&self, route: &str, top: usize) -> Value {
        let now = Instant::now();
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = routes.get(route) else {
            return json!({ "route": route, "compared": 0, "clean": 0, "clean_share": null, "outcomes": {}, "mismatch_rate": {}, "paths": [], "endpoints": [], "samples": [] });
        };
        let compared = r.compared.max(1) as f64;
        let totals = r.totals(now);
        // A route row differs where one of its endpoints judges it to.
        let mut by_endpoints: HashMap<&(Kind, String), bool> = HashMap::new();
        for e in r.endpoints.values() {
            for (key, p) in e.paths.iter().filter(|(_, p)| p.count > 0) {
                let differs = r.judge_endpoint_row(e, key, p, &totals, now).verdict == Verdict::Differs;
                *by_endpoints.entry(key).or_default() |= differs;
            }
        }
        let mut paths: Vec<(Rank, &(Kind, String), Row)> = r
            .paths
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|(key, s)| {
                let (rate, noise_rate) = totals.rates(&s.raw, &s.noise, now);
                let mut judged = Judged::new(rate, noise_rate, s.accepted.as_ref());
                if let (Some(&differs), None) = (by_endpoints.get(key), &s.accepted) {
                    judged.verdict = if differs { Verdict::Differs } else { Verdict::Noise };
                }
                let row = Row {
                    judged,
                    rate,
                    count: s.count,
                    left: &s.left,
                    right: &s.right,
                };
                (rank(&key.1, judged.verdict, rate), key, row)
            })
            .collect();
        paths.sort_by(|a, b| by_rank(&a.0, &b.0).then_with(|| a.1.cmp(b.1)));
        let rows: Vec<Value> = paths
            .into_iter()
            .take(top)
            .map(|(_, key, row)| {
                let examples = evidence::newest(r.endpoints.values().filter_map(|e| e.paths.get(key).map(|p| &p.examples)), EXAMPLES);
                row.json(key, &examples)
            })
            .collect();
        let mismatch_rate: BTreeMap<&str, f64> = Kind::ALL
            .iter()
            .map(|k| (k.label(), round4(r.mismatched.get(k).copied().unwrap_or(0) as f64 / compared)))
            .collect();
        json!({
            "route": route,
            "compared": r.compared,
            "clean": r.clean,
            "clean_share": (r.compared > 0).then(|| round4(r.recent_clean_share(now))),
            "noise_samples": r.noise_compared,
            "outcomes": r.outcomes,
            "mismatch_rate": mismatch_rate,
            "paths": rows,
            "endpoints_tracked": r.endpoints.len(),
            "endpoints": self.endpoints_report(r, &totals, now),
            "samples": r.samples.iter().rev().collect::<Vec<_>>(),
        })
    }

    /// The worst [`REPORTED_ENDPOINTS`] endpoints: the most requests with a
    /// real difference lately first.
    fn endpoints_report(&self, r: &RouteParity, totals: &Totals, now: Instant) -> Vec<Value> {
        let mut endpoints: Vec<(f64, &String, &EndpointStat)> =
            r.endpoints.iter().map(|(n, e)| (e.unclean_recent.get(now), n, e)).collect();
        endpoints.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.2.compared.cmp(&a.2.compared)).then(a.1.cmp(b.1)));
        endpoints
            .into_iter()
            .take(REPORTED_ENDPOINTS)
            .map(|(_, name, e)| {
                let compared = e.compared_recent.get(now).max(1e-9);
                let mut rows: Vec<(Rank, &(Kind, String), Row)> = e
                    .paths
                    .iter()
                    .filter(|(_, p)| p.count > 0)
                    .map(|(key, p)| {
                        let rate = (p.raw.get(now) / compared).min(1.0);
                        let judged = r.judge_endpoint_row(e, key, p, totals, now);
                        let row = Row {
                            judged,
                            rate,
                            count: p.count,
                            left: &p.left,
                            right: &p.right,
                        };
                        (rank(&key.1, judged.verdict, rate), key, row)
                    })
                    .collect();
                rows.sort_by(|a, b| by_rank(&a.0, &b.0).then_with(|| a.1.cmp(b.1)));
                let rows: Vec<Value> = rows
                    .into_iter()
                    .take(REPORTED_ENDPOINT_PATHS)
                    .map(|(_, key, row)| row.json(key, &evidence::newest(e.paths.get(key).map(|p| &p.examples).into_iter(), EXAMPLES)))
                    .collect();
                json!({
                    "endpoint": name,
                    "compared": e.compared,
                    "clean": e.clean,
                    "clean_share": round4(1.0 - (e.unclean_recent.get(now) / compared).min(1.0)),
                    "paths": rows,
                })
            })
            .collect()
    }
}

/// How a (kind, path) is judged on a route.
#[derive(Clone, Copy)]
struct Judged<'a> {
    verdict: Verdict,
    noise_rate: f64,
    accepted: Option<&'a String>,
}

impl<'a> Judged<'a> {
    fn new(rate: f64, noise_rate: f64, accepted: Option<&'a String>) -> Judged<'a> {
        let verdict = match (accepted, significant(rate, noise_rate)) {
            (Some(_), _) => Verdict::Accepted,
            (None, true) => Verdict::Differs,
            (None, false) => Verdict::Noise,
        };
        Judged {
            verdict,
            noise_rate,
            accepted,
        }
    }
}

impl RouteParity {
    /// How endpoint `e` judges its row `key`, as [`Parity::record`] does:
    /// by its own noise samples, or the route's until it has one.
    fn judge_endpoint_row<'a>(
        &'a self,
        e: &EndpointStat,
        key: &(Kind, String),
        p: &EndpointPath,
        totals: &Totals,
        now: Instant,
    ) -> Judged<'a> {
        let stat = self.paths.get(key);
        let (rate, noise_rate) = match (e.totals(now), stat) {
            (Some(own), _) => own.rates(&p.raw, &p.noise, now),
            (None, Some(s)) => totals.rates(&s.raw, &s.noise, now),
            (None, None) => ((p.raw.get(now) / e.compared_recent.get(now).max(1e-9)).min(1.0), 0.0),
        };
        Judged::new(rate, noise_rate, stat.and_then(|s| s.accepted.as_ref()))
    }
}

/// A row of a report, route-wide or of one endpoint.
struct Row<'a> {
    judged: Judged<'a>,
    /// The share of the route's (or endpoint's) compared requests that differ there.
    rate: f64,
    count: u64,
    left: &'a str,
    right: &'a str,
}

impl Row<'_> {
    fn json(&self, (kind, path): &(Kind, String), examples: &[&Example]) -> Value {
        json!({
            "kind": kind, "path": path, "verdict": self.judged.verdict, "rate": round4(self.rate),
            "noise_rate": round4(self.judged.noise_rate), "count": self.count, "left": self.left, "right": self.right,
            "accepted_reason": self.judged.accepted, "examples": examples,
        })
    }
}

/// Real differences first, the most frequent first, and of equals the
/// count of those not listed.
type Rank = (bool, f64, bool);

fn rank(path: &str, verdict: Verdict, rate: f64) -> Rank {
    (verdict == Verdict::Differs, rate, path == MORE)
}

fn by_rank(a: &Rank, b: &Rank) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(b.2.cmp(&a.2))
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
