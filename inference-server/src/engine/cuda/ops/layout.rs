//! Wrappers for `kernels/layout.cu` (upsampling, padding, strided copies, concatenation, row
//! gathers) and `kernels/cast.cu` (dtype conversions). Layout kernels move elements unchanged.

use super::elementwise::{MAX_RANK, contiguous_strides, merge_dims};
use super::{cfg_1d, launch, u32_arg, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::Launcher;
use crate::engine::op::PadGeom;

/// Nearest 2× upsampling of `planes` planes of `h × w` into `planes × 2h × 2w`.
pub(crate) fn upsample_nearest2x(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<(), CudaError> {
    let n = planes * 4 * h * w;
    if n == 0 {
        return Ok(());
    }
    // The kernel computes 2h and 2w in 32 bits.
    let (h32, w32) = (
        u32_arg("upsample", "2h", 2 * h)? / 2,
        u32_arg("upsample", "2w", 2 * w)? / 2,
    );
    launch!(l, format!("upsample_nearest2x_{dtype}"), cfg_1d(n); x, out, planes as u64, h32, w32)
}

/// `planes × h × w` → `planes × (top + h + bottom) × (left + w + right)`, zeros outside, as
/// `torch.nn.functional.pad(x, (left, right, top, bottom))`.
pub(crate) fn pad2d(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    out: u64,
    p: PadGeom,
) -> Result<(), CudaError> {
    let (planes, h, w) = (p.planes, p.h, p.w);
    let (oh, ow) = (p.top + h + p.bottom, p.left + w + p.right);
    let n = planes * oh * ow;
    if n == 0 {
        return Ok(());
    }
    // The kernel adds these in 32 bits: bound the sums, not just the parts.
    u32_arg("pad2d", "padded height", oh)?;
    u32_arg("pad2d", "padded width", ow)?;
    let a = |v: usize| v as u32;
    launch!(l, format!("pad2d_{dtype}"), cfg_1d(n);
        x, out, planes as u64, a(h), a(w), a(p.left), a(p.right), a(p.top), a(p.bottom))
}

/// The kernel's `ly_strided_geom`: the view's dims (front-padded with 1s to rank 6), its source
/// element strides and offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct StridedGeom {
    n: u64,
    offset: u64,
    dims: [u32; MAX_RANK],
    strides: [u64; MAX_RANK],
}

/// Copies the view `src[offset + Σ idx_i · strides_i]` over `dims` into contiguous `out`
/// (permute, transpose, narrow). Adjacent dims the view walks contiguously are merged first,
/// so views of rank > 6 work when they merge to 6 or fewer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn strided_copy(
    l: &dyn Launcher,
    dtype: DType,
    src: u64,
    out: u64,
    offset: usize,
    dims: &[usize],
    strides: &[usize],
) -> Result<(), CudaError> {
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let contig = contiguous_strides(dims);
    let (md, ms) = merge_dims(dims, &[&contig, strides]);
    if md.len() > MAX_RANK {
        return Err(unsupported(
            "strided_copy",
            format!("view of {} non-mergeable dims (max {MAX_RANK})", md.len()),
        ));
    }
    let mut g = StridedGeom {
        n: n as u64,
        offset: offset as u64,
        dims: [1; MAX_RANK],
        ..Default::default()
    };
    let pad = MAX_RANK - md.len();
    for (i, &d) in md.iter().enumerate() {
        g.dims[pad + i] = u32_arg("strided_copy", "dim", d)?;
        g.strides[pad + i] = ms[1][i] as u64;
    }
    launch!(l, format!("strided_copy_{dtype}"), cfg_1d(n); src, out, g)
}

/// Concatenation step: `outer` rows of `len` contiguous elements from `src` into `dst`, row `o`
/// at element `dst_offset + o · dst_stride` (a part's column offset within the concatenated
/// rows of `dst_stride` elements).
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_block(
    l: &dyn Launcher,
    dtype: DType,
    src: u64,
    dst: u64,
    dst_offset: usize,
    outer: usize,
    len: usize,
    dst_stride: usize,
) -> Result<(), CudaError> {
    if outer == 0 || len == 0 {
        return Ok(());
    }
    let dst = dst + (dst_offset * dtype.size_in_bytes()) as u64;
    launch!(l, format!("copy_block_{dtype}"), cfg_1d(outer * len); src, dst, outer as u64, len as u64, dst_stride as u64)
}

/// Gathers `ids` (a device array of `n_ids` u32, each `< d`, checked by the engine) along the
/// middle axis of `src` (`outer × d × inner`) into `out` (`outer × n_ids × inner`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn index_select(
    l: &dyn Launcher,
    dtype: DType,
    src: u64,
    ids: u64,
    out: u64,
    outer: usize,
    d: usize,
    inner: usize,
    n_ids: usize,
) -> Result<(), CudaError> {
    let n = outer * n_ids * inner;
    if n == 0 {
        return Ok(());
    }
    let (d32, k32) = (
        u32_arg("index_select", "d", d)?,
        u32_arg("index_select", "ids", n_ids)?,
    );
    launch!(l, format!("index_select_{dtype}"), cfg_1d(n); src, ids, out, outer as u64, d32, inner as u64, k32)
}

/// Converts `n` elements of `from` at `x` into `to` at `y` (round to nearest even when
/// narrowing). Any pair, identity included.
pub(crate) fn cast(
    l: &dyn Launcher,
    from: DType,
    to: DType,
    x: u64,
    y: u64,
    n: usize,
) -> Result<(), CudaError> {
    if n == 0 {
        return Ok(());
    }
    launch!(l, format!("cast_{from}_{to}"), cfg_1d(n); x, y, n as u64)
}
