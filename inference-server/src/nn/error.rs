//! The error every layer of `nn` returns.

use crate::engine::EngineError;

/// Why a layer could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The [`WeightSource`](super::WeightSource) could not supply a tensor: it is missing, has
    /// another shape than the layer expects, or cannot be read. The source's own error is kept
    /// (it names the tensor and the expected shape).
    #[error(transparent)]
    Weights(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A tensor op refused its inputs (a shape bug between layers, or an unavailable device).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An input or a layer setting broke a rule, e.g. groups that do not divide the channels.
    #[error("{field}: {rule}")]
    Input {
        /// The input or setting at fault, named as the caller knows it.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
}
