//! Wrapper for `kernels/attention.cu` (plain path, any dtype) and `kernels/attention_mma.cu`
//! (tensor cores, f16, sm_80+): tiled attention with an online softmax.

use super::{launch, u32_arg, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::{LaunchCfg, Launcher};
use crate::engine::op::AttnGeom;

/// Largest head size the kernels hold in registers / shared memory.
pub(crate) const MAX_HEAD_DIM: usize = 160;
/// Queries per block of the plain kernel (`AT_BQ`).
const PLAIN_BQ: usize = 8;
/// Queries per block of the tensor-core kernel (`AM_BQ`).
const MMA_BQ: usize = 64;
/// Threads per block of both kernels (4 warps; the kernels' shared arrays assume it).
const BLOCK: u32 = 128;

/// `out = softmax(scale · q kᵀ [causal]) v` for `q [bh, lq, d]`, `k`/`v [bh, lk, d]` (row-major,
/// `d ≤` [`MAX_HEAD_DIM`]). With `tensor_cores` (the device is sm_80 or newer)
/// and f16 data it runs `attention_mma_f16`, otherwise `attention_{dtype}`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    l: &dyn Launcher,
    dtype: DType,
    q: u64,
    k: u64,
    v: u64,
    out: u64,
    a: AttnGeom,
    tensor_cores: bool,
) -> Result<(), CudaError> {
    if a.bh == 0 || a.lq == 0 || a.d == 0 {
        return Ok(());
    }
    if a.d > MAX_HEAD_DIM {
        return Err(unsupported(
            "attention",
            format!("head size {} > {MAX_HEAD_DIM}", a.d),
        ));
    }
    if a.bh > 65_535 {
        return Err(unsupported(
            "attention",
            format!("{} batch×heads exceed the grid's y limit 65535", a.bh),
        ));
    }
    let (lq, lk, d) = (
        u32_arg("attention", "lq", a.lq)?,
        u32_arg("attention", "lk", a.lk)?,
        a.d as u32,
    );
    // The kernels index a head's rows in 64 bits but positions in 32: bh · lq · d must fit u64
    // (it does, it is allocated) and lq + tile must not wrap.
    u32_arg("attention", "lq + tile", a.lq + MMA_BQ)?;
    u32_arg("attention", "lk + tile", a.lk + MMA_BQ)?;
    let (kernel, bq) = if tensor_cores && dtype == DType::F16 {
        ("attention_mma_f16".to_string(), MMA_BQ)
    } else {
        (format!("attention_{dtype}"), PLAIN_BQ)
    };
    let cfg = LaunchCfg {
        grid: [a.lq.div_ceil(bq) as u32, a.bh as u32, 1],
        block: [BLOCK, 1, 1],
        shared_mem_bytes: 0,
    };
    launch!(l, kernel, cfg; q, k, v, out, lq, lk, d, a.scale, a.causal as i32)
}
