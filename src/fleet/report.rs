//! What a replica tells the fleet about itself (its registration), what it
//! reads of the others, and what follows from that: convergence and the
//! fleet's parity.

use serde::Serialize;
use serde_json::{Value, json};

use super::ReplicaInfo;

/// One route's parity counts, as a replica reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct ParityCounts {
    pub compared: u64,
    pub clean: u64,
    /// The share of recent comparisons that were clean.
    pub clean_share: Option<f64>,
}

impl ParityCounts {
    /// What `replica` reported for `route`.
    pub fn of(replica: &ReplicaInfo, route: &str) -> ParityCounts {
        let r = &replica.details.get("parity").and_then(|p| p.get(route));
        let count = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_u64).unwrap_or(0);
        ParityCounts {
            compared: count("compared"),
            clean: count("clean"),
            clean_share: r.and_then(|r| r.get("clean_share")).and_then(Value::as_f64),
        }
    }

    /// From (clean share, compared), the form the parity gate takes.
    pub fn from_share(share: Option<(f64, u64)>) -> ParityCounts {
        share
            .map(|(share, compared)| ParityCounts {
                compared,
                clean: 0,
                clean_share: Some(share),
            })
            .unwrap_or_default()
    }

    /// The sum over replicas; the clean share is each replica's weighted
    /// by how many requests it compared.
    pub fn sum(parts: impl IntoIterator<Item = ParityCounts>) -> ParityCounts {
        let mut total = ParityCounts::default();
        let mut weighted = 0.0;
        let mut weight = 0u64;
        for p in parts {
            total.compared += p.compared;
            total.clean += p.clean;
            if let Some(share) = p.clean_share.filter(|_| p.compared > 0) {
                weighted += share * p.compared as f64;
                weight += p.compared;
            }
        }
        total.clean_share = (weight > 0).then(|| weighted / weight as f64);
        total
    }

    /// (clean share, compared), as the parity gate takes it.
    pub fn share(&self) -> Option<(f64, u64)> {
        self.clean_share.filter(|_| self.compared > 0).map(|s| (s, self.compared))
    }
}

/// Where the fleet stands: which replicas serve the current table.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// The revision of the fleet table in etcd.
    pub revision: Option<i64>,
    /// Every live replica serves it.
    pub converged: bool,
    /// Replicas serving an older table.
    pub laggards: Vec<String>,
    /// Replicas that refused a table (config skew).
    pub rejected: Vec<Value>,
}

impl Convergence {
    pub fn of(revision: Option<i64>, replicas: &[ReplicaInfo]) -> Convergence {
        let mut laggards = Vec::new();
        let mut rejected = Vec::new();
        for r in replicas {
            if let Some(refused) = r.details.get("rejected").filter(|v| !v.is_null()) {
                rejected.push(json!({"id": r.id, "revision": refused["revision"], "reason": refused["reason"], "error": refused["error"]}));
            } else if revision.is_some() && r.applied_revision < revision {
                laggards.push(r.id.clone());
            }
        }
        Convergence {
            revision,
            converged: laggards.is_empty() && rejected.is_empty(),
            laggards,
            rejected,
        }
    }

    /// How one replica stands: `current`, `lagging` or `rejected`.
    pub fn state_of(&self, replica: &ReplicaInfo) -> &'static str {
        if self.rejected.iter().any(|r| r["id"] == replica.id.as_str()) {
            "rejected"
        } else if self.laggards.contains(&replica.id) {
            "lagging"
        } else {
            "current"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, applied: Option<i64>, details: Value) -> ReplicaInfo {
        ReplicaInfo {
            id: id.into(),
            admin_addr: "127.0.0.1:1".into(),
            version: "t".into(),
            applied_revision: applied,
            details: details.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn the_fleet_converges_when_every_replica_serves_the_current_revision() {
        let fleet = [
            replica("a", Some(9), json!({})),
            replica("b", Some(7), json!({})),
            replica(
                "c",
                Some(7),
                json!({"rejected": {"revision": 9, "reason": "skew", "error": "unknown route"}}),
            ),
        ];
        let c = Convergence::of(Some(9), &fleet);
        assert!(!c.converged);
        assert_eq!(c.laggards, ["b"]);
        assert_eq!(c.rejected[0]["id"], "c");
        assert_eq!(
            fleet.iter().map(|r| c.state_of(r)).collect::<Vec<_>>(),
            ["current", "lagging", "rejected"]
        );
        assert!(Convergence::of(Some(9), &fleet[..1]).converged);
        assert!(
            Convergence::of(None, &fleet[..2]).converged,
            "an unseeded fleet has nothing to lag behind"
        );
    }

    #[test]
    fn parity_sums_weigh_each_replica_by_what_it_compared() {
        let a = replica(
            "a",
            None,
            json!({"parity": {"api": {"compared": 300, "clean": 300, "clean_share": 1.0}}}),
        );
        let b = replica(
            "b",
            None,
            json!({"parity": {"api": {"compared": 100, "clean": 60, "clean_share": 0.6}}}),
        );
        let quiet = replica("c", None, json!({}));
        let sum = ParityCounts::sum([&a, &b, &quiet].map(|r| ParityCounts::of(r, "api")));
        assert_eq!((sum.compared, sum.clean), (400, 360));
        assert!((sum.clean_share.unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(sum.share().map(|s| s.1), Some(400));
        assert_eq!(ParityCounts::sum([ParityCounts::of(&quiet, "api")]).share(), None);
    }
}
