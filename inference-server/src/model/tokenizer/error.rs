use std::path::PathBuf;

/// Why a vocabulary could not be loaded or written. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file was read but its content is not a valid vocabulary or merge list.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it, including the line where that applies.
        problem: String,
    },
}

impl TokenizerError {
    pub(super) fn invalid(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        TokenizerError::Invalid {
            path: path.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TokenizerError::Io {
            path: path.into(),
            source,
        }
    }
}
