//! The live table behind an `ArcSwap`: readers take one snapshot per request;
//! changes build a whole new table and publish it with one pointer store.
//!
//! Every change — an edit of the files, a shift, a rollback, an undo, a step
//! of the guard's ramp, a new fleet table — is a [`Change`] applied by
//! [`Live::apply`], one at a time: applied in memory first (so a rollback
//! takes effect at once), then persisted through the [`WeightStore`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::change::{
    self, Change, ChangeError, ChangeKind, Changed, FileStore, HistoryOp, Origin, Persist, RollbackCause, StoreError, WeightStore,
};
use crate::clock;
use crate::config::weight_file::HistoryEntry;
use crate::config::{Config, ConfigError, NamedWeights, Weights, format_percent, read_text};
use crate::fleet::{Fleet, FleetWeightStore};
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use crate::mirror::parity::Parity;
use crate::rates::Rates;
use crate::table::{Table, UpstreamCache, version_hash};

/// The outcome of the last reload, shown by `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadState {
    pub result: &'static str,
    pub error: Option<String>,
    pub time: String,
}

/// What a reload did. The versions are those the decision was made
/// against, under the change lock: by the time the caller looks, a shift or
/// rollback may have made another version live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new table is live, of this version.
    Installed(String),
    /// The files compile to the table already live, of this version.
    Unchanged(String),
    /// The weight file changed again after the text was read (a shift or
    /// rollback wrote it meanwhile); the text was stale and is dropped.
    Superseded,
}

/// Held for the whole of a change, so changes apply one at a time, each to
/// the table the previous one left. It holds the upstream clients by
/// backend settings, which only building a table (a change) touches.
/// Request handling never takes it.
struct ChangeLock(Mutex<UpstreamCache>);

impl ChangeLock {
    fn hold(&self) -> MutexGuard<'_, UpstreamCache> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A change's next table, and what to record of it.
struct Next {
    config: Arc<Config>,
    weights: Weights,
    /// The reason the history and the log give.
    why: String,
    /// Whether the store is to write the table (not when it came from the
    /// weight file itself).
    write: bool,
    /// Whether the change gets a history entry of its own: `Pop` for an
    /// undo, `Keep` for the later steps of a ramp and for reloads that
    /// leave the weights as they were.
    history: HistoryPlan,
    /// Routes rolled back, counted in `cutover_rollbacks_total`.
    rolled_back: Vec<usize>,
    cause: RollbackCause,
}

#[derive(PartialEq)]
enum HistoryPlan {
    Push,
    Pop,
    Keep,
}

pub struct Live {
    table: ArcSwap<Table>,
    change_lock: ChangeLock,
    store: Box<dyn WeightStore>,
    pub metrics: Arc<Metrics>,
    pub rates: Rates,
    /// Parity statistics; they outlive reloads.
    pub parity: Arc<Parity>,
    pub health: HealthRegistry,
    ready: AtomicBool,
    last_reload: Mutex<ReloadState>,
    /// Fleet mode: the link to the fleet's table in etcd.
    fleet: Option<Arc<Fleet>>,
}

impl Live {
    /// A live table whose changes persist to the weight file the config names.
    pub fn new(config: Config, weights: Weights, metrics: Arc<Metrics>) -> Live {
        Live::with_store(config, weights, metrics, Box::new(FileStore))
    }

    /// A live table of a fleet replica: changes persist to the fleet's
    /// table in etcd, and tables the fleet publishes are applied here.
    pub fn with_fleet(config: Config, weights: Weights, metrics: Arc<Metrics>, fleet: Arc<Fleet>) -> Live {
        let store = Box::new(FleetWeightStore::new(fleet.clone()));
        let mut live = Live::with_store(config, weights, metrics, store);
        live.fleet = Some(fleet);
        live
    }

    pub fn with_store(config: Config, weights: Weights, metrics: Arc<Metrics>, store: Box<dyn WeightStore>) -> Live {
        let mut upstreams = UpstreamCache::default();
        let health = HealthRegistry::default();
        let table = Table::build(Arc::new(config), weights, &mut upstreams, &metrics, &health);
        let live = Live {
            table: ArcSwap::from_pointee(table),
            change_lock: ChangeLock(Mutex::new(upstreams)),
            store,
            metrics,
            rates: Rates::default(),
            parity: Arc::default(),
            health,
            ready: AtomicBool::new(false),
            last_reload: Mutex::new(ReloadState {
                result: "ok",
                error: None,
                time: clock::now_rfc3339(),
            }),
            fleet: None,
        };
        live.publish(&live.load());
        live
    }

