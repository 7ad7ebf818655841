//! The one error type of checkpoint loading.

use std::path::PathBuf;

/// Everything that can go wrong while opening a checkpoint or fetching one of its tensors.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors header is malformed.
    #[error("{path}: bad safetensors header: {reason}")]
    Header {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// The file ends before the data of a tensor its header lists.
    #[error(
        "{path}: file is truncated: tensor `{tensor}` needs bytes up to {needed} but the file has {file_len}"
    )]
    Truncated {
        /// The safetensors file.
        path: PathBuf,
        /// The first tensor (in file order) whose data does not fit.
        tensor: String,
        /// The file length that tensor needs.
        needed: u64,
        /// The actual file length.
        file_len: u64,
    },
    /// The checkpoint lacks a tensor the model needs.
    #[error("missing tensor `{tensor}` (expected shape {expected_shape:?})")]
    Missing {
        /// Diffusers name of the tensor.
        tensor: String,
        /// The shape the model expects.
        expected_shape: Vec<usize>,
    },
    /// A tensor has a shape other than the model expects.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Diffusers name of the tensor.
        tensor: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape stored in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype other than F32, F16 or BF16.
    #[error("tensor `{tensor}` is stored as {found}; only F32, F16 and BF16 are supported")]
    DType {
        /// Name of the tensor.
        tensor: String,
        /// The dtype named in the header.
        found: String,
    },
    /// The checkpoint's files or key names do not form a model this server knows.
    #[error("{path}: {reason}")]
    Layout {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is missing or unexpected.
        reason: String,
    },
    /// A model configuration has a missing or invalid field.
    #[error("{path}: config field `{field}`: {reason}")]
    Config {
        /// The configuration file (or the checkpoint that embeds it).
        path: PathBuf,
        /// The offending field.
        field: String,
        /// Why its value is rejected.
        reason: String,
    },
}

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> WeightsError {
        WeightsError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn layout(path: impl Into<PathBuf>, reason: impl Into<String>) -> WeightsError {
        WeightsError::Layout {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
