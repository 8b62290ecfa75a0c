//! A replica's link to its fleet: the fleet table it applied, what it
//! knows of etcd and of the other replicas, and the rollbacks it holds
//! until etcd has them. Shared by the change path ([`crate::live::Live`]),
//! the fleet's tasks and the admin API.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

use super::pending::{self, PendingRollback};
use super::report::ParityCounts;
use super::{FleetSettings, FleetStore, FleetTable, ReplicaInfo};
use crate::config::weight_file::HistoryEntry;
use crate::config::{Config, ConfigError, Weights};
use crate::metrics::{FleetMetrics, Metrics};

/// Fleet mode's state on one replica.
pub struct Fleet {
    pub store: FleetStore,
    /// The runtime the fleet's etcd calls run on, for the blocking change path.
    pub(crate) runtime: Handle,
    pub(crate) metrics: FleetMetrics,
    state: Mutex<Local>,
    pending: Mutex<Vec<PendingRollback>>,
    /// Held for every write of this replica to etcd: one at a time.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Rollbacks wait to be written.
    pub(crate) wake_writer: Notify,
    /// The config was reloaded: a table refused as skew may fit now.
    pub(crate) wake_follower: Notify,
    /// What this replica reports changed (a table applied).
    pub(crate) wake_reporter: Notify,
    /// True once this replica knows the fleet table (applied or refused
    /// it), or knows there is none.
    settled: watch::Sender<bool>,
    /// The replicas as last listed.
    replicas: Mutex<Vec<ReplicaInfo>>,
}

#[derive(Default)]
struct Local {
    connected: bool,
    /// Why the watch on etcd is down, while it is.
    etcd_error: Option<String>,
    /// The fleet table the live table was built from.
    applied: Option<FleetTable>,
    /// etcd holds no fleet table.
    unseeded: bool,
    /// The newest fleet table this replica refused, until it applies a newer one.
    rejected: Option<Rejected>,
    /// The newest entry of the fleet's history, as last read.
    last_change: Option<HistoryEntry>,
}

/// A fleet table this replica refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub revision: i64,
    /// `skew` (does not fit this replica's config) or `unreadable` (not text).
    pub reason: &'static str,
    pub error: String,
    /// Its text, to try again after a config reload.
    #[serde(skip)]
    pub text: Option<String>,
}

impl Fleet {
    /// The link of a replica running `config`, whose fleet settings are
    /// `settings`; exposes the fleet metrics. Must run within the runtime.
    pub fn new(settings: &FleetSettings, config: &Config, metrics: &Metrics) -> Arc<Fleet> {
        metrics.register_fleet();
        let pending = pending::load(config);
        let fleet = Fleet {
            store: FleetStore::new(settings),
            runtime: Handle::current(),
            metrics: metrics.fleet.clone(),
            state: Mutex::default(),
            pending: Mutex::new(pending),
            write_lock: tokio::sync::Mutex::new(()),
            wake_writer: Notify::new(),
            wake_follower: Notify::new(),
            wake_reporter: Notify::new(),
            settled: watch::Sender::new(false),
            replicas: Mutex::default(),
        };
        fleet.count_pending();
        Arc::new(fleet)
    }

    /// The table to serve before etcd answers: the weight file, which
    /// caches the last fleet table (all routes on their stable backends,
    /// and the file written so, when there is none yet), with the rollbacks
    /// a previous run could not write to etcd.
    pub fn startup_weights(&self, config: &Config) -> Result<Weights, ConfigError> {
        let weights = if config.weights_path.exists() {
            Weights::load(config)?
        } else {
            tracing::warn!(
                path = %config.weights_path.display(),
                "no weight file yet: serving every route on its stable backend until the fleet table arrives"
            );
            let all_stable = Weights::all_stable(config);
            if let Err(e) = crate::config::WeightFile::of(config).write(config, &all_stable) {
                tracing::warn!(error = %e, "cannot write the weight file that caches the fleet table");
            }
            all_stable
        };
        Ok(weights.rolled_back(config, &self.held_back(config, 0)))
    }