    /// Fleet mode's link, when the config has a `fleet:` section.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// The parity a shift is gated on: this replica's, or in fleet mode
    /// the sum over every live replica.
    pub fn clean_share(&self, route: &str) -> Option<(f64, u64)> {
        let local = self.parity.clean_share(route);
        match &self.fleet {
            Some(fleet) => fleet.clean_share(route, local),
            None => local,
        }
    }

    /// Reads the config file and its weight file and compiles both.
    pub fn read_files(config_path: &Path) -> Result<(Config, Weights), ConfigError> {
        let config = Config::load(config_path)?;
        let weights = Weights::load(&config)?;
        Ok((config, weights))
    }

    /// The current table. Take it once per request.
    pub fn load(&self) -> Arc<Table> {
        self.table.load_full()
    }

    fn install(&self, upstreams: &mut UpstreamCache, config: Arc<Config>, weights: Weights) -> Arc<Table> {
        let table = Arc::new(Table::build(config, weights, upstreams, &self.metrics, &self.health));
        self.make_live(&table);
        table
    }

    fn make_live(&self, table: &Arc<Table>) {
        self.table.store(table.clone());
        self.publish(table);
        self.sync_services(table);
    }

    /// Brings health checkers and the parity log in line with the table's config.
    fn sync_services(&self, table: &Table) {
        self.parity.set_log(table.config.parity_log.as_ref());
        self.health.sync(
            &table.config,
            |spec| {
                table
                    .upstream_for(&spec.name)
                    .unwrap_or_else(|| Arc::new(crate::upstream::BackendClient::new(spec.clone())))
            },
            &self.metrics,
        );
    }

    /// Starts active health checks (the proxy does; offline CLI edits do not).
    pub fn start_health_checks(&self) {
        self.health.start();
        self.sync_services(&self.load());
    }

