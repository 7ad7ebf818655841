//! The tensor engine: `Tensor`, `Shape`, `DType`, `Device` and the ops the models need.
//! Storage and backends stay private so a CUDA backend can slot in without touching model code.
//!
//! Conventions:
//! - Tensors are always contiguous and row-major; cloning is cheap (an `Arc`). `reshape`,
//!   `unsqueeze`/`squeeze` and `narrow` over leading dims share storage, other layout ops copy.
//! - The activation dtype flows through: every op returns its input's [`DType`] (a backend may
//!   compute in f32 inside; the CPU backend does). Two operands of different dtypes meet in
//!   their common dtype, f32 when they differ (as torch promotes). Weights of `linear`,
//!   `conv2d` and the norms may be of another dtype than the activation.
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
//! Backend boundary (the shape of candle-core): `ops/` checks shapes and builds the op as data
//! (`op.rs`: `UnaryOp`, `BinaryOp`, geometry structs); `storage.rs` is the one place that
//! matches on where a tensor lives and hands the op to that backend's implementation of the
//! `BackendStorage` trait (`backend.rs`, no default methods, so a backend missing an op does
//! not compile). `cpu/` is the CPU backend.

mod backend;
mod cpu;
pub(crate) mod cuda;
mod device;
mod dtype;
mod error;
mod graph;
mod op;
mod ops;
mod shape;
mod storage;
mod tensor;

pub use cpu::profile;
pub use cpu::sinusoid::sinusoidal_embedding;

/// Whether this CPU multiplies bf16 natively (`avx512_bf16`, and not forced off by
/// `SDSERVE_CPU_BF16=portable`): what `--precision bf16` gains on the CPU. Without it bf16
/// products are emulated (rounded operands, f32 GEMM) and cost more than f32.
pub fn cpu_bf16_native() -> bool {
    cpu::bf16gemm::bf16_native()
}

/// The instruction set the CPU's f32 GEMMs run on (`avx512`: own kernels; `avx2` or `portable`:
/// the `gemm` crate), after `SDSERVE_CPU_ISA`: for the load log.
pub fn cpu_gemm_isa() -> &'static str {
    cpu::f32gemm::isa().name()
}
pub use cuda::{CudaDevice, KernelTime, MemoryStats, kernel_report};
pub use device::Device;
pub use dtype::DType;
pub use error::{EngineError, Result};
pub use graph::{Recorded, graphs_enabled};
pub use shape::Shape;
pub use storage::SharedBytes;
pub use tensor::Tensor;
