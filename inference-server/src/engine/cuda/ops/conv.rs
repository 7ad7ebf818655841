//! Wrappers for `kernels/conv.cu`: im2col (conv = im2col + GEMM) and a per-channel bias add.

use super::{cfg_1d, launch, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::Launcher;

/// Geometry of one image's im2col tile; the kernel's `cv_im2col_geom`, passed by value.
/// The tile holds output positions `p0 .. p0 + p` (row-major over `ho × wo`) as the columns of
/// `cols [c·kh·kw, p]`, rows ordered `(ci, ki, kj)` like the weight's `[o, c·kh·kw]` columns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Im2colGeom {
    /// Input channels.
    pub c: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Stride (both axes).
    pub stride: u32,
    /// Zero padding (all sides).
    pub pad: u32,
    /// Output height, `(h + 2·pad - kh) / stride + 1`.
    pub ho: u32,
    /// Output width.
    pub wo: u32,
    /// First output position of the tile.
    pub p0: u32,
    /// Output positions in the tile.
    pub p: u32,
    /// Keeps the struct a multiple of 8 bytes, as the C side lays it out.
    pub unused: u32,
}

/// Fills `cols` (`c·kh·kw × g.p`) from one image `x` (`c × h × w`).
pub(crate) fn im2col(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    cols: u64,
    g: Im2colGeom,
) -> Result<(), CudaError> {
    let n = g.c as usize * g.kh as usize * g.kw as usize * g.p as usize;
    if n == 0 {
        return Ok(());
    }
    // The kernel computes positions and input coordinates in 32 bits.
    let last = g.p0 as u64 + g.p as u64;
    let reach = (g.ho.max(g.wo) as u64) * g.stride as u64 + g.kh.max(g.kw) as u64;
    if last > g.ho as u64 * g.wo as u64
        || reach >= u32::MAX as u64
        || (g.c as u64 * g.kh as u64 * g.kw as u64) > u32::MAX as u64
    {
        return Err(unsupported(
            "im2col",
            format!("tile {g:?} outside the output or the 32-bit index"),
        ));
    }
    launch!(l, format!("im2col_{dtype}"), cfg_1d(n); x, cols, g)
}

/// In place: `x[s, ch, :] += bias[ch]` for `x` as `n × c × spatial` and `bias` an f32 array.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_channel_bias(
    l: &dyn Launcher,
    dtype: DType,
    x: u64,
    bias: u64,
    n: usize,
    c: usize,
    spatial: usize,
) -> Result<(), CudaError> {
    let total = n * c * spatial;
    if total == 0 {
        return Ok(());
    }
    let c32 = super::u32_arg("add_channel_bias", "c", c)?;
    let sp32 = super::u32_arg("add_channel_bias", "spatial", spatial)?;
    launch!(l, format!("add_channel_bias_{dtype}"), cfg_1d(total); x, bias, n as u64, c32, sp32)
}
