//! CPU kernels. They work on plain f32 slices; shape checks happen in `ops` before they run.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod fastmath;
pub(crate) mod gemm;
pub(crate) mod layout;
pub(crate) mod norm;

/// Work (in elements or multiply-adds) below which a kernel stays on the calling thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;