    pub fn replica_id(&self) -> &str {
        self.store.replica_id()
    }

    fn state(&self) -> MutexGuard<'_, Local> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pending(&self) -> MutexGuard<'_, Vec<PendingRollback>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The revision of the fleet table the live table was built from.
    pub fn applied_revision(&self) -> Option<i64> {
        self.state().applied.as_ref().map(|t| t.revision)
    }

    pub fn applied(&self) -> Option<FleetTable> {
        self.state().applied.clone()
    }

    /// Whether `text` is what the weight file should hold: the applied
    /// fleet table (or anything, before one was applied).
    pub fn caches(&self, text: Option<&str>) -> bool {
        self.state().applied.as_ref().is_none_or(|t| Some(t.text.as_str()) == text)
    }

    pub fn is_connected(&self) -> bool {
        self.state().connected
    }

    pub fn is_unseeded(&self) -> bool {
        self.state().unseeded
    }

    pub(crate) fn set_connected(&self, connected: bool, error: Option<String>) {
        let mut state = self.state();
        if connected && !state.connected {
            tracing::info!("watching the fleet table in etcd");
        } else if !connected && (state.connected || state.etcd_error.is_none()) {
            tracing::error!(
                error = error.as_deref().unwrap_or("unknown"),
                "etcd is unreachable: serving the last applied fleet table; shifts are refused, rollbacks stay local until etcd is back"
            );
        }
        state.connected = connected;
        state.etcd_error = error;
        drop(state);
        self.metrics.connected.set(i64::from(connected));
        self.wake_reporter.notify_one();
    }

    pub(crate) fn set_unseeded(&self) {
        let mut state = self.state();
        if !state.unseeded {
            tracing::warn!(
                "the fleet has no weight table in etcd: serving the local weight file; seed the fleet with `cutover fleet seed`"
            );
        }
        state.unseeded = true;
        drop(state);
        self.settle();
    }

    /// Marks the fleet table known (applied, refused or absent), for startup.
    pub(crate) fn settle(&self) {
        self.settled.send_replace(true);
    }

    /// Waits up to `limit` until this replica knows the fleet table.
    pub async fn settled_within(&self, limit: Duration) -> bool {
        let mut settled = self.settled.subscribe();
        tokio::time::timeout(limit, settled.wait_for(|s| *s)).await.is_ok()
    }

    /// Records a refused fleet table: status, log, metric.
    pub(crate) fn reject(&self, rejected: Rejected) {
        tracing::error!(
            revision = rejected.revision,
            reason = rejected.reason,
            "fleet table refused, the previous table keeps serving: {}",
            rejected.error
        );
        self.metrics.rejected.with_label_values(&[rejected.reason]).inc();
        let mut state = self.state();
        state.unseeded = false;
        state.rejected = Some(rejected);
        drop(state);
        self.settle();
        self.wake_reporter.notify_one();
    }

    pub fn rejected(&self) -> Option<Rejected> {
        self.state().rejected.clone()
    }

    /// The refused table, to try again.
    pub(crate) fn rejected_table(&self) -> Option<FleetTable> {
        let state = self.state();
        let rejected = state.rejected.as_ref()?;
        Some(FleetTable {
            text: rejected.text.clone()?,
            revision: rejected.revision,
        })
    }

    /// The live table now holds the fleet table `table`: caches its text
    /// in the weight file, and forgets rollbacks it holds.
    pub(crate) fn record_applied(&self, config: &Config, table: FleetTable) -> std::io::Result<()> {
        let revision = table.revision;
        let cached = crate::config::file::write_atomic(&config.weights_path, table.text.as_bytes());
        let mut state = self.state();
        if state.rejected.as_ref().is_some_and(|r| r.revision <= revision) {
            tracing::info!(revision, "the fleet table fits this replica's config again");
            state.rejected = None;
        }
        state.unseeded = false;
        state.applied = Some(table);
        drop(state);
        self.metrics.weights_revision.set(revision);
        self.forget_written(config, revision);
        self.settle();
        self.wake_reporter.notify_one();
        cached
    }

