//! The tensor engine: `Tensor`, `Shape`, `DType`, `Device` and the ops the models need.
//! Storage and backends stay private so a CUDA backend can slot in without touching model code.
//!
//! Conventions:
//! - Tensors are always contiguous and row-major; cloning is cheap (an `Arc`). `reshape`,
//!   `unsqueeze`/`squeeze` and `narrow` over leading dims share storage, other layout ops copy.
//! - Every compute op accepts any [`DType`], computes in f32 (half inputs are converted on the
//!   fly) and returns F32. Layout ops (`transpose`, `permute`, `narrow`, `cat`, `index_select`)
//!   keep the input dtype.
//! - Weights can be borrowed from a memory map without copying via
//!   [`Tensor::from_shared_bytes`]; `linear` and `conv2d` convert half-precision weights to f32 in
//!   bounded blocks, never as a whole.
//! - Bad input never panics: every op returns an [`EngineError`] naming the op and the rule.
//!
//! ```
//! use inference_server::engine::{Device, Tensor};
//!
//! let dev = Device::parse("cpu")?;
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &dev)?;
//! let w = Tensor::from_vec(vec![1.0, 0.0, -1.0], (1, 3), &dev)?;
//! let y = x.linear(&w, None)?; // [2, 1]
//! assert_eq!(y.to_vec_f32()?, vec![-2.0, -2.0]);
//! let err = x.matmul(&x).unwrap_err();
//! assert_eq!(err.to_string(), "matmul: inner dims 3 and 2 differ ([2, 3] x [2, 3])");
//! # Ok::<(), inference_server::engine::EngineError>(())
//! ```
//!
//! Backend boundary: ops check shapes on their own, then reach the data through
//! `Tensor::cpu_slice`/`f32_data` and run a kernel from the private `cpu` module. A CUDA
//! backend adds a `Storage` variant and a dispatch at those points.

mod cpu;
pub(crate) mod cuda;
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