    /// Applies a change: computes the next table from the live one (the
    /// parity gate included), makes it live, then persists it. A change
    /// the store cannot keep stays live and says so (`persisted: false`),
    /// except that a shift or undo the store refuses (a conflict, or a
    /// fleet store it cannot reach) is taken back. Blocking (it writes
    /// files, and in fleet mode waits on etcd): async callers use
    /// `spawn_blocking`.
    pub fn apply(&self, change: Change) -> Result<Changed, ChangeError> {
        let mut upstreams = self.change_lock.hold();
        let current = self.load();
        let next = match self.next(&change, &current) {
            Ok(Some(next)) => next,
            Ok(None) => {
                if matches!(change.kind, ChangeKind::FileReload { .. }) {
                    self.files_good_again();
                }
                return Ok(Changed {
                    version: current.version.clone(),
                    weights: current.weights.named(&current.config),
                    persisted: true,
                    persist_error: None,
                    fleet_revision: self.fleet.as_ref().and_then(|f| f.applied_revision()),
                    installed: false,
                });
            }
            Err(err) => {
                if let ChangeError::Config(e) = &err {
                    self.reload_failed(e);
                }
                return Err(err);
            }
        };
        let reload = matches!(change.kind, ChangeKind::FileReload { .. });
        if reload && (next.config.listeners != current.config.listeners || next.config.admin.addr != current.config.admin.addr) {
            tracing::warn!("listener or admin addresses changed: they take effect after a restart");
        }
        let fleet_table = matches!(change.kind, ChangeKind::FleetTable { .. });
        // A fleet table holding what is live already (this replica's own
        // change coming back from etcd) is recorded, not installed: the
        // guard's windows go on counting.
        let table = if fleet_table && next.weights == current.weights && Arc::ptr_eq(&next.config, &current.config) {
            current.clone()
        } else {
            self.install(&mut upstreams, next.config, next.weights)
        };
        if reload {
            self.reloaded(&table);
            if let Some(fleet) = &self.fleet {
                fleet.config_reloaded();
            }
        }
        let before = current.weights.named(&current.config);
        let after = table.weights.named(&table.config);
        // A reload that left the weights as they were is no weight change.
        let weights_moved = !(reload || fleet_table) || before != after;
        if weights_moved {
            log_change(&change.actor, &next.why, &before, &after);
        }
        let history = match next.history {
            HistoryPlan::Push if weights_moved => HistoryOp::Push(HistoryEntry {
                time: clock::now_rfc3339(),
                who: change.actor.clone(),
                why: next.why,
                before,
                after,
            }),
            HistoryPlan::Pop => HistoryOp::Pop,
            HistoryPlan::Push | HistoryPlan::Keep => HistoryOp::Keep,
        };
        let origin = match &change.kind {
            ChangeKind::Shift { .. } | ChangeKind::Undo => Origin::Change,
            ChangeKind::Rollback { .. } => Origin::Rollback {
                routes: next
                    .rolled_back
                    .iter()
                    .map(|&ri| table.config.routes[ri].name.to_string())
                    .collect(),
            },
            ChangeKind::RampStep { route, .. } => Origin::RampStep { route: route.clone() },
            ChangeKind::FileReload { .. } => Origin::WeightFile,
            ChangeKind::FleetTable { text, revision } => Origin::Fleet {
                revision: *revision,
                text: text.clone(),
            },
        };
        let write = Persist {
            weights: next.write.then_some(&table.weights),
            history,
            origin,
        };
        let persisted = self.store.persist(&table.config, write);
        let taken_back = matches!(change.kind, ChangeKind::Shift { .. } | ChangeKind::Undo);
        let (fleet_revision, persist_error) = match persisted {
            Ok(revision) => (revision, None),
            Err(StoreError::Conflict { current: stored }) if taken_back => {
                tracing::warn!(who = %change.actor, "the weight table was changed elsewhere meanwhile: the change is taken back");
                self.make_live(&current);
                return Err(ChangeError::Conflict { current: stored });
            }
            Err(StoreError::Unavailable(why)) if taken_back => {
                tracing::warn!(who = %change.actor, "the change cannot be stored: it is taken back: {why}");
                self.make_live(&current);
                return Err(ChangeError::Unavailable(why));
            }
            Err(StoreError::Pending(why)) => {
                tracing::error!(who = %change.actor, "the change is LIVE ON THIS REPLICA ONLY for now: {why}");
                (None, Some(why))
            }
            Err(e) => {
                if reload {
                    tracing::warn!(error = %e, "cannot record the weight history");
                } else {
                    tracing::error!(error = %e, "the change is live but could not be persisted");
                }
                (None, Some(e.to_string()))
            }
        };
        // Counted once the change is done, persisted or not.
        for &ri in &next.rolled_back {
            self.metrics
                .rollbacks
                .with_label_values(&[&table.config.routes[ri].name, next.cause.label()])
                .inc();
        }
        Ok(Changed {
            version: table.version.clone(),
            weights: table.weights.named(&table.config),
            persisted: persist_error.is_none(),
            persist_error,
            fleet_revision,
            installed: true,
        })
    }

