//! Weight changes as typed messages.
//!
//! Every change of the live weights — an operator's shift, rollback or undo
//! (admin API, dashboard, CLI, offline CLI), the guard's rollback and each
//! step of its ramp, an edit of the weight file, a new fleet table from
//! etcd — is a [`Change`], applied
//! by one function, [`crate::live::Live::apply`]: it computes the next
//! table from the live one (the parity gate included), makes it live, then
//! persists it through a [`WeightStore`] and answers [`Changed`] or a
//! [`ChangeError`].

mod plan;
pub mod store;

use serde::Serialize;

use crate::config::{ConfigError, NamedWeights};

pub use plan::{CHANGE_WARNING, check_parity_gate, ramp_step, select_routes, shift, weight_file_change_reason};
pub use store::{FileStore, HistoryOp, Origin, Persist, StoreError, WeightStore};

/// The actor of the guard's changes.
pub const GUARD: &str = "guard";
/// The actor of edits of the weight file.
pub const WEIGHT_FILE: &str = "weight file";
/// The actor of tables the fleet published in etcd.
pub const FLEET: &str = "fleet";

/// One change of the live weights.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    /// Who asks: `127.0.0.1:40112 (alice)`, `cli (bob)`, [`GUARD`], [`WEIGHT_FILE`].
    pub actor: String,
    /// Why, in the actor's words, when they gave a reason.
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    /// Sets one route's weights (see [`shift`]). Refused when it raises a
    /// non-stable backend while parity is below the route's bar, unless forced.
    Shift {
        route: String,
        weights: Vec<(String, f64)>,
        force: bool,
    },
    /// Sends routes wholly to their stable backends.
    Rollback { routes: Routes, cause: RollbackCause },
    /// Restores the table the newest history entry replaced.
    Undo,
    /// Step `step` of `of` of the guard's gradual rollback from `start` (the
    /// route's weights when the ramp began). Refused when the route no
    /// longer holds what the previous step left: someone changed it meanwhile.
    RampStep {
        route: String,
        step: u64,
        of: u64,
        start: Vec<u16>,
    },
    /// New text of the config file and, when it was read alongside, of the
    /// weight file. Applied as written (no parity gate), with a warning for
    /// each route raised while its parity is below the bar.
    FileReload {
        config_text: String,
        weights_text: Option<String>,
        /// Install even when the files compile to the live table.
        force: bool,
    },
    /// The fleet's table as etcd holds it at `revision` (fleet mode),
    /// checked against this replica's config like a weight file. Routes
    /// rolled back here and not yet in the fleet table stay rolled back.
    FleetTable { text: String, revision: i64 },
}

/// The routes a rollback names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routes {
    Named(Vec<String>),
    All,
}

impl Routes {
    pub fn new(routes: Vec<String>, all: bool) -> Routes {
        if all { Routes::All } else { Routes::Named(routes) }
    }
}

/// Why a route was rolled back (the `reason` label of `cutover_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackCause {
    Manual,
    Guard,
}

impl RollbackCause {
    pub fn label(self) -> &'static str {
        match self {
            RollbackCause::Manual => "manual",
            RollbackCause::Guard => "guard",
        }
    }
}

impl Change {
    pub fn shift(actor: impl Into<String>, route: impl Into<String>, weights: Vec<(String, f64)>, force: bool) -> Change {
        Change::new(
            actor,
            ChangeKind::Shift {
                route: route.into(),
                weights,
                force,
            },
        )
    }

    pub fn rollback(actor: impl Into<String>, routes: Routes, cause: RollbackCause) -> Change {
        Change::new(actor, ChangeKind::Rollback { routes, cause })
    }

    pub fn undo(actor: impl Into<String>) -> Change {
        Change::new(actor, ChangeKind::Undo)
    }

    /// A step of the guard's ramp; `reason` is the breach that started it.
    pub fn ramp_step(route: impl Into<String>, step: u64, of: u64, start: Vec<u16>, reason: impl Into<String>) -> Change {
        Change::new(
            GUARD,
            ChangeKind::RampStep {
                route: route.into(),
                step,
                of,
                start,
            },
        )
        .because(Some(reason.into()))
    }

    pub fn file_reload(config_text: String, weights_text: Option<String>, force: bool) -> Change {
        Change::new(
            WEIGHT_FILE,
            ChangeKind::FileReload {
                config_text,
                weights_text,
                force,
            },
        )
    }

    pub fn fleet_table(text: String, revision: i64) -> Change {
        Change::new(FLEET, ChangeKind::FleetTable { text, revision })
    }

    fn new(actor: impl Into<String>, kind: ChangeKind) -> Change {
        Change {
            kind,
            actor: actor.into(),
            reason: None,
        }
    }

    /// The same change, with the actor's reason.
    pub fn because(mut self, reason: Option<String>) -> Change {
        self.reason = reason;
        self
    }

