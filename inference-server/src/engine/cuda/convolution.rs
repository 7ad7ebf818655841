//! `conv2d` on a CUDA device: its two paths, im2col + GEMM and our implicit GEMM, and the
//! per-shape choice between them (`conv_choice.rs`). Both write the whole output, bias and
//! residual included, so either may run (and run again) for any call.

use super::conv_choice::ConvPath;
use super::device::{CudaDevice, Gemm};
use super::error::CudaError;
use super::ops::conv_igemm::{self, implicit_gemm};
use super::ops::{conv, elementwise as ew};
use super::storage::CudaStorage;
use crate::engine::DType;
use crate::engine::op::{BinaryOp, Conv2dGeom};

/// Elements of the im2col scratch per tile, at most (64 MiB in f32).
const COLS_MAX: usize = 1 << 24;

/// Output positions an im2col tile covers at least, so each GEMM stays wide.
const TILE_MIN: usize = 256;

/// One convolution's device operands: `x`, `w` and `residual` in `dtype`, `bias` in f32.
pub(super) struct ConvCall {
    /// Element type of input, weight, residual and output.
    pub dtype: DType,
    /// Input `[n, c, h, w]`.
    pub x: u64,
    /// Weight `[o, c, kh, kw]`.
    pub w: u64,
    /// f32 bias of `o` values.
    pub bias: Option<u64>,
    /// Added to the output, shaped like it.
    pub residual: Option<u64>,
    /// Output `[n, o, ho, wo]`.
    pub out: u64,
    /// Sizes.
    pub g: Conv2dGeom,
}

/// Runs `call` on the path `dev` picks for its shape (measured once per shape on a GPU).
pub(super) fn conv2d(dev: &CudaDevice, call: &ConvCall) -> Result<(), CudaError> {
    if !conv_igemm::fits(&call.g) {
        return im2col_gemm(dev, call);
    }
    let g = &call.g;
    let key = format!(
        "{} n{} c{} {}x{} o{} k{}x{} s{} p{} bias{} res{}",
        call.dtype,
        g.n,
        g.c,
        g.h,
        g.w,
        g.o,
        g.kh,
        g.kw,
        g.stride,
        g.pad,
        u8::from(call.bias.is_some()),
        u8::from(call.residual.is_some())
    );
    dev.conv_choices().run(&key, dev.rt(), |p| match p {
        ConvPath::Im2col => im2col_gemm(dev, call),
        ConvPath::Implicit => implicit_gemm(
            dev.rt(),
            call.dtype,
            dev.rt().tensor_cores(),
            call.x,
            call.w,
            call.bias,
            call.residual,
            call.out,
            call.g,
        ),
    })?;
    Ok(())
}

/// im2col tiles (bounded scratch) + one GEMM per tile (a 1×1 convolution is a GEMM on the
/// input itself), then the bias and the residual as passes over the output.
fn im2col_gemm(dev: &CudaDevice, call: &ConvCall) -> Result<(), CudaError> {
    let (g, dt, l) = (&call.g, call.dtype, dev.rt());
    let esz = dt.size_in_bytes() as u64;
    let spatial = g.ho * g.wo;
    let kdim = g.c * g.kh * g.kw;
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let tile = (COLS_MAX / kdim.max(1)).max(TILE_MIN).min(spatial).max(1);
    let cols = if pointwise {
        None
    } else {
        Some(CudaStorage::alloc(dev, kdim * tile, dt)?)
    };
    let u = |x: usize| {
        u32::try_from(x)
            .map_err(|_| CudaError::Unsupported(format!("conv2d: size {x} exceeds 32 bits")))
    };
    for img in 0..g.n {
        let x_img = call.x + (img * g.c * g.h * g.w) as u64 * esz;
        let out_img = call.out + (img * g.o * spatial) as u64 * esz;
        let mut p0 = 0;
        while p0 < spatial {
            let p = if pointwise {
                spatial
            } else {
                tile.min(spatial - p0)
            };
            let (b_ptr, ldb) = match &cols {
                None => (x_img, spatial),
                Some(cols) => {
                    let geom = conv::Im2colGeom {
                        c: u(g.c)?,
                        h: u(g.h)?,
                        w: u(g.w)?,
                        kh: u(g.kh)?,
                        kw: u(g.kw)?,
                        stride: u(g.stride)?,
                        pad: u(g.pad)?,
                        ho: u(g.ho)?,
                        wo: u(g.wo)?,
                        p0: u(p0)?,
                        p: u(p)?,
                        unused: 0,
                    };
                    conv::im2col(l, dt, x_img, cols.base(), geom)?;
                    (cols.base(), p)
                }
            };
            l.gemm(&Gemm {
                dtype: dt,
                m: g.o,
                n: p,
                k: kdim,
                a: call.w,
                lda: kdim,
                stride_a: 0,
                trans_a: false,
                b: b_ptr,
                ldb,
                stride_b: 0,
                trans_b: false,
                c: out_img + p0 as u64 * esz,
                ldc: spatial,
                stride_c: 0,
                batch: 1,
                accumulate: false,
                bias: 0,
            })?;
            p0 += p;
        }
    }
    if let Some(b) = call.bias {
        conv::add_channel_bias(l, dt, call.out, b, g.n, g.o, spatial)?;
    }
    if let Some(r) = call.residual {
        // In place: each element is read and written by the one thread that owns it.
        let n = g.n * g.o * spatial;
        let add = BinaryOp::Add.kernel_name();
        ew::binary(l, add, dt, call.out, r, call.out, &[n], &[1], &[1])?;
    }
    Ok(())
}
