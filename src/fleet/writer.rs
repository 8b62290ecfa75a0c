//! Writing changes to the fleet table: the [`WeightStore`] of fleet mode.
//!
//! A shift or undo is written with compare-and-swap on the revision of the
//! fleet table it was computed from; when etcd has moved on, or cannot be
//! reached, it is refused and taken back. A rollback is different: it is
//! live here at once, kept on disk as pending, and written to etcd as soon
//! as etcd takes it — now, or when it is back. It is written over whatever
//! table etcd holds by then: its routes go to their stable backends, every
//! other route stays as the fleet has it (docs/FLEET.md, "Failure modes").

use std::sync::Arc;
use std::time::Duration;

use super::pending::PendingRollback;
use super::{Fleet, FleetError, FleetTable, HistoryEdit, WriteError};
use crate::change::{CHANGE_WARNING, GUARD, HistoryOp, Origin, Persist, StoreError, WeightStore};
use crate::clock;
use crate::config::weight_file::{Comments, HistoryEntry, render_routes};
use crate::config::{Config, ConfigError, NamedWeights, Weights};

/// How many times a rollback is recomputed when other writers keep
/// changing the table under it, before it waits for the next round.
const ROLLBACK_ATTEMPTS: usize = 5;

/// Why a rollback is still held.
#[derive(Debug, thiserror::Error)]
pub enum Held {
    #[error(transparent)]
    Etcd(#[from] FleetError),
    #[error("the fleet has no weight table yet (seed it with `cutover fleet seed`)")]
    Unseeded,
    #[error("the fleet table does not fit this replica's config (config skew), so the rollback cannot be written over it: {0}")]
    Skew(ConfigError),
    #[error("the fleet table kept changing under it")]
    Contended,
}

/// The fleet table in etcd as a [`WeightStore`].
pub struct FleetWeightStore {
    fleet: Arc<Fleet>,
}

impl FleetWeightStore {
    pub fn new(fleet: Arc<Fleet>) -> FleetWeightStore {
        FleetWeightStore { fleet }
    }
}

impl WeightStore for FleetWeightStore {
    fn persist(&self, config: &Config, write: Persist<'_>) -> Result<Option<i64>, StoreError> {
        let fleet = &self.fleet;
        match write.origin {
            Origin::Fleet { revision, text } => {
                fleet
                    .record_applied(config, FleetTable { text, revision })
                    .map_err(|source| StoreError::Io {
                        path: config.weights_path.clone(),
                        source,
                    })?;
                Ok(Some(revision))
            }
            // The weight file only caches the fleet table.
            Origin::WeightFile => Ok(fleet.applied_revision()),
            Origin::Rollback { routes } => {
                let entry = match write.history {
                    HistoryOp::Push(entry) => entry,
                    _ => return Ok(fleet.applied_revision()),
                };
                fleet.hold(config, fleet.held_rollback(routes, entry));
                fleet.write_held_now(config)
            }
            Origin::Change | Origin::RampStep { .. } => {
                let Some(weights) = write.weights else {
                    return Ok(fleet.applied_revision());
                };
                let entry = match &write.history {
                    HistoryOp::Push(entry) => Some(entry.clone()),
                    _ => None,
                };
                match (fleet.write_change(config, weights, write.history), write.origin) {
                    (Ok(revision), _) => Ok(Some(revision)),
                    // The guard's ramp cannot go on fleet-wide: the route is
                    // rolled back in full instead, like any rollback.
                    (Err(e), Origin::RampStep { route }) => {
                        tracing::warn!(route = %route, "the guard's ramp step cannot be written to etcd ({e}): rolling the route back in full");
                        let entry = entry.unwrap_or_else(|| HistoryEntry {
                            time: clock::now_rfc3339(),
                            who: GUARD.into(),
                            why: format!("{GUARD}: ramp of {route} finished as a full rollback"),
                            before: Default::default(),
                            after: Default::default(),
                        });
                        fleet.hold(config, fleet.held_rollback(vec![route], entry));
                        fleet.write_held_now(config)
                    }
                    (Err(e), _) => Err(e),
                }
            }
        }
    }

