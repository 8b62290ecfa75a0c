//! The parity report: built once, as JSON, from a config and its parity
//! statistics (`/admin/parity`, `cutover replay --json`), and read back into
//! [`ParityReport`] to be rendered, e.g. as the Markdown sign-off document
//! ([`markdown`]) that `cutover parity` and `cutover replay` both write.

pub mod markdown;
pub mod replay;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::mirror::parity::Parity;
use replay::ReplaySummary;

/// Difference rows listed per route.
pub const TOP_PATHS: usize = 25;

/// The report of each route of `config` that mirrors (only `wanted`, when
/// named), as `/admin/parity` lists them: the parity statistics with the
/// route's bar, its compared backends and its accept rules.
pub fn route_reports(config: &Config, parity: &Parity, wanted: Option<&str>) -> Vec<Value> {
    config
        .routes
        .iter()
        .filter(|r| wanted.is_none_or(|w| w == &*r.name))
        .filter_map(|r| {
            let m = r.mirror.as_ref()?;
            let mut report = parity.report(&r.name, TOP_PATHS);
            report["min_clean_share"] = json!(m.min_clean_share);
            report["backends"] = json!([&*r.backends[r.stable].spec.name, &*r.backends[m.to].spec.name]);
            report["accept"] = m
                .accept
                .iter()
                .map(|a| json!({"kind": a.kind, "path": a.pattern, "reason": a.reason, "until": a.until.map(|d| d.to_string())}))
                .collect();
            Some(report)
        })
        .collect()
}

/// The whole report, as `/admin/parity` answers it: the routes and the time
/// window their counts cover.
pub fn parity_json(config: &Config, parity: &Parity, wanted: Option<&str>) -> Value {
    json!({
        "routes": route_reports(config, parity, wanted),
        "window": Window { from: Some(parity.since().to_string()), to: Some(crate::clock::now_rfc3339()) },
    })
}

/// A parity report as read back from its JSON. Every field has a default,
/// so a report from an older or newer proxy still renders.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ParityReport {
    pub routes: Vec<RouteReport>,
    pub window: Option<Window>,
    /// Where the compared traffic came from, in words.
    pub source: Option<String>,
    /// What `cutover replay` read, sent and left out.
    pub replay: Option<ReplaySummary>,
}

/// The time the counts cover, RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Window {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteReport {
    pub route: String,
    /// Stable, then mirror target.
    pub backends: Vec<String>,
    pub compared: u64,
    pub clean: u64,
    pub clean_share: Option<f64>,
    pub min_clean_share: Option<f64>,
    pub noise_samples: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub mismatch_rate: BTreeMap<String, f64>,
    pub paths: Vec<PathRow>,
    pub samples: Vec<SampleRow>,
    pub accept: Vec<AcceptRow>,
    pub endpoints: Vec<EndpointReport>,
}

/// One (kind, JSON path) and how it was judged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PathRow {
    pub kind: String,
    pub path: String,
    /// `differs`, `noise` or `accepted`.
    pub verdict: String,
    pub rate: f64,
    pub noise_rate: f64,
    pub count: u64,
    pub left: String,
    pub right: String,
    pub accepted_reason: Option<String>,
    /// Requests that showed the difference, when the proxy keeps them.
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Example {
    pub time: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub request_id: Option<String>,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// A recent request with differences.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleRow {
    pub time: String,
    pub method: String,
    pub path: String,
    pub request_id: String,
    pub statuses: Vec<u16>,
    pub served_by: String,
    pub differences: Vec<SampleDifference>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleDifference {
    pub kind: String,
    pub path: String,
    pub left: String,
    pub right: String,
    pub verdict: String,
}

/// A route's `accept` rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AcceptRow {
    pub kind: String,
    pub path: String,
    pub reason: String,
    /// Last day the rule holds (`YYYY-MM-DD`); none: no end.
    pub until: Option<String>,
}

/// The comparisons of one endpoint (method and path template) of a route.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointReport {
    pub endpoint: String,
    pub compared: u64,
    pub clean: u64,
    pub paths: Vec<PathRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_missing_fields_or_with_unknown_ones_still_reads() {
        let report: ParityReport = serde_json::from_value(json!({
            "routes": [{"route": "api", "compared": 3, "paths": [{"kind": "shape", "path": "/a", "future": 1}], "later": true}],
            "unknown": {}
        }))
        .unwrap();
        assert_eq!(report.routes[0].route, "api");
        assert_eq!(report.routes[0].paths[0].path, "/a");
        assert!(report.routes[0].endpoints.is_empty());
        assert!(report.window.is_none());
    }
}
