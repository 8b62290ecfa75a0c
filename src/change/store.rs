//! Where changes are kept once they are live.
//!
//! A change is applied in memory first (a rollback takes effect before any
//! IO), then persisted through a [`WeightStore`]: the weight file with its
//! history beside it ([`FileStore`]), or the fleet's table in etcd
//! ([`crate::fleet::FleetWeightStore`]). A shared store compares and swaps
//! on the revision the change was computed from and answers
//! [`StoreError::Conflict`] with the table it holds; `Live::apply` then
//! takes the change back (a rollback stays) and the admin API answers 409.

use std::path::PathBuf;

use crate::config::weight_file::HistoryEntry;
use crate::config::{Config, NamedWeights, WeightFile, Weights};

/// Keeps the weight table and its history.
pub trait WeightStore: Send + Sync {
    /// Persists a change that is live. Returns the store's revision of the
    /// table it now holds, when it counts revisions (the fleet's etcd).
    /// May block on IO: called off the async workers.
    fn persist(&self, config: &Config, write: Persist<'_>) -> Result<Option<i64>, StoreError>;

    /// The newest change in the history, read now, for `undo`. May block.
    fn last_change(&self, config: &Config) -> Result<Option<HistoryEntry>, StoreError>;

    /// The newest change as last known, for `status`: never waits on the network.
    fn shown_change(&self, config: &Config) -> Option<HistoryEntry> {
        self.last_change(config).ok().flatten()
    }
}

/// What a change leaves to persist.
pub struct Persist<'a> {
    /// The table now live; `None` when it came from the store itself (an
    /// edit of the weight file): only the history has news.
    pub weights: Option<&'a Weights>,
    pub history: HistoryOp,
    pub origin: Origin,
}

/// What kind of change a shared store is asked to keep: it decides what
/// the store does when its table moved on since the change was computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A shift or an undo, computed from the live table: kept only if the
    /// store still holds that table, else refused (and taken back).
    Change,
    /// A step of the guard's ramp: kept like [`Origin::Change`]; when a
    /// shared store cannot keep it, the route is rolled back there in full.
    RampStep { route: String },
    /// These routes go wholly to their stable backends: a shared store
    /// applies that to whatever table it holds, now or once it can.
    Rollback { routes: Vec<String> },
    /// An edit of the config or weight file.
    WeightFile,
    /// A table the fleet published in etcd at `revision`, as its text.
    Fleet { revision: i64, text: String },
}

/// What a change does to the history.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryOp {
    Push(HistoryEntry),
    /// Drops the newest entry (an undo restored what it replaced).
    Pop,
    /// The later steps of the guard's ramp are one change, not many.
    Keep,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store holds a table other than the one the change was computed
    /// from; `current` is that table.
    #[error("the stored weight table was changed elsewhere meanwhile")]
    Conflict { current: NamedWeights },
    /// The store could not be reached, or cannot take changes now; nothing
    /// was stored (or, after a timeout, it is unknown whether it was).
    #[error("{0}")]
    Unavailable(String),
    /// A rollback the store could not take yet: it stays live here and is
    /// written once the store can take it.
    #[error("{0}")]
    Pending(String),
}

/// The weight file the config names, and its history beside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStore;

impl WeightStore for FileStore {
    fn persist(&self, config: &Config, write: Persist<'_>) -> Result<Option<i64>, StoreError> {
        let file = WeightFile::of(config);
        let io = |path: PathBuf| move |source| StoreError::Io { path, source };
        if let Some(weights) = write.weights {
            file.write(config, weights).map_err(io(file.path().to_path_buf()))?;
        }
        let history = file.history();
        let done = match write.history {
            HistoryOp::Push(entry) => history.push(entry),
            HistoryOp::Pop => history.pop().map(drop),
            HistoryOp::Keep => Ok(()),
        };
        done.map_err(io(history.path().to_path_buf()))?;
        Ok(None)
    }

    fn last_change(&self, config: &Config) -> Result<Option<HistoryEntry>, StoreError> {
        Ok(WeightFile::of(config).history().last())
    }
}
