//! Where changes are kept once they are live.
//!
//! A change is applied in memory first (a rollback takes effect before any
//! IO), then persisted through a [`WeightStore`]. The one store today is the
//! weight file with its history beside it ([`FileStore`]). A store shared by
//! several proxies would compare and swap on a revision and answer
//! [`StoreError::Conflict`] with the table it holds; `Live::apply` then
//! takes the change back (a rollback stays) and the admin API answers 409.

use std::path::PathBuf;

use crate::config::weight_file::HistoryEntry;
use crate::config::{Config, NamedWeights, WeightFile, Weights};

/// Keeps the weight table and its history.
pub trait WeightStore: Send + Sync {
    /// Persists a change that is live.
    fn persist(&self, config: &Config, write: Persist<'_>) -> Result<(), StoreError>;

    /// The newest change in the history, for `undo` and `status`.
    fn last_change(&self, config: &Config) -> Result<Option<HistoryEntry>, StoreError>;
}

/// What a change leaves to persist.
pub struct Persist<'a> {
    /// The table now live; `None` when it came from the store itself (an
    /// edit of the weight file): only the history has news.
    pub weights: Option<&'a Weights>,
    pub history: HistoryOp,
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
}

/// The weight file the config names, and its history beside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStore;

impl WeightStore for FileStore {
    fn persist(&self, config: &Config, write: Persist<'_>) -> Result<(), StoreError> {
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
        done.map_err(io(history.path().to_path_buf()))
    }

    fn last_change(&self, config: &Config) -> Result<Option<HistoryEntry>, StoreError> {
        Ok(WeightFile::of(config).history().last())
    }
}
