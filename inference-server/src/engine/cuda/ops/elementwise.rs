//! Wrappers for `kernels/elementwise.cu`: unary maps, affine/clamp, broadcast binary ops, GEGLU.
//! Every kernel reads and writes `dtype` and computes in f32.

use super::{cfg_1d, launch, u32_arg, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::Launcher;

/// Highest output rank the broadcast kernel indexes (after merging dims).
pub(crate) const MAX_RANK: usize = 6;

/// `y = op(x)` over `n` elements; `op` is a unary kernel base name: `silu`, `gelu` (exact, via
/// erf), `gelu_quick`, `sin`, `cos`, `exp` or `sqrt`. `y` may equal `x`.
pub(crate) fn unary(
    l: &dyn Launcher,
    op: &str,
    dtype: DType,
    x: u64,
    y: u64,
    n: usize,
) -> Result<(), CudaError> {
    if n == 0 {
        return Ok(());
    }
    launch!(l, format!("{op}_{dtype}"), cfg_1d(n); x, y, n as u64)
}

/// `y = x · mul + add` over `n` elements.
pub(crate) fn affine(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    y: u64,
    n: usize,
    mul: f32,
    add: f32,
) -> Result<(), CudaError> {
    if n == 0 {
        return Ok(());
    }
    launch!(l, format!("affine_{dtype}"), cfg_1d(n); x, y, n as u64, mul, add)
}

/// `y = min(max(x, min), max)` over `n` elements.
pub(crate) fn clamp(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    y: u64,
    n: usize,
    min: f32,
    max: f32,
) -> Result<(), CudaError> {
    if n == 0 {
        return Ok(());
    }
    launch!(l, format!("clamp_{dtype}"), cfg_1d(n); x, y, n as u64, min, max)
}

/// The kernel's `sd_bcast_geom`: output dims (front-padded with 1s to rank 6) and each input's
/// element strides (0 on broadcast dims), passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BcastGeom {
    n: u64,
    dims: [u32; MAX_RANK],
    a_strides: [u64; MAX_RANK],
    b_strides: [u64; MAX_RANK],
}

/// Row-major strides of `dims`.
pub(crate) fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Drops size-1 dims and merges neighbours that every stride list walks contiguously, so a
/// rank-8 broadcast of a per-channel bias still fits the kernel's rank 6. Returns the merged
/// dims and each list's merged strides.
pub(crate) fn merge_dims(dims: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut md: Vec<usize> = Vec::new();
    let mut ms: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (i, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        // Dim i folds into the previous kept dim p when, for every list, stride[p] = stride[i] * d.
        let foldable = !md.is_empty()
            && strides
                .iter()
                .zip(&ms)
                .all(|(s, m)| m[m.len() - 1] == s[i] * d);
        if foldable {
            *md.last_mut().expect("non-empty") *= d;
            for (s, m) in strides.iter().zip(ms.iter_mut()) {
                *m.last_mut().expect("non-empty") = s[i];
            }
        } else {
            md.push(d);
            for (s, m) in strides.iter().zip(ms.iter_mut()) {
                m.push(s[i]);
            }
        }
    }
    (md, ms)
}

/// `out = op(a, b)` over the broadcast output `dims` (row-major, contiguous `out`), `op` one of
/// `add`, `sub`, `mul`, `div`; `a_strides`/`b_strides` are the inputs' element strides with 0 on
/// broadcast dims. Uses the `{op}_contig` fast path when both inputs are contiguous with the
/// output's shape; otherwise merges dims and fails if more than 6 remain.
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary(
    l: &dyn Launcher,
    op: &str,
    dtype: DType,
    a: u64,
    b: u64,
    out: u64,
    dims: &[usize],
    a_strides: &[usize],
    b_strides: &[usize],
) -> Result<(), CudaError> {
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let contig = contiguous_strides(dims);
    let is_contig = |s: &[usize]| {
        dims.iter()
            .zip(s)
            .zip(&contig)
            .all(|((&d, &s), &c)| d == 1 || s == c)
    };
    if is_contig(a_strides) && is_contig(b_strides) {
        return launch!(l, format!("{op}_contig_{dtype}"), cfg_1d(n); a, b, out, n as u64);
    }
    let (md, ms) = merge_dims(dims, &[&contig, a_strides, b_strides]);
    if md.len() > MAX_RANK {
        return Err(unsupported(
            op,
            format!(
                "broadcast over {} non-mergeable dims (max {MAX_RANK})",
                md.len()
            ),
        ));
    }
    let mut g = BcastGeom {
        n: n as u64,
        dims: [1; MAX_RANK],
        ..Default::default()
    };
    let pad = MAX_RANK - md.len();
    for (i, &d) in md.iter().enumerate() {
        g.dims[pad + i] = u32_arg(op, "dim", d)?;
        g.a_strides[pad + i] = ms[1][i] as u64;
        g.b_strides[pad + i] = ms[2][i] as u64;
    }
    launch!(l, format!("{op}_{dtype}"), cfg_1d(n); a, b, out, g)
}

/// GEGLU: `x` is `rows × 2·half`, `out[r, j] = x[r, j] · gelu(x[r, half + j])`, `rows × half`.
pub(crate) fn geglu(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    rows: usize,
    half: usize,
) -> Result<(), CudaError> {
    if rows == 0 || half == 0 {
        return Ok(());
    }
    let half32 = u32_arg("geglu", "half", half)?;
    launch!(l, format!("geglu_{dtype}"), cfg_1d(rows * half); x, out, rows as u64, half32)
}

/// Sinusoidal timestep embeddings: `t` holds `count` f32 timesteps, `out` gets
/// `[count, dim]` f32 (see `sinusoid.rs` of the CPU backend for the definition and
/// `frequency_constants` for `log_max` and `denom`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn timestep_embedding(
    l: &dyn Launcher,
    t: u64,
    out: u64,
    count: usize,
    dim: usize,
    log_max: f32,
    denom: f32,
    flip_sin_to_cos: bool,
) -> Result<(), CudaError> {
    if count == 0 || dim == 0 {
        return Ok(());
    }
    let count32 = u32_arg("timestep_embedding", "timesteps", count)?;
    let dim32 = u32_arg("timestep_embedding", "dim", dim)?;
    let flip = i32::from(flip_sin_to_cos);
    launch!(l, "timestep_embedding_f32", cfg_1d(count * dim); t, out, count32, dim32, log_max, denom, flip)
}
