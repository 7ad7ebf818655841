//! The engine's error type.

/// Every way an engine operation can fail. Messages name the op and the broken rule,
/// e.g. `matmul: inner dims 3 and 4 differ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Input shapes (or ranks, dims, lengths) do not satisfy the op's rule.
    #[error("{op}: {msg}")]
    Shape {
        /// The op that rejected its input.
        op: &'static str,
        /// The rule that was broken, with the offending values.
        msg: String,
    },
    /// A non-shape argument is invalid (index out of range, zero stride, bad group count, ...).
    #[error("{op}: {msg}")]
    Invalid {
        /// The op that rejected its input.
        op: &'static str,
        /// The rule that was broken, with the offending values.
        msg: String,
    },
    /// The device string names a device this build or machine cannot use.
    #[error("device {device:?} unavailable: {reason}")]
    DeviceUnavailable {
        /// The device as requested, e.g. `cuda:0`.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The device ran out of memory for this op; the caller may retry smaller or later, and
    /// the device stays usable.
    #[error("{op}: out of device memory ({bytes} bytes requested)")]
    OutOfMemory {
        /// The op whose allocation failed.
        op: &'static str,
        /// The size of the failed allocation (0 when the driver did not say).
        bytes: u64,
    },
    /// The backend failed to run an op (a driver or kernel launch error).
    #[error("{op}: {msg}")]
    Backend {
        /// The op that failed.
        op: &'static str,
        /// What the backend reported.
        msg: String,
    },
    /// The device string is not of a known form.
    #[error("unknown device {0:?}: expected \"cpu\", \"cuda:N\" or \"cuda-emu\"")]
    UnknownDevice(String),
}

impl EngineError {
    /// A shape error for `op`.
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        EngineError::Shape {
            op,
            msg: msg.into(),
        }
    }

    /// An invalid-argument error for `op`.
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        EngineError::Invalid {
            op,
            msg: msg.into(),
        }
    }

    /// The op that failed, if the error came from an op.
    pub fn op(&self) -> Option<&'static str> {
        match self {
            EngineError::Shape { op, .. }
            | EngineError::Invalid { op, .. }
            | EngineError::OutOfMemory { op, .. }
            | EngineError::Backend { op, .. } => Some(op),
            _ => None,
        }
    }
}

/// `Result` with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
