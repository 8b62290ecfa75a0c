//! The live table behind an `ArcSwap`: readers take one snapshot per request;
//! changes build a whole new table and publish it with one pointer store.
//!
//! Every change — a reload, a shift, a rollback, an undo — goes through one
//! lock, is applied in memory first (so a rollback takes effect at once),
//! then persisted to the weight file and recorded in its history.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, ConfigError, Weights, format_percent, read_text};
use crate::control::{self, ControlError, History, HistoryEntry, NamedWeights};
use crate::guard::GuardLog;
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

/// The outcome of a weight change.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub version: String,
    pub weights: NamedWeights,
    pub persisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_error: Option<String>,
}

/// What a reload did. The versions are those the decision was made
/// against, under the lock that changes take: by the time the caller looks,
/// a shift or rollback may have made another version live.
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

/// Why a route was rolled back (the `reason` label of `cutover_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackReason {
    Manual,
    Guard,
}

impl RollbackReason {
    fn label(self) -> &'static str {
        match self {
            RollbackReason::Manual => "manual",
            RollbackReason::Guard => "guard",
        }
    }
}

pub struct Live {
    table: ArcSwap<Table>,
    /// Held for the whole of a change; request handling never takes it.
    changes: Mutex<UpstreamCache>,
    pub metrics: Arc<Metrics>,
    pub rates: Rates,
    /// Parity statistics; they outlive reloads.
    pub parity: Arc<Parity>,
    pub health: HealthRegistry,
    pub guard_log: GuardLog,
    ready: AtomicBool,
    last_reload: Mutex<ReloadState>,
}

impl Live {
    pub fn new(config: Config, weights: Weights, metrics: Arc<Metrics>) -> Live {
        let mut upstreams = UpstreamCache::default();
        let health = HealthRegistry::default();
        let table = Table::build(Arc::new(config), weights, &mut upstreams, &metrics, &health);
        let live = Live {
            table: ArcSwap::from_pointee(table),
            changes: Mutex::new(upstreams),
            metrics,
            rates: Rates::default(),
            parity: Arc::default(),
            health,
            guard_log: GuardLog::default(),
            ready: AtomicBool::new(false),
            last_reload: Mutex::new(ReloadState {
                result: "ok",
                error: None,
                time: control::now_rfc3339(),
            }),
        };
        live.publish(&live.load());
        live
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

    fn lock(&self) -> std::sync::MutexGuard<'_, UpstreamCache> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn install(&self, upstreams: &mut UpstreamCache, config: Arc<Config>, weights: Weights) -> Arc<Table> {
        let table = Arc::new(Table::build(config, weights, upstreams, &self.metrics, &self.health));
        self.table.store(table.clone());
        self.publish(&table);
        self.sync_services(&table);
        table
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

    /// Re-reads both files (SIGHUP); on any error the current table keeps
    /// serving. Blocking: async callers use `spawn_blocking`.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let path = self.load().config.path.clone();
        match read_text(&path) {
            Ok(text) => self.reload_texts(text, None, true),
            Err(e) => {
                let err = ConfigError::from(e);
                self.reload_failed(&err);
                Err(err)
            }
        }
    }

    /// Compiles new config text (and weight text read alongside it, when the
    /// weight file did not move) and makes it live unless nothing changed.
    pub fn reload_texts(&self, config_text: String, weights_text: Option<String>, force: bool) -> Result<Reloaded, ConfigError> {
        let mut upstreams = self.lock();
        let current = self.load();
        // Shifts and rollbacks write the weight file under this lock: text read
        // before it was taken may already be older than the live table.
        if let Some(text) = &weights_text
            && read_text(&current.config.weights_path).ok().as_deref() != Some(text.as_str())
        {
            return Ok(Reloaded::Superseded);
        }
        let result = (|| {
            let config = Config::parse(&current.config.path, config_text)?;
            let weights = match weights_text {
                Some(text) if config.weights_path == current.config.weights_path => Weights::parse(&config.weights_path, &text, &config)?,
                _ => Weights::load(&config)?,
            };
            Ok((config, weights))
        })();
        let (config, weights) = match result {
            Ok(pair) => pair,
            Err(err) => {
                drop(upstreams);
                self.reload_failed(&err);
                return Err(err);
            }
        };
        if !force && version_hash(&config, &weights) == current.version {
            self.files_good_again();
            return Ok(Reloaded::Unchanged(current.version.clone()));
        }
        if config.listeners != current.config.listeners || config.admin.addr != current.config.admin.addr {
            tracing::warn!("listener or admin addresses changed: they take effect after a restart");
        }
        let before = control::named(&current.config, &current.weights);
        let table = self.install(&mut upstreams, Arc::new(config), weights);
        let after = control::named(&table.config, &table.weights);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = ReloadState {
            result: "ok",
            error: None,
            time: control::now_rfc3339(),
        };
        tracing::info!(version = %table.version, "config reloaded");
        if before != after {
            log_change("weight file", "weight file changed", &before, &after);
            let entry = HistoryEntry {
                time: control::now_rfc3339(),
                who: "weight file".into(),
                why: control::weight_file_change_reason(&table.config, &before, &table.weights, |r| self.parity.clean_share(r)),
                before,
                after,
            };
            if let Err(e) = History::beside(&table.config.weights_path).push(entry) {
                tracing::warn!(error = %e, "cannot record the weight history");
            }
        }
        Ok(Reloaded::Installed(table.version.clone()))
    }

