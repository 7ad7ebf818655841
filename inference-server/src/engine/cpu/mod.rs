//! The CPU backend: host storage and kernels on plain f32 slices (rayon, the `gemm` crate,
//! AVX2/AVX-512 chosen at run time where it matters). Shape checks happen in `ops` before a
//! kernel runs; `backend.rs` maps each op of the backend trait onto these kernels.

pub(crate) mod attention;
mod backend;
pub(crate) mod conv;
pub(crate) mod elementwise;
mod fastmath;
pub(crate) mod gemm;
pub(crate) mod layout;
mod matmul;
pub(crate) mod norm;
mod storage;

pub(crate) use storage::{CpuSlice, CpuStorage};

/// Work (in elements or multiply-adds) below which a kernel stays on the calling thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;
