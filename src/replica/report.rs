//! Keeping this replica's registration current: what it serves, whether
//! it reaches etcd, its health, guard and parity counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, ParityCounts, ReplicaInfo};
use crate::guard::Guard;
use crate::live::Live;

/// How often the registration is refreshed and the replicas listed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// This replica's parity counts for `route`.
pub fn local_parity(live: &Live, route: &str) -> ParityCounts {
    let report = live.parity.report(route, 0);
    ParityCounts {
        compared: report["compared"].as_u64().unwrap_or(0),
        clean: report["clean"].as_u64().unwrap_or(0),
        clean_share: report["clean_share"].as_f64(),
    }
}

/// This replica's registration as it stands now.
pub fn replica_info(fleet: &Fleet, live: &Live, guard: &Guard, admin: SocketAddr) -> ReplicaInfo {
    let table = live.load();
    let view = fleet.view();
    let mut details = Map::new();
    for key in ["connected", "unseeded", "rejected"] {
        details.insert(key.into(), view[key].clone());
    }
    details.insert("pending_rollbacks".into(), json!(fleet.unwritten()));
    let health: Map<String, Value> = table
        .config
        .backends
        .iter()
        .map(|b| (b.name.to_string(), json!(live.health.describe(&b.name))))
        .collect();
    details.insert("health".into(), Value::Object(health));
    let rollbacks: Map<String, Value> = table
        .config
        .routes
        .iter()
        .filter_map(|r| guard.last_rollback(&r.name).map(|e| (r.name.to_string(), json!(e))))
        .collect();
    details.insert("guard".into(), Value::Object(rollbacks));
    let parity: Map<String, Value> = table
        .config
        .routes
        .iter()
        .filter(|r| r.mirror.is_some())
        .map(|r| (r.name.to_string(), json!(local_parity(live, &r.name))))
        .collect();
    details.insert("parity".into(), Value::Object(parity));
    ReplicaInfo {
        id: fleet.replica_id().to_string(),
        admin_addr: admin.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        applied_revision: fleet.applied_revision(),
        details,
    }
}

/// Keeps this replica registered and its registration current (at once
/// when it applied a table, else every [`REPORT_EVERY`]), and lists the
/// replicas as often. Removes the registration on shutdown.
pub(crate) async fn keep_reporting(fleet: Arc<Fleet>, live: Arc<Live>, guard: Arc<Guard>, admin: SocketAddr, shutdown: CancellationToken) {
    let mut reported = replica_info(&fleet, &live, &guard, admin);
    let registration = fleet.store.register(reported.clone());
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let listing = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = fleet.wake_reporter.notified() => false,
            _ = every.tick() => true,
        };
        let now = replica_info(&fleet, &live, &guard, admin);
        if now != reported {
            registration.update(now.clone());
            reported = now;
        }
        if listing {
            match fleet.store.replicas().await {
                Ok(listed) => fleet.set_replicas(listed),
                Err(e) => tracing::debug!(error = %e, "cannot list the fleet's replicas"),
            }
        }
    }
    match registration.deregister().await {
        Ok(()) => tracing::info!("left the fleet: registration removed"),
        Err(e) => tracing::warn!(error = %e, "cannot remove this replica's registration; it expires with its lease"),
    }
}
