//! Wrapper for `kernels/conv_igemm.cu`: NCHW convolution as one implicit-GEMM launch with the
//! bias and the residual add fused into its epilogue (no im2col buffer, no extra passes), on
//! CUDA cores for every dtype or on tensor cores (`mma.sync`, f16, sm_80+).

use super::{launch, unsupported};
use crate::engine::DType;
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::{LaunchCfg, Launcher};
use crate::engine::op::Conv2dGeom;

/// Output channels per block tile (the GEMM's M), both kernels (`CI_BM`).
pub(crate) const TILE_M: usize = 64;
/// Output positions per block tile (the GEMM's N), both kernels (`CI_BN`).
pub(crate) const TILE_N: usize = 64;
/// Largest k step of the kernels (`CI_MBK`; the SIMT kernel's is 16): `K` plus it must not wrap.
const TILE_K: usize = 32;
/// Threads per block of `conv_igemm_{dtype}` (16 × 16, a 4 × 4 register tile each).
const SIMT_BLOCK: u32 = 256;
/// Threads per block of `conv_igemm_mma_f16` (4 warps, 32 × 32 of the tile each).
const MMA_BLOCK: u32 = 128;
/// Grid y and z limit (output-channel tiles, images).
const GRID_YZ_MAX: usize = 65_535;

/// One convolution's geometry as the kernels take it: the C struct `ci_geom`, passed by value
/// (12 × `u32` = 48 bytes, a multiple of 8 like every struct argument). Built and checked by
/// [`ConvIgemmGeom::new`], which is what makes every 32-bit index in the kernels safe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConvIgemmGeom {
    /// Input channels.
    pub c: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output channels (the GEMM's M).
    pub o: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Stride (both axes).
    pub stride: u32,
    /// Zero padding (all sides).
    pub pad: u32,
    /// Output height.
    pub ho: u32,
    /// Output width.
    pub wo: u32,
    /// `c · kh · kw`, the GEMM's K (the weight's row length).
    pub kdim: u32,
    /// `ho · wo`, the GEMM's N per image.
    pub spatial: u32,
}

impl ConvIgemmGeom {
    /// The kernel geometry of `g`, or `Unsupported` when the kernels' 32-bit position, channel
    /// and k indices (each plus a tile, since partial tiles compute indices past the end) or
    /// the unsigned padding test (a coordinate in the top/left padding wraps to
    /// `2³² - pad`, which must stay above `h`/`w`) would overflow.
    pub(crate) fn new(g: &Conv2dGeom) -> Result<Self, CudaError> {
        let kdim = g.c as u128 * g.kh as u128 * g.kw as u128;
        let spatial = g.ho as u128 * g.wo as u128;
        let reach = g.ho.max(g.wo) as u128 * g.stride as u128
            + g.kh.max(g.kw) as u128
            + g.pad as u128
            + g.h.max(g.w) as u128;
        let limit = u32::MAX as u128;
        if kdim + TILE_K as u128 > limit
            || spatial + TILE_N as u128 > limit
            || g.o as u128 + TILE_M as u128 > limit
            || reach > limit
        {
            return Err(unsupported(
                "conv_igemm",
                format!("{g:?} exceeds the kernel's 32-bit indices"),
            ));
        }
        // Every field is at most one of the sums checked above.
        let u = |v: usize| v as u32;
        Ok(Self {
            c: u(g.c),
            h: u(g.h),
            w: u(g.w),
            o: u(g.o),
            kh: u(g.kh),
            kw: u(g.kw),
            stride: u(g.stride),
            pad: u(g.pad),
            ho: u(g.ho),
            wo: u(g.wo),
            kdim: kdim as u32,
            spatial: spatial as u32,
        })
    }
}

/// Whether [`implicit_gemm`] takes `g` (its indices fit and the grid is within limits).
pub(crate) fn fits(g: &Conv2dGeom) -> bool {
    ConvIgemmGeom::new(g).is_ok() && g.n <= GRID_YZ_MAX && g.o.div_ceil(TILE_M) <= GRID_YZ_MAX
}

/// `out = conv2d(x, w) + bias[oc] + residual` in one launch, for `x [n, c, h, w]`,
/// `w [o, c, kh, kw]` (both `dtype`), `out [n, o, ho, wo]` (`dtype`), `bias` an f32 array of
/// `o` values and `residual` a `dtype` tensor shaped like `out` (it may be `out` itself).
///
/// With `tensor_cores` (the device is sm_80 or newer) and f16 data it runs `conv_igemm_mma_f16`
/// (tensor cores), otherwise `conv_igemm_{dtype}` (CUDA cores); both accumulate in f32 and round
/// once. No alignment beyond the element's is needed. Refuses with `Unsupported` a geometry the
/// kernels cannot index ([`ConvIgemmGeom::new`]) and more than 65,535 images or
/// 65,535 · 64 output channels (the grid's y and z limits); empty outputs launch nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn implicit_gemm(
    l: &dyn Launcher,
    dtype: DType,
    tensor_cores: bool,
    x: u64,
    w: u64,
    bias: Option<u64>,
    residual: Option<u64>,
    out: u64,
    g: Conv2dGeom,
) -> Result<(), CudaError> {
    if g.n == 0 || g.o == 0 || g.ho == 0 || g.wo == 0 {
        return Ok(());
    }
    let geom = ConvIgemmGeom::new(&g)?;
    let (tiles_m, tiles_n) = (g.o.div_ceil(TILE_M), (g.ho * g.wo).div_ceil(TILE_N));
    if g.n > GRID_YZ_MAX || tiles_m > GRID_YZ_MAX {
        return Err(unsupported(
            "conv_igemm",
            format!(
                "{} images or {} output-channel tiles exceed the grid's limit {GRID_YZ_MAX}",
                g.n, tiles_m
            ),
        ));
    }
    let (kernel, block) = if tensor_cores && dtype == DType::F16 {
        ("conv_igemm_mma_f16".to_string(), MMA_BLOCK)
    } else {
        (format!("conv_igemm_{dtype}"), SIMT_BLOCK)
    };
    let cfg = LaunchCfg {
        grid: [tiles_n as u32, tiles_m as u32, g.n as u32],
        block: [block, 1, 1],
        shared_mem_bytes: 0,
    };
    let (bias, residual) = (bias.unwrap_or(0), residual.unwrap_or(0));
    launch!(l, kernel, cfg; x, w, bias, residual, out, geom)
}