    fn last_change(&self, config: &Config) -> Result<Option<HistoryEntry>, StoreError> {
        let fleet = &self.fleet;
        let applied = fleet.applied_revision();
        let read = fleet.block_on(fleet.store.timeout(), fleet.store.read_state());
        let state = read.map_err(|e| StoreError::Unavailable(format!("cannot read the fleet's history from etcd: {e}")))?;
        let revision = state.table.as_ref().map(|t| t.revision);
        if revision != applied {
            return Err(StoreError::Conflict {
                current: named(config, state.table.as_ref()),
            });
        }
        fleet.set_last_change(state.history.last().cloned());
        Ok(state.history.last().cloned())
    }

    fn shown_change(&self, _config: &Config) -> Option<HistoryEntry> {
        self.fleet.last_change()
    }
}

impl Fleet {
    /// The entry as the fleet's history keeps it: naming this replica.
    fn signed(&self, mut entry: HistoryEntry) -> HistoryEntry {
        entry.who = format!("{} on replica {}", entry.who, self.replica_id());
        entry
    }

    /// A rollback of `routes` made here now, to write to etcd.
    fn held_rollback(&self, routes: Vec<String>, entry: HistoryEntry) -> PendingRollback {
        let mut rollback = PendingRollback::new(routes, self.signed(entry), self.applied_revision());
        // Made while cut off from etcd: written late, and the history says so.
        rollback.delayed = !self.is_connected();
        rollback
    }

