//! Fleet mode's admin endpoints: the fleet's replicas and convergence
//! (`GET /admin/fleet`) and the parity summed over the fleet
//! (`GET /admin/parity?fleet=true`).

use http::StatusCode;
use serde_json::{Value, json};

use super::{AdminResponse, json_error, json_response};
use crate::fleet::{Convergence, Fleet, ParityCounts, ReplicaInfo};
use crate::live::Live;

const FLEET_OFF: &str = "fleet mode is off: the config has no fleet section";

/// Every live replica, the revision each applied, and whether the fleet
/// converged on the current table. Read from etcd now; when etcd does not
/// answer, from what this replica last saw (`etcd_reachable: false`, and
/// never `converged`).
pub async fn fleet(live: &Live) -> AdminResponse {
    let Some(fleet) = live.fleet() else {
        return json_error(StatusCode::NOT_FOUND, FLEET_OFF);
    };
    let (table, listed) = tokio::join!(fleet.store.read(), fleet.store.replicas());
    let reachable = table.is_ok() && listed.is_ok();
    let (revision, unseeded) = match &table {
        Ok(t) => (t.as_ref().map(|t| t.revision), t.is_none()),
        Err(_) => (fleet.applied_revision(), fleet.is_unseeded()),
    };
    let replicas = match listed {
        Ok(listed) => {
            fleet.set_replicas(listed.clone());
            listed
        }
        Err(_) => fleet.replicas_seen(),
    };
    let convergence = Convergence::of(revision, &replicas);
    let shown: Vec<Value> = replicas
        .iter()
        .map(|r| {
            let mut v = json!(r);
            v["state"] = json!(convergence.state_of(r));
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "replica_id": fleet.replica_id(),
            "etcd_reachable": reachable,
            "unseeded": unseeded,
            "revision": convergence.revision,
            // Unverifiable while etcd does not answer.
            "converged": reachable && convergence.converged,
            "laggards": convergence.laggards,
            "rejected": convergence.rejected,
            "replicas": shown,
            "this_replica": fleet.view(),
        }),
    )
}

/// The parity report of each mirrored route (`wanted`, or all) summed over
/// every live replica: compared and clean requests, and the clean share
/// weighted by what each replica compared.
pub async fn parity(live: &Live, wanted: Option<&str>) -> AdminResponse {
    let Some(fleet) = live.fleet() else {
        return json_error(StatusCode::NOT_FOUND, FLEET_OFF);
    };
    let replicas = match fleet.store.replicas().await {
        Ok(listed) => {
            fleet.set_replicas(listed.clone());
            listed
        }
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "etcd is unreachable, so the fleet's parity cannot be summed ({e}); without fleet=true this replica's own is shown"
                ),
            );
        }
    };
    let table = live.load();
    let routes: Vec<Value> = table
        .config
        .routes
        .iter()
        .filter(|r| r.mirror.is_some() && wanted.is_none_or(|w| w == &*r.name))
        .map(|r| {
            let m = r.mirror.as_ref().expect("filtered on mirror");
            let mut report = route_parity(fleet, live, &r.name, &replicas);
            report["min_clean_share"] = json!(m.min_clean_share);
            report["backends"] = json!([&*r.backends[r.stable].spec.name, &*r.backends[m.to].spec.name]);
            report
        })
        .collect();
    match wanted {
        Some(w) if routes.is_empty() => json_error(StatusCode::NOT_FOUND, &format!("no mirrored route {w:?}")),
        _ => json_response(
            StatusCode::OK,
            &json!({ "fleet": true, "replicas": replicas.len(), "routes": routes }),
        ),
    }
}

/// One route's counts over the fleet; this replica's own are taken now.
fn route_parity(fleet: &Fleet, live: &Live, route: &str, replicas: &[ReplicaInfo]) -> Value {
    let own = crate::replica::report::local_parity(live, route);
    let mut per_replica = vec![(fleet.replica_id().to_string(), own)];
    per_replica.extend(
        replicas
            .iter()
            .filter(|r| r.id != fleet.replica_id())
            .map(|r| (r.id.clone(), ParityCounts::of(r, route))),
    );
    let sum = ParityCounts::sum(per_replica.iter().map(|(_, p)| *p));
    json!({
        "route": route,
        "compared": sum.compared,
        "clean": sum.clean,
        "clean_share": sum.clean_share.map(|s| (s * 10_000.0).round() / 10_000.0),
        "per_replica": per_replica.iter().map(|(id, p)| json!({"id": id, "compared": p.compared, "clean": p.clean, "clean_share": p.clean_share})).collect::<Vec<_>>(),
    })
}
