//! Fleet mode: one weight table for every replica, kept in etcd.
//!
//! [`FleetStore`] is the only code that talks to etcd. Its calls are each
//! bounded by a timeout and are meant to run in their own tasks, never on
//! the request path. Key layout under the configured prefix (docs/FLEET.md):
//!
//! - `{prefix}/weights`: the weight table, the same YAML text as weights.yaml;
//!   its `mod_revision` is the table's revision.
//! - `{prefix}/history`: the change history, JSON lines of
//!   [`crate::config::weight_file::HistoryEntry`], oldest first, at most
//!   [`crate::config::weight_file::HISTORY_LEN`]; written in the same transaction as the
//!   table it describes.
//! - `{prefix}/replicas/{id}`: a replica's [`ReplicaInfo`] as JSON, bound to
//!   a lease so it disappears when the replica stops renewing it.
//!
//! A running replica's side is [`Fleet`], beneath `Live`: its state, and
//! the [`FleetWeightStore`] that writes changes with compare-and-swap
//! (rollbacks are held and written once etcd takes them). The tasks that
//! drive `Live` from the fleet table and keep the registration current sit
//! above it, in `crate::replica`.

mod link;
pub mod pending;
mod registry;
pub mod report;
mod store;
mod watch;
mod writer;

use std::time::Duration;

pub use crate::config::fleet::{EtcdAuth, EtcdTls, FleetSettings};
pub use link::{Fleet, Rejected};
pub use registry::{Registration, ReplicaInfo};
pub use report::{Convergence, ParityCounts};
pub use store::{FleetState, FleetStore, HistoryEdit};
pub use watch::{FleetWatch, WatchEvent};
pub use writer::{FleetWeightStore, Held, render_fleet};

/// The weight table as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTable {
    /// YAML, the format of weights.yaml.
    pub text: String,
    /// The etcd revision that wrote it (the key's `mod_revision`).
    pub revision: i64,
}

/// Talking to etcd failed, or what it holds is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd did not answer {op} within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("etcd {op}: {source}")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd watch canceled: {0}")]
    WatchCanceled(String),
    #[error("{key} in etcd is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

/// Why a conditional write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The table is no longer the one the change was computed from.
    #[error("the fleet table changed meanwhile ({})", describe(.current))]
    Conflict { current: Option<FleetTable> },
    #[error(transparent)]
    Store(#[from] FleetError),
}

/// Why a seed did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the fleet already has a weight table (revision {}); use --force to overwrite it", .current.revision)]
    AlreadySeeded { current: FleetTable },
    #[error("the fleet table kept changing while seeding; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] FleetError),
}

fn describe(table: &Option<FleetTable>) -> String {
    match table {
        Some(t) => format!("now at revision {}", t.revision),
        None => "there is no fleet table now".into(),
    }
}

/// The keys of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub weights: String,
    pub history: String,
    /// Ends with '/'; a replica's key is this and its id.
    pub replicas: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_end_matches('/');
        Keys {
            weights: format!("{prefix}/weights"),
            history: format!("{prefix}/history"),
            replicas: format!("{prefix}/replicas/"),
        }
    }

    pub fn replica(&self, id: &str) -> String {
        format!("{}{id}", self.replicas)
    }
}
