//! The CPU backend: host storage and kernels on plain f32 slices (rayon, the `gemm` crate,
//! AVX2/AVX-512 chosen at run time where it matters). Shape checks happen in `ops` before a
//! kernel runs; `backend.rs` maps each op of the backend trait onto these kernels.

pub(crate) mod alloc;
pub(crate) mod attention;
mod backend;
pub(crate) mod bf16gemm;
pub(crate) mod conv;
mod conv_bf16;
pub(crate) mod elementwise;
pub(crate) mod f32gemm;
mod fastmath;
pub(crate) mod gemm;
#[cfg(test)]
mod gemm_testing;
pub(crate) mod layout;
mod matmul;
pub(crate) mod norm;
pub mod profile;
pub(crate) mod sinusoid;
mod storage;
pub(crate) mod threads;
mod winograd;
mod winograd_bf16;
mod winograd_f32;
mod winograd_rows;
mod winograd_weights;

pub(crate) use storage::{CpuSlice, CpuStorage};

/// Work (in elements or multiply-adds) below which a kernel stays on the calling thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// How 3×3 stride-1 convolutions are computed, from `SDSERVE_CPU_CONV`: `winograd` (the
/// default: Winograd F(4×4, 3×3) where it applies) or `im2col` (always im2col + GEMM, to
/// measure the difference or to check a result against the direct path). Read once.
pub(crate) fn winograd_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| match std::env::var("SDSERVE_CPU_CONV").as_deref() {
        Ok("im2col") => false,
        Ok("winograd") | Err(_) => true,
        Ok(other) => {
            tracing::warn!(
                value = other,
                "SDSERVE_CPU_CONV must be winograd or im2col; using winograd"
            );
            true
        }
    })
}
