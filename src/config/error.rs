use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a config file, printed as `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: &Path, line: usize, column: usize) -> Location {
        Location {
            file: file.to_path_buf(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Everything that can be wrong with a config or weight file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read (missing, not a regular file, too large, not UTF-8).
    #[error(transparent)]
    File(#[from] super::file::FileError),
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    pub fn at(location: Location, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location,
            message: message.into(),
        }
    }

    /// Folds a list of errors into one; `None` when the list is empty.
    pub fn collect(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Many(errors)),
        }
    }
}
