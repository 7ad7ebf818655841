//! Layers shared by the networks (linear, layer norm, ...), each loaded from a checkpoint's
//! [`WeightSet`](crate::model::weights::WeightSet) with the shape the config expects.

mod linear;
mod load;
mod norm;

pub use linear::Linear;
pub use load::load_tensor;
pub use norm::LayerNorm;