    /// Reports a reload that was rejected, whichever path noticed it: the
    /// counter, the status shown by `cutover status`, and the log.
    pub fn reload_failed(&self, err: &ConfigError) {
        self.metrics.config_reloads.with_label_values(&["error"]).inc();
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = ReloadState {
            result: "error",
            error: Some(err.to_string()),
            time: control::now_rfc3339(),
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
            time: control::now_rfc3339(),
        };
        drop(last);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!("config files are valid again and match the live config");
    }

    pub fn last_reload(&self) -> ReloadState {
        self.last_reload.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Computes a new weight table from the live one, applies it, persists
    /// it and records the change in the history.
    pub fn change_weights(
        &self,
        who: &str,
        why: &str,
        compute: impl FnOnce(&Config, &Weights) -> Result<Weights, ControlError>,
    ) -> Result<Changed, ControlError> {
        self.change_weights_recorded(who, why, true, compute)
    }

    /// Like [`Live::change_weights`]; `history` false leaves the history alone
    /// (the later steps of a guard's ramp are one change, not many).
    pub fn change_weights_recorded(
        &self,
        who: &str,
        why: &str,
        history: bool,
        compute: impl FnOnce(&Config, &Weights) -> Result<Weights, ControlError>,
    ) -> Result<Changed, ControlError> {
        let mut upstreams = self.lock();
        let current = self.load();
        let next = compute(&current.config, &current.weights)?;
        let table = self.install(&mut upstreams, current.config.clone(), next);
        let before = control::named(&current.config, &current.weights);
        let after = control::named(&table.config, &table.weights);
        log_change(who, why, &before, &after);
        let entry = history.then(|| HistoryEntry {
            time: control::now_rfc3339(),
            who: who.into(),
            why: why.into(),
            before,
            after,
        });
        Ok(self.persist(&table, entry))
    }

    /// Sends the given routes (or all) wholly to their stable backends.
    pub fn rollback(&self, who: &str, why: &str, routes: &[String], all: bool, reason: RollbackReason) -> Result<Changed, ControlError> {
        let mut rolled = Vec::new();
        let changed = self.change_weights(who, why, |config, weights| {
            let selected = control::select_routes(config, routes, all)?;
            rolled = selected.iter().map(|&ri| config.routes[ri].name.clone()).collect();
            Ok(weights.rolled_back(config, &selected))
        })?;
        for route in rolled {
            self.metrics.rollbacks.with_label_values(&[&route, reason.label()]).inc();
        }
        Ok(changed)
    }

    /// Restores the table the newest history entry replaced.
    pub fn undo(&self, who: &str) -> Result<Changed, ControlError> {
        let mut upstreams = self.lock();
        let current = self.load();
        let history = History::beside(&current.config.weights_path);
        let entry = history
            .pop()
            .map_err(|e| ControlError::Io(e.to_string()))?
            .ok_or(ControlError::NothingToUndo)?;
        let restored = match control::from_named(&current.config, &entry.before) {
            Ok(w) => w,
            Err(e) => {
                let _ = history.push(entry);
                return Err(e);
            }
        };
        let table = self.install(&mut upstreams, current.config.clone(), restored);
        let before = control::named(&current.config, &current.weights);
        let after = control::named(&table.config, &table.weights);
        log_change(
            who,
            &format!("undo of: {} by {} at {}", entry.why, entry.who, entry.time),
            &before,
            &after,
        );
        Ok(self.persist(&table, None))
    }

    fn persist(&self, table: &Table, entry: Option<HistoryEntry>) -> Changed {
        let path = &table.config.weights_path;
        let previous = read_text(path).ok();
        let text = control::render(&table.config, &table.weights, previous.as_deref());
        let mut result = control::write_atomic(path, text.as_bytes());
        if let (Ok(()), Some(entry)) = (&result, entry) {
            result = History::beside(path).push(entry);
        }
        if let Err(e) = &result {
            tracing::error!(file = %path.display(), error = %e, "the change is live but could not be written to the weight file");
        }
        Changed {
            version: table.version.clone(),
            weights: control::named(&table.config, &table.weights),
            persisted: result.is_ok(),
            persist_error: result.err().map(|e| format!("{}: {e}", path.display())),
        }
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
    use super::*;

    const CONFIG: &str = "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
        admin: { addr: \"127.0.0.1:0\" }\nweights_file: weights.yaml\naccess_log: { path: off }\n\
        backends:\n  legacy: { url: \"http://127.0.0.1:9\" }\n  new: { url: \"http://127.0.0.1:9\" }\n\
        routes:\n  - { name: api, match: { path_prefix: / }, stable: legacy, backends: { legacy: {}, new: {} } }\n";
    const HALF: &str = "api: { legacy: 50, new: 50 }\n";

    #[test]
    fn reloads_report_the_version_they_were_decided_against() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(&config_path, CONFIG).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), HALF).unwrap();
        let config = Config::load(&config_path).unwrap();
        let weights = Weights::load(&config).unwrap();
        let live = Live::new(config, weights, Arc::new(Metrics::new()));
        let half = live.load().version.clone();

        let unchanged = live.reload_texts(CONFIG.into(), Some(HALF.into()), false).unwrap();
        assert_eq!(unchanged, Reloaded::Unchanged(half.clone()));

        live.rollback("test", "rollback", &[], true, RollbackReason::Manual).unwrap();
        let rolled_back = live.load().version.clone();
        assert_ne!(rolled_back, half);
        // Text the file held before the rollback is news again, and the
        // reload names the version it made live.
        std::fs::write(dir.path().join("weights.yaml"), HALF).unwrap();
        let installed = live.reload_texts(CONFIG.into(), Some(HALF.into()), false).unwrap();
        assert_eq!(installed, Reloaded::Installed(half.clone()));
        assert_eq!(live.load().version, half);
    }
}
