//! Wrappers for `kernels/reduce.cu`: sum (or mean) over a middle axis and softmax over the last.

use super::{launch, u32_arg};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::{LaunchCfg, Launcher};

/// Threads of a `sum_middle` block (the kernel's shared `part` array holds this many doubles).
const SUM_BLOCK: u32 = 256;
/// Largest softmax block.
const SOFTMAX_MAX_BLOCK: u32 = 1024;

/// `out[o, i] = scale · Σ_k x[o, k, i]` for `x` as `outer × d × inner` (scale `1/d` for a mean).
/// Accumulates in f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sum_middle(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    outer: usize,
    d: usize,
    inner: usize,
    scale: f32,
) -> Result<(), CudaError> {
    if outer == 0 || inner == 0 {
        return Ok(());
    }
    let (outer32, d32, inner32) = (
        u32_arg("sum_middle", "outer", outer)?,
        u32_arg("sum_middle", "d", d)?,
        u32_arg("sum_middle", "inner", inner)?,
    );
    // threadIdx.x walks `inner` (up to a warp wide), threadIdx.y splits `d`: a small `inner`
    // (a mean over the last axis) still gets 256 threads on its reduction.
    let bx = (inner.next_power_of_two() as u32).min(32);
    let by = SUM_BLOCK / bx;
    if outer32 > 65_535 {
        return Err(super::unsupported(
            "sum_middle",
            format!("outer = {outer} exceeds the grid's y limit 65535"),
        ));
    }
    let cfg = LaunchCfg {
        grid: [inner32.div_ceil(bx), outer32, 1],
        block: [bx, by, 1],
        shared_mem_bytes: 0,
    };
    launch!(l, format!("sum_middle_{dtype}"), cfg; x, out, outer32, d32, inner32, scale)
}

/// Softmax over each row of `x` (`rows × cols`), one block per row.
pub(crate) fn softmax_last(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    rows: usize,
    cols: usize,
) -> Result<(), CudaError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let rows32 = u32_arg("softmax_last", "rows", rows)?;
    let cols32 = u32_arg("softmax_last", "cols", cols)?;
    // A warp for CLIP's 77-wide rows, up to 1024 threads for long rows; a multiple of 32.
    let block = (cols32.div_ceil(4).next_power_of_two()).clamp(32, SOFTMAX_MAX_BLOCK);
    if rows32 > i32::MAX as u32 {
        return Err(super::unsupported(
            "softmax_last",
            format!("rows = {rows} exceeds the grid's x limit"),
        ));
    }
    let cfg = LaunchCfg {
        grid: [rows32, 1, 1],
        block: [block, 1, 1],
        shared_mem_bytes: 0,
    };
    launch!(l, format!("softmax_last_{dtype}"), cfg; x, out, rows32, cols32)
}