    /// Runs an etcd call from the blocking change path, bounded by `limit`.
    fn block_on<T, E: std::fmt::Display>(&self, limit: Duration, call: impl Future<Output = Result<T, E>>) -> Result<T, String> {
        match self.runtime.block_on(tokio::time::timeout(limit, call)) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("etcd did not answer within {limit:?}")),
        }
    }

    /// Writes a shift or undo (or a ramp step) computed from the applied
    /// fleet table, if etcd still holds that table.
    fn write_change(&self, config: &Config, weights: &Weights, history: HistoryOp) -> Result<i64, StoreError> {
        let applied = self.applied();
        let newer = |revision: i64| applied.as_ref().is_none_or(|base| revision > base.revision);
        if let Some(refused) = self.rejected().filter(|r| newer(r.revision)) {
            return Err(StoreError::Unavailable(format!(
                "this replica refused the fleet table at revision {} ({}), so it cannot change it: \
                 fix its config or change the fleet through another replica",
                refused.revision, refused.error
            )));
        }
        let Some(base) = applied else {
            return Err(StoreError::Unavailable(if self.is_unseeded() {
                "the fleet has no weight table yet: seed it with `cutover fleet seed`".into()
            } else {
                "this replica has not read the fleet table from etcd yet (is etcd reachable?): nothing changed".into()
            }));
        };
        let text = render_fleet(config, weights, &base.text);
        let edit = match history {
            HistoryOp::Push(entry) => HistoryEdit::Push(self.signed(entry)),
            HistoryOp::Pop => HistoryEdit::PopNewest,
            HistoryOp::Keep => HistoryEdit::Keep,
        };
        let limit = self.store.timeout() * 2;
        let outcome = self.runtime.block_on(tokio::time::timeout(limit, async {
            let _writing = self.write_lock.lock().await;
            // Held rollbacks first: a change never overtakes one.
            if let Err(e) = self.write_held(config).await {
                return Err(StoreError::Unavailable(format!(
                    "a rollback held on this replica is not yet in the fleet table ({e}): nothing changed"
                )));
            }
            match self.store.write_if(Some(base.revision), &text, edit).await {
                Ok(revision) => Ok(revision),
                Err(WriteError::Conflict { current }) => Err(StoreError::Conflict {
                    current: named(config, current.as_ref()),
                }),
                Err(WriteError::Store(e)) => Err(StoreError::Unavailable(format!("etcd is unreachable, nothing changed: {e}"))),
            }
        }));
        match outcome {
            Ok(Ok(revision)) => {
                if let Err(e) = self.record_applied(config, FleetTable { text, revision }) {
                    tracing::warn!(error = %e, "cannot cache the fleet table in the weight file");
                }
                Ok(revision)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not confirm the change within {limit:?}: it may or may not be in the fleet table, \
                 and applies here only if it is (see `cutover status --fleet`)"
            ))),
        }
    }

    /// Tries to write held rollbacks now, briefly; they stay held (and
    /// are written by [`keep_writing`]) when etcd does not take them.
    fn write_held_now(&self, config: &Config) -> Result<Option<i64>, StoreError> {
        const HELD: &str = "the rollback is live on this replica but NOT yet in the fleet table";
        if !self.is_connected() {
            self.wake_writer.notify_one();
            return Err(StoreError::Pending(format!(
                "{HELD}: etcd is unreachable; it is written to etcd, and followed by every replica, once etcd is back"
            )));
        }
        let written = self.block_on(self.store.timeout(), async {
            let _writing = self.write_lock.lock().await;
            self.write_held(config).await
        });
        match written {
            Ok(()) => Ok(self.pending().iter().filter_map(|p| p.written).max()),
            Err(e) => {
                self.wake_writer.notify_one();
                Err(StoreError::Pending(format!("{HELD}: {e}; it is written as soon as etcd takes it")))
            }
        }
    }

    /// Writes every held rollback, oldest first, each over the table etcd
    /// holds now. Call with `write_lock` held.
    pub(crate) async fn write_held(&self, config: &Config) -> Result<(), Held> {
        loop {
            let next = self
                .pending()
                .iter()
                .enumerate()
                .find(|(_, p)| p.written.is_none())
                .map(|(i, p)| (i, p.clone()));
            let Some((index, rollback)) = next else {
                return Ok(());
            };
            match self.write_rollback(config, &rollback).await {
                Ok(revision) => {
                    self.mark(config, index, &rollback, |p| p.written = Some(revision));
                    if rollback.delayed {
                        tracing::info!(routes = ?rollback.routes, revision, "the rollback held on this replica is now in the fleet table");
                    }
                }
                Err(e) => {
                    self.mark(config, index, &rollback, |p| p.delayed = true);
                    return Err(e);
                }
            }
        }
    }

    /// Updates held rollback `index` if it is still `was`, and keeps the list on disk.
    fn mark(&self, config: &Config, index: usize, was: &PendingRollback, edit: impl FnOnce(&mut PendingRollback)) {
        let mut pending = self.pending();
        if let Some(p) = pending.get_mut(index).filter(|p| **p == *was) {
            edit(p);
            self.save_pending(config, &pending);
        }
        drop(pending);
        self.count_pending();
    }

    /// Writes one rollback over the table etcd holds now, computing it
    /// again when another writer got there first; returns the revision
    /// that holds it.
    async fn write_rollback(&self, config: &Config, rollback: &PendingRollback) -> Result<i64, Held> {
        let key = self.store.keys().weights.clone();
        let routes: Vec<usize> = rollback.routes.iter().filter_map(|r| config.route_index(r)).collect();
        for _ in 0..ROLLBACK_ATTEMPTS {
            let table = self.store.read().await?.ok_or(Held::Unseeded)?;
            let current = Weights::parse(key.as_ref(), &table.text, config).map_err(Held::Skew)?;
            let next = current.rolled_back(config, &routes);
            if next == current {
                return Ok(table.revision);
            }
            let entry = rollback_entry(rollback, table.revision, current.named(config), next.named(config));
            let text = render_fleet(config, &next, &table.text);
            match self
                .store
                .write_if(Some(table.revision), &text, HistoryEdit::Push(entry.clone()))
                .await
            {
                Ok(revision) => {
                    self.set_last_change(Some(entry));
                    return Ok(revision);
                }
                Err(WriteError::Conflict { .. }) => continue,
                Err(WriteError::Store(e)) => return Err(e.into()),
            }
        }
        Err(Held::Contended)
    }
}

/// The history entry of a rollback written over the fleet table of
/// `revision`: says when it was written late, and warns when it overrides
/// what the fleet changed on its routes since it was made.
fn rollback_entry(rollback: &PendingRollback, revision: i64, before: NamedWeights, after: NamedWeights) -> HistoryEntry {
    let mut why = rollback.why.clone();
    if rollback.delayed {
        why.push_str(&format!(
            " (held on the replica while etcd was unreachable, written at {})",
            clock::now_rfc3339()
        ));
    }
    let changed_meanwhile: Vec<&str> = rollback
        .routes
        .iter()
        .filter(|r| rollback.base != Some(revision) && before.get(*r) != rollback.before.get(*r))
        .map(String::as_str)
        .collect();
    if !changed_meanwhile.is_empty() {
        tracing::warn!(routes = ?changed_meanwhile, revision, "the rollback overrides a change the fleet made to its routes meanwhile");
        why.push_str(&format!(
            "{CHANGE_WARNING}re-applied over revision {revision}, which had changed {} since the rollback",
            changed_meanwhile.join(", ")
        ));
    }
    HistoryEntry {
        time: rollback.time.clone(),
        who: rollback.who.clone(),
        why,
        before,
        after,
    }
}