    /// The next table of `change` from `current`; `None` when a reload's
    /// files compile to the table already live.
    fn next(&self, change: &Change, current: &Table) -> Result<Option<Next>, ChangeError> {
        let config = &current.config;
        let weights = &current.weights;
        let mut next = Next {
            config: config.clone(),
            weights: weights.clone(),
            why: change.why(),
            write: true,
            history: HistoryPlan::Push,
            rolled_back: Vec::new(),
            cause: RollbackCause::Manual,
        };
        match &change.kind {
            ChangeKind::Shift {
                route,
                weights: set,
                force,
            } => {
                next.weights = change::shift(config, weights, route, set)?;
                if !force {
                    // Offline there is no measured parity: gated routes need the force.
                    let ri = config.route_index(route).ok_or_else(|| ChangeError::UnknownRoute(route.clone()))?;
                    change::check_parity_gate(config, weights, &next.weights, ri, self.clean_share(route))?;
                }
            }
            ChangeKind::Rollback { routes, cause } => {
                next.rolled_back = change::select_routes(config, routes)?;
                next.weights = weights.rolled_back(config, &next.rolled_back);
                next.cause = *cause;
            }
            ChangeKind::Undo => {
                let entry = self
                    .store
                    .last_change(config)
                    .map_err(|e| match e {
                        StoreError::Conflict { current } => ChangeError::Conflict { current },
                        StoreError::Unavailable(why) => ChangeError::Unavailable(why),
                        e => ChangeError::History(e),
                    })?
                    .ok_or(ChangeError::NothingToUndo)?;
                next.weights = Weights::from_named(config, &entry.before).map_err(ChangeError::Stale)?;
                next.why = format!("undo of: {} at {}", change::describe(&entry.who, &entry.why), entry.time);
                next.history = HistoryPlan::Pop;
            }
            ChangeKind::RampStep { route, step, of, start } => {
                let ri = config.route_index(route).ok_or_else(|| ChangeError::UnknownRoute(route.clone()))?;
                let left = change::ramp_step(config, weights, ri, start, step.saturating_sub(1), *of);
                if left.route(ri) != weights.route(ri) {
                    return Err(ChangeError::ChangedMeanwhile { route: route.clone() });
                }
                next.weights = change::ramp_step(config, weights, ri, start, *step, *of);
                if *step == 1 {
                    next.rolled_back = vec![ri];
                    next.cause = RollbackCause::Guard;
                } else {
                    next.history = HistoryPlan::Keep;
                }
            }
            ChangeKind::FileReload {
                config_text,
                weights_text,
                force,
            } => {
                // Shifts and rollbacks write the weight file under the change
                // lock: text read before it was taken may be older than the live table.
                if let Some(text) = weights_text
                    && read_text(&config.weights_path).ok().as_deref() != Some(text.as_str())
                {
                    return Err(ChangeError::Superseded);
                }
                let new_config = Config::parse(&config.path, config_text.clone()).map_err(ChangeError::Config)?;
                let new_weights = match &self.fleet {
                    // The weight file only caches the fleet's table: the
                    // live weights carry over to the new config.
                    Some(fleet) => {
                        if weights_text.is_some() && !fleet.caches(weights_text.as_deref()) {
                            tracing::warn!(
                                "fleet mode: the weight file only caches the fleet's table; edits of it are not applied (use `cutover shift`)"
                            );
                        }
                        Weights::from_named(&new_config, &weights.named(config))
                    }
                    None => match weights_text {
                        Some(text) if new_config.weights_path == config.weights_path => {
                            Weights::parse(&new_config.weights_path, text, &new_config)
                        }
                        _ => Weights::load(&new_config),
                    },
                }
                .map_err(ChangeError::Config)?;
                if !force && version_hash(&new_config, &new_weights) == current.version {
                    return Ok(None);
                }
                next.why = change::weight_file_change_reason(&new_config, &weights.named(config), &new_weights, |r| self.clean_share(r));
                next.config = Arc::new(new_config);
                next.weights = new_weights;
                next.write = false;
            }
            ChangeKind::FleetTable { text, revision } => {
                if let Some(fleet) = &self.fleet
                    && fleet.applied_revision().is_some_and(|applied| applied >= *revision)
                {
                    return Ok(None);
                }
                let source = self
                    .fleet
                    .as_ref()
                    .map_or_else(|| config.weights_path.clone(), |f| f.store.keys().weights.clone().into());
                let table = Weights::parse(&source, text, config).map_err(|error| ChangeError::Skew {
                    revision: *revision,
                    error,
                })?;
                // Rollbacks made here that the fleet table does not hold yet stay.
                let held = self.fleet.as_ref().map(|f| f.held_back(config, *revision)).unwrap_or_default();
                next.weights = table.rolled_back(config, &held);
                next.history = HistoryPlan::Keep;
            }
        }
        Ok(Some(next))
    }

    /// Re-reads both files (SIGHUP); on any error the current table keeps
    /// serving. Blocking: async callers use `spawn_blocking`.
    pub fn reload(&self) -> Result<Reloaded, ChangeError> {
        let path = self.load().config.path.clone();
        match read_text(&path) {
            Ok(text) => self.reload_texts(text, None, true),
            Err(e) => {
                let err = ConfigError::from(e);
                self.reload_failed(&err);
                Err(ChangeError::Config(err))
            }
        }
    }

    /// Applies new config text (and weight text read alongside it, when the
    /// weight file did not move) unless nothing changed.
    pub fn reload_texts(&self, config_text: String, weights_text: Option<String>, force: bool) -> Result<Reloaded, ChangeError> {
        match self.apply(Change::file_reload(config_text, weights_text, force)) {
            Ok(changed) if changed.installed => Ok(Reloaded::Installed(changed.version)),
            Ok(changed) => Ok(Reloaded::Unchanged(changed.version)),
            Err(ChangeError::Superseded) => Ok(Reloaded::Superseded),
            Err(e) => Err(e),
        }
    }

    fn reloaded(&self, table: &Table) {
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = ReloadState {
            result: "ok",
            error: None,
            time: clock::now_rfc3339(),
        };
        tracing::info!(version = %table.version, "config reloaded");
    }

