//! Layers shared by the networks (linear, norms, convolutions, resnet and attention blocks,
//! resampling), each loaded from a [`WeightSource`] under its diffusers key prefix with the
//! shape the config expects. `nn` depends on the engine only: the model layer implements
//! [`WeightSource`] for its checkpoints and wraps [`NnError`] in its own error.

mod attention;
mod conv;
mod error;
mod group_norm;
mod linear;
mod load;
mod norm;
mod resnet;
mod sample;

pub use attention::Attention;
pub use conv::Conv2d;
pub use error::NnError;
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use load::WeightSource;
pub use norm::LayerNorm;
pub use resnet::ResnetBlock2D;
pub use sample::{Downsample2D, Upsample2D};
