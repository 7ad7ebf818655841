//! The tensor engine: `Tensor`, `Shape`, `DType`, `Device` and the ops the models need.
//! Storage and backends stay private so a CUDA backend can slot in without touching model code.
//!
//! Every op accepts any [`DType`], computes in f32 (half inputs are converted on the fly) and
//! returns an F32 tensor unless stated. Tensors are always contiguous and row-major.

mod cpu;
mod device;
mod dtype;
mod error;
mod ops;
mod shape;
mod storage;
mod tensor;

pub use device::Device;
pub use dtype::DType;
pub use error::{EngineError, Result};
pub use shape::Shape;
pub use storage::SharedBytes;
pub use tensor::Tensor;