    pub(crate) fn set_last_change(&self, entry: Option<HistoryEntry>) {
        self.state().last_change = entry;
    }

    /// The newest entry of the fleet's history, as last read from etcd.
    pub fn last_change(&self) -> Option<HistoryEntry> {
        self.state().last_change.clone()
    }

    /// The config was reloaded: a refused table is tried again.
    pub fn config_reloaded(&self) {
        self.wake_follower.notify_one();
    }

    pub(crate) fn set_replicas(&self, listed: Vec<ReplicaInfo>) {
        self.metrics.replicas.set(i64::try_from(listed.len()).unwrap_or(i64::MAX));
        *self.replicas.lock().unwrap_or_else(|e| e.into_inner()) = listed;
    }

    /// The replicas as last listed (at most a second or so ago).
    pub fn replicas_seen(&self) -> Vec<ReplicaInfo> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The parity of `route` over the fleet: this replica's own, `local`,
    /// summed with what the other replicas last reported.
    pub fn clean_share(&self, route: &str, local: Option<(f64, u64)>) -> Option<(f64, u64)> {
        let own = ParityCounts::from_share(local);
        let others = self
            .replicas_seen()
            .into_iter()
            .filter(|r| r.id != self.replica_id())
            .map(|r| ParityCounts::of(&r, route));
        ParityCounts::sum(std::iter::once(own).chain(others)).share()
    }

    /// The routes held rolled back over a fleet table of `revision`.
    pub(crate) fn held_back(&self, config: &Config, revision: i64) -> Vec<usize> {
        let pending = self.pending();
        let mut routes: Vec<usize> = pending
            .iter()
            .filter(|p| p.holds_over(revision))
            .flat_map(|p| p.routes.iter().filter_map(|r| config.route_index(r)))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        routes
    }

    /// Adds a rollback to write, and keeps it on disk.
    pub(crate) fn hold(&self, config: &Config, rollback: PendingRollback) {
        let mut pending = self.pending();
        pending.push(rollback);
        self.save_pending(config, &pending);
        drop(pending);
        self.count_pending();
    }

    /// Rollbacks written at or below `revision` are in the fleet table.
    fn forget_written(&self, config: &Config, revision: i64) {
        let mut pending = self.pending();
        let before = pending.len();
        pending.retain(|p| p.holds_over(revision));
        if pending.len() != before {
            self.save_pending(config, &pending);
        }
    }

    pub(crate) fn save_pending(&self, config: &Config, pending: &[PendingRollback]) {
        if let Err(e) = pending::save(config, pending) {
            tracing::error!(path = %pending::path(config).display(), error = %e, "cannot keep the pending fleet rollbacks on disk");
        }
    }

    /// Rollbacks not yet written to etcd.
    pub fn unwritten(&self) -> usize {
        self.pending().iter().filter(|p| p.written.is_none()).count()
    }

    pub(crate) fn count_pending(&self) {
        self.metrics.pending_writes.set(i64::try_from(self.unwritten()).unwrap_or(i64::MAX));
    }

    /// This replica's fleet state, for `status`, the dashboard and its registration.
    pub fn view(&self) -> Value {
        let state = self.state();
        let pending: Vec<Value> = self
            .pending()
            .iter()
            .filter(|p| p.written.is_none())
            .map(|p| json!({"routes": p.routes, "who": p.who, "why": p.why, "time": p.time}))
            .collect();
        json!({
            "replica_id": self.replica_id(),
            "connected": state.connected,
            "etcd_error": state.etcd_error,
            "applied_revision": state.applied.as_ref().map(|t| t.revision),
            "unseeded": state.unseeded,
            "rejected": state.rejected,
            "pending_rollbacks": pending,
            "replicas": self.replicas.lock().unwrap_or_else(|e| e.into_inner()).len(),
        })
    }
}