    /// What the history and the log say the change was. The reasons of the
    /// guard and of the weight file begin with their own name.
    pub(crate) fn why(&self) -> String {
        let reason = self.reason.as_deref();
        match &self.kind {
            ChangeKind::Shift { route, .. } => reason.map_or_else(|| format!("shift {route}"), str::to_string),
            ChangeKind::Rollback {
                cause: RollbackCause::Guard,
                ..
            } => reason.unwrap_or(GUARD).to_string(),
            ChangeKind::Rollback { routes, .. } => {
                let what = match routes {
                    Routes::All => "all routes".to_string(),
                    Routes::Named(names) => names.join(", "),
                };
                reason.map_or_else(|| format!("rollback {what}"), |r| format!("rollback {what}: {r}"))
            }
            ChangeKind::RampStep { step, of, .. } => format!("{} (ramp step {step}/{of})", reason.unwrap_or(GUARD)),
            ChangeKind::Undo => "undo".to_string(),
            ChangeKind::FileReload { .. } => "weight file changed".to_string(),
            ChangeKind::FleetTable { revision, .. } => format!("fleet table revision {revision}"),
        }
    }
}

/// A change that is live.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// The live version after the change.
    pub version: String,
    pub weights: NamedWeights,
    /// Whether the store (the weight file) holds the change. When not, the
    /// change is live all the same and `persist_error` says why.
    pub persisted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_error: Option<String>,
    /// Fleet mode: the etcd revision of the fleet table holding the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_revision: Option<i64>,
    /// False when a file reload found the files already live: nothing was installed.
    #[serde(skip)]
    pub installed: bool,
}

/// Why a change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown route {0:?}")]
    UnknownRoute(String),
    #[error("route {route:?} has no backend {backend:?} (it has: {known})")]
    UnknownBackend { route: String, backend: String, known: String },
    #[error("{0}")]
    BadWeight(String),
    #[error("weights of route {route:?} sum to {sum}, not 100")]
    Sum { route: String, sum: String },
    #[error("name the routes to roll back, or all of them")]
    NoRoutes,
    #[error(
        "route {route:?}: parity is {measured}, below the bar of {bar:.2}% clean set by min_clean_share; \
         fix the differences (see `cutover parity {route}`) or force the shift"
    )]
    ParityBelowBar { route: String, measured: String, bar: f64 },
    #[error("nothing to undo: the history is empty")]
    NothingToUndo,
    #[error("the history entry no longer fits the config: {0}")]
    Stale(ConfigError),
    #[error("cannot read the weight history: {0}")]
    History(StoreError),
    #[error("route {route:?} was changed while the guard ramped it back; the ramp stops")]
    ChangedMeanwhile { route: String },
    /// The store holds a table newer than the one the change was computed
    /// from (another replica changed it): the change was taken back.
    #[error("the weight table was changed elsewhere meanwhile; nothing changed here, look at the current table and try again")]
    Conflict { current: NamedWeights },
    /// The files of a reload do not compile.
    #[error(transparent)]
    Config(ConfigError),
    /// The weight file changed again after the reload read it.
    #[error("the weight file changed again after it was read")]
    Superseded,
    /// The shared store cannot take the change now; nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// A fleet table naming what this replica's config lacks, or otherwise
    /// not a valid table for it: config skew. It is kept out whole.
    #[error("the fleet table at revision {revision} does not fit this replica's config (config skew): {error}")]
    Skew { revision: i64, error: ConfigError },
}

/// A change as one line, naming who made it once: `shift api by
/// 127.0.0.1:4000 (alice)`, but `weight file changed` and `guard: backend
/// new error rate …`, whose reasons begin with their actor's name.
pub fn describe(who: &str, why: &str) -> String {
    if why.starts_with(who) {
        why.to_string()
    } else {
        format!("{why} by {who}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_who_once() {
        assert_eq!(
            describe("127.0.0.1:4000 (alice)", "shift api"),
            "shift api by 127.0.0.1:4000 (alice)"
        );
        assert_eq!(describe(WEIGHT_FILE, "weight file changed"), "weight file changed");
        assert_eq!(describe(GUARD, "guard: backend new error rate"), "guard: backend new error rate");
    }

    #[test]
    fn reasons_follow_the_kind() {
        let shift = Change::shift("a", "api", vec![], false);
        assert_eq!(shift.why(), "shift api");
        assert_eq!(shift.because(Some("ticket 7".into())).why(), "ticket 7");
        let rollback = Change::rollback("a", Routes::Named(vec!["api".into(), "web".into()]), RollbackCause::Manual);
        assert_eq!(rollback.why(), "rollback api, web");
        let all = Change::rollback("a", Routes::All, RollbackCause::Manual).because(Some("pager".into()));
        assert_eq!(all.why(), "rollback all routes: pager");
        let guard = Change::rollback(GUARD, Routes::All, RollbackCause::Guard).because(Some("guard: backend new down".into()));
        assert_eq!(guard.why(), "guard: backend new down");
        let step = Change::ramp_step("api", 2, 3, vec![5000, 5000], "guard: backend new down");
        assert_eq!(step.why(), "guard: backend new down (ramp step 2/3)");
    }
}