    /// Reports a reload that was rejected, whichever path noticed it: the
    /// counter, the status shown by `cutover status`, and the log.
    pub fn reload_failed(&self, err: &ConfigError) {
        self.metrics.config_reloads.with_label_values(&["error"]).inc();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = ReloadState {
            result: "error",
            error: Some(err.to_string()),
            time: clock::now_rfc3339(),
        };
        tracing::error!("config reload rejected, the previous config keeps serving: {err}");
    }

    /// Files that were rejected now compile to the table already live:
    /// nothing is installed, but the error shown in status is over.
    fn files_good_again(&self) {
        let mut last = self.last_reload.lock().unwrap_or_else(|e| e.into_inner());
        if last.result == "ok" {
            return;
        }
        *last = ReloadState {
            result: "ok",
            error: None,
            time: clock::now_rfc3339(),
        };
        drop(last);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!("config files are valid again and match the live config");
    }

    pub fn last_reload(&self) -> ReloadState {
        self.last_reload.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The newest change in the store's history, for `status`. Waits for a
    /// change being applied, so that a table already live is never shown
    /// beside the history from before it.
    pub fn last_change(&self) -> Option<HistoryEntry> {
        let _applied = self.change_lock.hold();
        self.store.shown_change(&self.load().config)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Mirrors the table into the weight and version gauges.
    fn publish(&self, table: &Table) {
        let m = &self.metrics;
        m.backend_weight.reset();
        for (ri, route) in table.config.routes.iter().enumerate() {
            for (b, &w) in route.backends.iter().zip(table.weights.route(ri)) {
                m.backend_weight
                    .with_label_values(&[&route.name, &b.spec.name])
                    .set(format_percent(w).parse().unwrap_or(0.0));
            }
        }
        m.config_version.reset();
        m.config_version.with_label_values(&[&table.version]).set(1);
    }
}

/// One structured line per change: who, what, before, after.
fn log_change(who: &str, why: &str, before: &NamedWeights, after: &NamedWeights) {
    let json = |w: &NamedWeights| serde_json::to_string(w).unwrap_or_default();
    tracing::info!(who, what = why, before = %json(before), after = %json(after), "weights changed");
}

#[cfg(test)]
mod tests {
    use crate::change::Routes;
    use crate::config::weight_file::History;
    use crate::mirror::parity::Exchange;

    use super::*;

    const CONFIG: &str = "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
        admin: { addr: \"127.0.0.1:0\" }\nweights_file: weights.yaml\naccess_log: { path: off }\n\
        backends:\n  legacy: { url: \"http://127.0.0.1:9\" }\n  new: { url: \"http://127.0.0.1:9\" }\n\
        routes:\n  - { name: api, match: { path_prefix: / }, stable: legacy, backends: { legacy: {}, new: {} } }\n";
    const HALF: &str = "api: { legacy: 50, new: 50 }\n";

    /// `api` is gated by parity (`min_clean_share`), `web` is not.
    const GATED: &str = "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
        admin: { addr: \"127.0.0.1:0\" }\nweights_file: weights.yaml\naccess_log: { path: off }\n\
        backends:\n  legacy: { url: \"http://127.0.0.1:9\" }\n  new: { url: \"http://127.0.0.1:9\" }\n\
        routes:\n\
        \x20 - { name: api, match: { path_prefix: /api/ }, backends: { legacy: {}, new: {} }, mirror: { to: new, min_clean_share: 0.99 } }\n\
        \x20 - { name: web, match: { path_prefix: / }, backends: { legacy: {}, new: {} } }\n";
    const GATED_WEIGHTS: &str = "# the migration\napi: { legacy: 100, new: 0 }  # OPS-1\nweb: { legacy: 50, new: 50 }\n";

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(config: &str, weights: &str) -> Files {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cutover.yaml"), config).unwrap();
            std::fs::write(dir.path().join("weights.yaml"), weights).unwrap();
            Files { dir }
        }

        fn live(&self) -> Live {
            let (config, weights) = Live::read_files(&self.dir.path().join("cutover.yaml")).unwrap();
            Live::new(config, weights, Arc::new(Metrics::new()))
        }

        fn weights_text(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("weights.yaml")).unwrap()
        }

        fn history(&self) -> Vec<HistoryEntry> {
            History::beside(&self.dir.path().join("weights.yaml")).entries()
        }
    }

    fn new_share(live: &Live, route: &str) -> f64 {
        live.load().weights.named(&live.load().config)[route]["new"]
    }

    fn shift(route: &str, new: f64, force: bool) -> Change {
        Change::shift("alice", route, vec![("new".into(), new)], force)
    }

    fn rollbacks(live: &Live, route: &str, cause: &str) -> u64 {
        live.metrics.rollbacks.with_label_values(&[route, cause]).get()
    }

    #[test]
    fn reloads_report_the_version_they_were_decided_against() {
        let files = Files::new(CONFIG, HALF);
        let live = files.live();
        let half = live.load().version.clone();

        let unchanged = live.reload_texts(CONFIG.into(), Some(HALF.into()), false).unwrap();
        assert_eq!(unchanged, Reloaded::Unchanged(half.clone()));

        live.apply(Change::rollback("test", Routes::All, RollbackCause::Manual)).unwrap();
        let rolled_back = live.load().version.clone();
        assert_ne!(rolled_back, half);
        // Text the file held before the rollback is news again, and the
        // reload names the version it made live.
        std::fs::write(files.dir.path().join("weights.yaml"), HALF).unwrap();
        let installed = live.reload_texts(CONFIG.into(), Some(HALF.into()), false).unwrap();
        assert_eq!(installed, Reloaded::Installed(half.clone()));
        assert_eq!(live.load().version, half);
        // Text read before a change wrote the file is stale.
        live.apply(Change::rollback("test", Routes::All, RollbackCause::Manual)).unwrap();
        assert_eq!(
            live.reload_texts(CONFIG.into(), Some(HALF.into()), false).unwrap(),
            Reloaded::Superseded
        );
        assert_eq!(new_share(&live, "api"), 0.0);
    }

    #[test]
    fn a_shift_raising_a_gated_route_needs_measured_parity_or_force() {
        let files = Files::new(GATED, GATED_WEIGHTS);
        let live = files.live();

        let refused = live.apply(shift("api", 10.0, false)).unwrap_err();
        assert!(
            matches!(&refused, ChangeError::ParityBelowBar { measured, .. } if measured == "not measured yet"),
            "{refused}"
        );
        assert_eq!(new_share(&live, "api"), 0.0);
        assert_eq!(files.weights_text(), GATED_WEIGHTS);
        assert!(files.history().is_empty());
        // A route without a bar is not gated.
        live.apply(shift("web", 60.0, false)).unwrap();

        let forced = live.apply(shift("api", 10.0, true)).unwrap();
        assert!(forced.persisted && forced.installed);
        assert_eq!(forced.weights["api"]["new"], 10.0);
        assert_eq!(forced.version, live.load().version);
        assert_eq!(
            files.weights_text(),
            "# the migration\napi: { legacy: 90, new: 10 }  # OPS-1\nweb: { legacy: 40, new: 60 }\n"
        );
        let last = files.history().pop().unwrap();
        assert_eq!((last.who.as_str(), last.why.as_str()), ("alice", "shift api"));
        assert_eq!(last.before["api"]["new"], 0.0);

        // Clean parity measured by the mirror opens the gate.
        let table = live.load();
        let spec = table.config.routes[0].mirror.as_ref().unwrap();
        let exchange = Exchange {
            method: "GET",
            path: "/api/x",
            request_id: "r",
            backends: ["legacy", "new"],
            statuses: [200, 200],
            served_by: "legacy",
        };
        for _ in 0..20 {
            live.parity.record("api", spec, &exchange, Vec::new());
        }
        live.apply(shift("api", 30.0, false)).unwrap();
        assert_eq!(new_share(&live, "api"), 30.0);
    }

    #[test]
    fn a_rollback_is_live_persisted_counted_and_undone() {
        let files = Files::new(GATED, GATED_WEIGHTS);
        let live = files.live();
        live.apply(shift("web", 70.0, false)).unwrap();

        let change = Change::rollback("bob", Routes::Named(vec!["web".into()]), RollbackCause::Manual).because(Some("5xx".into()));
        let rolled = live.apply(change).unwrap();
        assert!(rolled.persisted);
        assert_eq!(new_share(&live, "web"), 0.0);
        assert_eq!(rollbacks(&live, "web", "manual"), 1);
        assert_eq!(rollbacks(&live, "api", "manual"), 0);
        assert!(files.weights_text().contains("web: { legacy: 100, new: 0 }"));
        assert_eq!(files.history().pop().unwrap().why, "rollback web: 5xx");
        assert!(matches!(
            live.apply(Change::rollback("bob", Routes::Named(vec!["nope".into()]), RollbackCause::Manual)),
            Err(ChangeError::UnknownRoute(_))
        ));

        let undone = live.apply(Change::undo("bob")).unwrap();
        assert!(undone.persisted);
        assert_eq!(new_share(&live, "web"), 70.0);
        assert!(files.weights_text().contains("web: { legacy: 30, new: 70 }"));
        assert_eq!(files.history().len(), 1, "the undone change left the history");
        live.apply(Change::undo("bob")).unwrap();
        assert_eq!(new_share(&live, "web"), 50.0);
        assert!(matches!(live.apply(Change::undo("bob")), Err(ChangeError::NothingToUndo)));
    }

    #[test]
    fn a_ramp_step_is_refused_when_the_route_changed_meanwhile() {
        let files = Files::new(CONFIG, HALF);
        let live = files.live();
        let start = live.load().weights.route(0).to_vec();
        let step = |n| Change::ramp_step("api", n, 4, start.clone(), "guard: backend new failing");

        live.apply(step(1)).unwrap();
        assert_eq!(new_share(&live, "api"), 37.5);
        assert_eq!(rollbacks(&live, "api", "guard"), 1);
        live.apply(step(2)).unwrap();
        assert_eq!(new_share(&live, "api"), 25.0);
        let history = files.history();
        assert_eq!(history.len(), 1, "a ramp is one change in the history");
        assert_eq!(history[0].who, "guard");
        assert_eq!(history[0].why, "guard: backend new failing (ramp step 1/4)");

        live.apply(shift("api", 40.0, false)).unwrap();
        let refused = live.apply(step(3)).unwrap_err();
        assert!(
            matches!(&refused, ChangeError::ChangedMeanwhile { route } if route == "api"),
            "{refused}"
        );
        assert_eq!(new_share(&live, "api"), 40.0, "the operator's change stands");
        assert_eq!(rollbacks(&live, "api", "guard"), 1);
    }

    #[test]
    fn a_change_the_file_cannot_take_stays_live_and_says_so() {
        let files = Files::new(CONFIG, HALF);
        let live = files.live();
        // Nothing can be renamed over a folder.
        let weights = files.dir.path().join("weights.yaml");
        std::fs::remove_file(&weights).unwrap();
        std::fs::create_dir(&weights).unwrap();

        let changed = live.apply(Change::rollback("bob", Routes::All, RollbackCause::Manual)).unwrap();
        assert!(!changed.persisted);
        let error = changed.persist_error.unwrap();
        assert!(error.starts_with(&format!("{}: ", weights.display())), "{error}");
        assert_eq!(new_share(&live, "api"), 0.0, "the rollback is live");
        assert_eq!(rollbacks(&live, "api", "manual"), 1);
        assert_eq!(changed.version, live.load().version);
    }

    /// A store that another writer always beat to it, as a shared store
    /// answers a compare-and-swap on a stale revision.
    struct Beaten(NamedWeights);

    impl WeightStore for Beaten {
        fn persist(&self, _: &Config, _: Persist<'_>) -> Result<Option<i64>, StoreError> {
            Err(StoreError::Conflict { current: self.0.clone() })
        }

        fn last_change(&self, _: &Config) -> Result<Option<HistoryEntry>, StoreError> {
            Ok(None)
        }
    }

    #[test]
    fn a_conflict_takes_a_shift_back_but_never_a_rollback() {
        let files = Files::new(CONFIG, HALF);
        let (config, weights) = Live::read_files(&files.dir.path().join("cutover.yaml")).unwrap();
        let theirs = weights.named(&config);
        let live = Live::with_store(config, weights, Arc::new(Metrics::new()), Box::new(Beaten(theirs.clone())));
        let before = live.load().version.clone();

        match live.apply(shift("api", 80.0, false)) {
            Err(ChangeError::Conflict { current }) => assert_eq!(current, theirs),
            other => panic!("{other:?}"),
        }
        assert_eq!(live.load().version, before, "the shift was taken back");

        let rolled = live.apply(Change::rollback("bob", Routes::All, RollbackCause::Manual)).unwrap();
        assert!(!rolled.persisted);
        assert_eq!(new_share(&live, "api"), 0.0, "the rollback stays live");
    }
}
