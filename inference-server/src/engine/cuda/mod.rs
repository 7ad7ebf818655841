//! The CUDA backend's building blocks: our own kernels (`kernels/*.cu`, compiled by NVRTC at
//! start-up), their launch wrappers (`ops`), and the seam they launch through ([`launch`]).
//!
//! Without a GPU the same kernel sources run on the host: the `cuda-emu` feature (on for this
//! crate's tests) compiles them with the C++ compiler against a CUDA-on-CPU emulator (`emu/`,
//! [`emu`]), so every kernel is checked against the CPU backend in plain `cargo test`.
//! `kernels/prelude.cuh` is prepended to every kernel file; it documents the rules kernel
//! authors follow so that both worlds compile the same text.

//!
//! Above the kernels: [`device::Runtime`] is what a device must provide (memory, copies,
//! launches, GEMM) — `driver.rs` on a GPU (cudarc, dynamic loading), `emu_runtime.rs` under the
//! emulator — and `storage.rs` + `backend.rs` implement the engine's backend trait on top, the
//! same code for both.

pub(crate) mod backend;
pub(crate) mod conv_choice;
pub(crate) mod convolution;
pub(crate) mod device;
pub(crate) mod driver;
#[cfg(feature = "cuda-emu")]
pub(crate) mod emu;
#[cfg(feature = "cuda-emu")]
pub(crate) mod emu_runtime;
pub(crate) mod error;
pub(crate) mod gate;
pub(crate) mod graph;
pub(crate) mod launch;
pub(crate) mod lt;
pub(crate) mod nvrtc;
pub(crate) mod ops;
pub(crate) mod pool;
pub(crate) mod profile;
pub(crate) mod storage;

pub use device::{CudaDevice, MemoryStats};
pub use profile::{KernelTime, kernel_report};

#[cfg(all(test, feature = "cuda-emu"))]
mod device_tests;
#[cfg(test)]
mod launch_fit;
#[cfg(all(test, feature = "cuda-emu"))]
mod pipeline_tests;
#[cfg(all(test, feature = "cuda-emu"))]
mod standin_tests;
