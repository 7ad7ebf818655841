//! Wrappers for `kernels/norm.cu`: LayerNorm and GroupNorm (+ fused SiLU). Weights and biases
//! are f32 device arrays whatever the activation dtype.

use super::{launch, u32_arg, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::{LaunchCfg, Launcher};

/// Threads per norm block: enough to stream a GroupNorm group (SD: up to 40 channels × 4096
/// positions) at full bandwidth; LayerNorm rows shorter than 256 use fewer.
const NORM_BLOCK: u32 = 256;
/// Largest grid x dimension.
const MAX_GRID_X: usize = i32::MAX as usize;

/// LayerNorm over each row of `x` (`rows × c`): `(x - mean) / sqrt(var + eps) · w + b`, with
/// `w`, `b` f32 arrays of `c`. One block per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    w: u64,
    b: u64,
    rows: usize,
    c: usize,
    eps: f32,
) -> Result<(), CudaError> {
    if rows == 0 || c == 0 {
        return Ok(());
    }
    if rows > MAX_GRID_X {
        return Err(unsupported(
            "layer_norm",
            format!("{rows} rows exceed the grid"),
        ));
    }
    let c32 = u32_arg("layer_norm", "c", c)?;
    let block = (c32.next_power_of_two()).clamp(32, NORM_BLOCK);
    let cfg = LaunchCfg {
        grid: [rows as u32, 1, 1],
        block: [block, 1, 1],
        shared_mem_bytes: 0,
    };
    launch!(l, format!("layer_norm_{dtype}"), cfg; x, out, w, b, rows as u32, c32, eps)
}

/// Geometry of a GroupNorm call: `x` is `n × c × spatial`, `groups` divides `c`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupNormGeom {
    /// Samples.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Positions per channel (h · w).
    pub spatial: usize,
    /// Groups; `c % groups == 0` (checked by the engine).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Apply SiLU after the affine (the ResNet blocks' GroupNorm → SiLU, fused).
    pub silu: bool,
}

/// GroupNorm with per-channel f32 affine `w`, `b`, then SiLU when `g.silu`; one block per
/// (sample, group).
pub(crate) fn group_norm(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    w: u64,
    b: u64,
    g: GroupNormGeom,
) -> Result<(), CudaError> {
    let blocks = g.n * g.groups;
    if blocks == 0 || g.c == 0 || g.spatial == 0 {
        return Ok(());
    }
    if blocks > MAX_GRID_X || !g.c.is_multiple_of(g.groups) {
        return Err(unsupported(
            "group_norm",
            format!("{} samples × {} groups of {} channels", g.n, g.groups, g.c),
        ));
    }
    let (c32, sp32, g32) = (
        u32_arg("group_norm", "c", g.c)?,
        u32_arg("group_norm", "spatial", g.spatial)?,
        u32_arg("group_norm", "groups", g.groups)?,
    );
    let cfg = LaunchCfg {
        grid: [blocks as u32, 1, 1],
        block: [NORM_BLOCK, 1, 1],
        shared_mem_bytes: 0,
    };
    launch!(l, format!("group_norm_{dtype}"), cfg; x, out, w, b, c32, sp32, g32, g.eps, g.silu as i32)
}