/// The fleet table's text for `weights`, with the comments of `base` (the
/// text it replaces). Only routes `base` names or that leave their stable
/// backend are written: a replica whose config has a route the others do
/// not have yet (a config rolled out one replica at a time) then does not
/// make its table unacceptable to them.
pub fn render_fleet(config: &Config, weights: &Weights, base: &str) -> String {
    let comments = Comments::read(base);
    let all_stable = Weights::all_stable(config);
    render_routes(config, weights, &comments, |ri, name| {
        comments.above.contains_key(name) || weights.route(ri) != all_stable.route(ri)
    })
}

/// The fleet table by names, as far as this replica's config reads it.
fn named(config: &Config, table: Option<&FleetTable>) -> NamedWeights {
    table
        .and_then(|t| Weights::parse(&config.weights_path, &t.text, config).ok())
        .map(|w| w.named(config))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}, new: {url: 'http://127.0.0.1:2'}}\n\
                    routes:\n\
                    - {name: api, match: {path_prefix: /api/}, backends: {legacy: {}, new: {}}}\n\
                    - {name: search, match: {path_prefix: /s/}, backends: {legacy: {}, new: {}}}\n\
                    - {name: web, backends: {legacy: {}, new: {}}}\n";
        Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap()
    }

    #[test]
    fn a_fleet_table_keeps_its_comments_and_names_only_routes_it_had_or_that_leave_stable() {
        let c = config();
        let base = "# the fleet\napi: { legacy: 90, new: 10 }  # OPS-1\nweb: { legacy: 100, new: 0 }\n";
        let weights = Weights::parse(Path::new("w"), base, &c).unwrap();
        // `search`, which the base does not name, stays out while on stable...
        assert_eq!(render_fleet(&c, &weights, base), base);
        // ...and is written once it leaves it.
        let moved = weights.with_route(1, vec![5000, 5000]);
        assert_eq!(
            render_fleet(&c, &moved, base),
            "# the fleet\napi: { legacy: 90, new: 10 }  # OPS-1\nsearch: { legacy: 50, new: 50 }\nweb: { legacy: 100, new: 0 }\n"
        );
    }

    fn held(before_api_new: f64, base: Option<i64>, delayed: bool) -> PendingRollback {
        let entry = HistoryEntry {
            time: "T".into(),
            who: "bob on replica b".into(),
            why: "rollback api".into(),
            before: [(
                "api".to_string(),
                [("legacy".to_string(), 100.0 - before_api_new), ("new".to_string(), before_api_new)].into(),
            )]
            .into(),
            after: NamedWeights::new(),
        };
        let mut rollback = PendingRollback::new(vec!["api".into()], entry, base);
        rollback.delayed = delayed;
        rollback
    }

    fn table(api_new: f64) -> NamedWeights {
        [(
            "api".to_string(),
            [("legacy".to_string(), 100.0 - api_new), ("new".to_string(), api_new)].into(),
        )]
        .into()
    }

    #[test]
    fn a_held_rollback_says_when_it_was_written_late_and_what_it_overrode() {
        // Written on the table it was made on: as made.
        let entry = rollback_entry(&held(50.0, Some(7), false), 7, table(50.0), table(0.0));
        assert_eq!(
            (entry.who.as_str(), entry.why.as_str(), entry.time.as_str()),
            ("bob on replica b", "rollback api", "T")
        );
        // Written late over a table that changed other routes only.
        let entry = rollback_entry(&held(50.0, Some(7), true), 9, table(50.0), table(0.0));
        assert!(
            entry
                .why
                .starts_with("rollback api (held on the replica while etcd was unreachable, written at "),
            "{}",
            entry.why
        );
        assert!(!entry.why.contains("WARNING"), "{}", entry.why);
        // Written over a table that had moved the rolled-back route itself.
        let entry = rollback_entry(&held(50.0, Some(7), true), 9, table(70.0), table(0.0));
        assert!(
            entry
                .why
                .ends_with("; WARNING: re-applied over revision 9, which had changed api since the rollback"),
            "{}",
            entry.why
        );
        assert_eq!(entry.before, table(70.0));
    }
}
