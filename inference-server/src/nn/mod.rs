//! Layers shared by the networks (linear, norms, convolutions, resnet and attention blocks,
//! resampling), each loaded from a checkpoint's
//! [`WeightSet`](crate::model::weights::WeightSet) under its diffusers key prefix with the shape
//! the config expects.

mod attention;
mod conv;
mod group_norm;
mod linear;
mod load;
mod norm;
mod resnet;
mod sample;

pub use attention::Attention;
pub use conv::Conv2d;
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use load::load_tensor;
pub use norm::LayerNorm;
pub use resnet::ResnetBlock2D;
pub use sample::{Downsample2D, Upsample2D};
