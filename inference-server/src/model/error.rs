//! The error every model component returns: a checkpoint that does not fit, an engine op that
//! refused its inputs, or a caller's input that breaks a rule.

use crate::engine::EngineError;
use crate::model::tokenizer::TokenizerError;
use crate::model::weights::WeightsError;
use crate::nn::NnError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint is missing a tensor, has one of the wrong shape, or cannot be read.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The checkpoint's tokenizer files cannot be read.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A layer could not load its weights or refused its input.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// A tensor op refused its inputs (a shape bug between layers, or an unavailable device).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An input broke a rule of the model, e.g. more tokens than the text encoder has positions.
    #[error("{field}: {rule}")]
    Input {
        /// The input at fault, named as the caller knows it.
        field: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

impl ModelError {
    /// The engine's error behind this one when an op failed, directly or inside a layer.
    pub fn engine(&self) -> Option<&EngineError> {
        match self {
            ModelError::Engine(e) | ModelError::Nn(NnError::Engine(e)) => Some(e),
            _ => None,
        }
    }
}
