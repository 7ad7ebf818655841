//! 2-D convolution (Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions, tiled im2col + gemm
//! for the rest) and nearest upsampling.

use half::bf16;
use rayon::prelude::*;

use super::PAR_MIN_WORK;
use super::bf16gemm::{Operand, bf16_native, sgemm_bf16_weight};
use super::gemm::{Mat, Par, Products, gemm_with};
use super::storage::CpuSlice;
pub(crate) use crate::engine::op::Conv2dGeom;

/// Target size of the im2col scratch tile, in f32 elements (8 MiB).
const COLS_MAX: usize = 1 << 21;

/// Output positions a tile covers at least (when the image has that many), however deep the
/// input: a narrower tile makes a gemm whose packed weight is reused for too few columns.
/// Bounds the tile at `k · TILE_MIN` (24 MiB for SD's deepest 3×3 conv, 2560 → 1280).
const TILE_MIN: usize = 256;

/// Batches whose images are this small (output positions per image) are convolved by one GEMM
/// over all images' columns, not one per image...
const BATCH_COLS_MAX: usize = 1024;

/// ...when their patch matrix stays below this many f32 elements (64 MiB; SD's 8×8 and 16×16
/// layers at batch 2 need up to 47 MiB).
const BATCH_PATCHES_MAX: usize = 1 << 24;

/// Half-precision weights up to this many elements (128 MiB as f32; SD's largest 3×3 conv,
/// 2560 → 1280, has 29.5M) are converted once per call; larger ones a block of rows at a time
/// per tile.
const WEIGHT_WHOLE: usize = 1 << 25;

/// Upper bound on converted half-precision weight rows held at once, in f32 elements (4 MiB).
const WEIGHT_SCRATCH: usize = 1 << 20;

/// `dst [o, p] (+)= weight [o, k] · rhs [k, p]`, `dst` rows `dst_rs` apart. A half-precision
/// weight is converted a block of rows at a time into `scratch`, never as a whole.
#[allow(clippy::too_many_arguments)]
fn weight_product(
    weight: CpuSlice<'_>,
    o: usize,
    k: usize,
    rhs: Mat<'_>,
    p: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    scratch: &mut Vec<f32>,
    products: Products,
) {
    if let CpuSlice::BF16(w) = weight
        && products == Products::Bf16
        && sgemm_bf16_weight(
            o,
            p,
            k,
            Operand::Bf16(w),
            Operand::View(rhs),
            dst,
            dst_rs,
            accumulate,
            Par::Auto,
        )
    {
        return;
    }
    if let CpuSlice::F32(w) = weight {
        gemm_with(
            products,
            o,
            p,
            k,
            Mat::rows(w, k),
            rhs,
            dst,
            dst_rs,
            accumulate,
            Par::Auto,
        );
        return;
    }
    let block = (WEIGHT_SCRATCH / k.max(1)).clamp(8, o.max(8)).min(o);
    scratch.resize(block * k, 0.0);
    let mut o0 = 0;
    while o0 < o {
        let ob = block.min(o - o0);
        let s = &mut scratch[..ob * k];
        weight.convert_range_par(o0 * k, s);
        gemm_with(
            products,
            ob,
            p,
            k,
            Mat::rows(s, k),
            rhs,
            &mut dst[o0 * dst_rs..],
            dst_rs,
            accumulate,
            Par::Auto,
        );
        o0 += ob;
    }
}

/// NCHW conv: `x [n, c, h, w]`, `weight [o, c·kh·kw]` (row-major, any dtype), optional `bias [o]`,
/// optional `residual [n, o, ho, wo]` added to the result (a ResNet block's skip connection) in
/// the same pass that writes it, in the order `(conv + bias) + residual` an unfused add gives.
/// Returns `[n, o, ho, wo]`.
pub(crate) fn conv2d(
    x: &[f32],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
    products: Products,
) -> Vec<f32> {
    if super::winograd_enabled() && super::winograd::applies(&g) {
        let weight = weight.to_f32();
        if products == Products::Bf16
            && let Some(out) = super::winograd_bf16::conv2d(x, &weight, bias, residual, g)
        {
            return out;
        }
        return super::winograd::conv2d(x, &weight, bias, residual, g, products);
    }
    conv2d_im2col(x, weight, bias, residual, g, products)
}

/// [`conv2d`] of bf16 activations with bf16 products on the AVX-512 BF16 path: input and
/// residual read as bf16 and the output written as bf16, with no f32 copy of either (at the
/// VAE's 512×512 layers each copy is 128 MiB, written, faulted in and converted back), by the
/// bf16 Winograd path where it applies and by patches packed straight from the bf16 input
/// ([`super::conv_bf16`]) elsewhere. `None` where the CPU lacks that path: the caller widens
/// the input and calls [`conv2d`]. The values are those of that path, rounded once at the end.
pub(crate) fn conv2d_bf16_activations(
    x: &[bf16],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<CpuSlice<'_>>,
    g: Conv2dGeom,
) -> Option<Vec<bf16>> {
    if !bf16_native() {
        return None;
    }
    if !(super::winograd_enabled() && super::winograd::applies(&g)) {
        return super::conv_bf16::conv2d(x, weight, bias, residual, g);
    }
    let weight = weight.to_f32();
    match residual {
        None => super::winograd_bf16::conv2d::<bf16, bf16, bf16>(x, &weight, bias, None, g),
        Some(CpuSlice::BF16(r)) => super::winograd_bf16::conv2d(x, &weight, bias, Some(r), g),
        Some(other) => {
            let r = other.to_f32();
            super::winograd_bf16::conv2d::<bf16, f32, bf16>(x, &weight, bias, Some(&r), g)
        }
    }
}

/// `dst[i] += add[i]`.
fn add_into(dst: &mut [f32], add: &[f32]) {
    for (d, &a) in dst.iter_mut().zip(add) {
        *d += a;
    }
}

/// [`conv2d`] by im2col tiles and GEMM, for every geometry.
pub(crate) fn conv2d_im2col(
    x: &[f32],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
    products: Products,
) -> Vec<f32> {
    let spatial_out = g.ho * g.wo;
    let k = g.c * g.kh * g.kw;
    let mut out = vec![0f32; g.n * g.o * spatial_out];
    if out.is_empty() {
        return out;
    }
    let whole: Vec<f32>;
    let weight = match weight {
        CpuSlice::F32(_) => weight,
        // bf16 products pack a bf16 weight from its bits (see `weight_product`).
        CpuSlice::BF16(_) if products == Products::Bf16 && bf16_native() && k.is_multiple_of(2) => {
            weight
        }
        _ if g.o * k <= WEIGHT_WHOLE => {
            whole = weight.to_f32().into_owned();
            CpuSlice::F32(&whole)
        }
        _ => weight,
    };
    let mut scratch = Vec::new();
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let batch_cols = g.n * spatial_out;
    if g.n > 1 && batch_cols <= BATCH_COLS_MAX && k * batch_cols <= BATCH_PATCHES_MAX {
        conv_batched(
            x,
            weight,
            bias,
            residual,
            g,
            products,
            &mut out,
            &mut scratch,
        );
        return out;
    }
    // The per-image GEMMs add to the bias (the batched path fills its own product buffer).
    if let Some(b) = bias {
        for plane in out.chunks_mut(spatial_out).enumerate() {
            plane.1.fill(b[plane.0 % g.o]);
        }
    }
    let accumulate = bias.is_some();
    let tile = (COLS_MAX / k.max(1)).max(TILE_MIN).min(spatial_out);
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![0f32; k * tile]
    };
    for (image, (xn, on)) in x
        .chunks(g.c * g.h * g.w)
        .zip(out.chunks_mut(g.o * spatial_out))
        .enumerate()
    {
        // This image's residual, added to each block of outputs right after its GEMM wrote it
        // (still in cache).
        let res_n = residual.map(|r| &r[image * g.o * spatial_out..][..g.o * spatial_out]);
        if pointwise {
            let rhs = Mat::rows(xn, spatial_out);
            weight_product(
                weight,
                g.o,
                k,
                rhs,
                spatial_out,
                on,
                spatial_out,
                accumulate,
                &mut scratch,
                products,
            );
            if let Some(r) = res_n {
                add_into(on, r);
            }
            continue;
        }
        let mut p0 = 0;
        while p0 < spatial_out {
            let p = tile.min(spatial_out - p0);
            let cols = &mut cols[..k * p];
            im2col(xn, g, p0, p, cols);
            let rhs = Mat::rows(cols, p);
            weight_product(
                weight,
                g.o,
                k,
                rhs,
                p,
                &mut on[p0..],
                spatial_out,
                accumulate,
                &mut scratch,
                products,
            );
            if let Some(r) = res_n {
                for (dst, add) in on.chunks_mut(spatial_out).zip(r.chunks(spatial_out)) {
                    add_into(&mut dst[p0..p0 + p], &add[p0..p0 + p]);
                }
            }
            p0 += p;
        }
    }
    out
}

/// [`conv2d_im2col`] for a batch of small images: the patches of all images side by side
/// (`cols [k, n·p]`, image-major columns), one GEMM into `[o, n·p]`, then each image's block
/// moved to `out [n, o, p]` with the bias. Per image, a GEMM this narrow (64 columns for SD's
/// 8×8 layers) streams the whole weight once per image and keeps the kernel's panels half
/// empty; batched, the weight is read once and the product is n times wider.
#[allow(clippy::too_many_arguments)]
fn conv_batched(
    x: &[f32],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
    products: Products,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let p = g.ho * g.wo;
    let (k, cols_n) = (g.c * g.kh * g.kw, g.n * p);
    let mut cols = vec![0f32; k * cols_n];
    let mut image = vec![0f32; k * p];
    for (i, xn) in x.chunks(g.c * g.h * g.w).enumerate() {
        im2col(xn, g, 0, p, &mut image);
        for (dst, src) in cols.chunks_mut(cols_n).zip(image.chunks(p)) {
            dst[i * p..(i + 1) * p].copy_from_slice(src);
        }
    }
    // The bias goes in first and the product is added to it, as in the per-image path, so
    // each output sums in the same order either way.
    let mut prod = vec![0f32; g.o * cols_n];
    if let Some(b) = bias {
        for (row, &bo) in prod.chunks_mut(cols_n).zip(b) {
            row.fill(bo);
        }
    }
    let rhs = Mat::rows(&cols, cols_n);
    let acc = bias.is_some();
    weight_product(
        weight, g.o, k, rhs, cols_n, &mut prod, cols_n, acc, scratch, products,
    );
    for (plane, dst) in out.chunks_mut(p).enumerate() {
        let (i, o) = (plane / g.o, plane % g.o);
        dst.copy_from_slice(&prod[o * cols_n + i * p..][..p]);
        if let Some(r) = residual {
            add_into(dst, &r[plane * p..][..p]);
        }
    }
}

/// Fills `cols [c·kh·kw, p]` with the input patches for output positions `p0..p0 + p`, one
/// [`im2col_row`] per row.
fn im2col(xn: &[f32], g: Conv2dGeom, p0: usize, p: usize, cols: &mut [f32]) {
    let fill_row = |(row, dst): (usize, &mut [f32])| im2col_row(xn, g, row, p0, dst);
    if cols.len() >= PAR_MIN_WORK {
        cols.par_chunks_mut(p).enumerate().for_each(fill_row);
    } else {
        cols.chunks_mut(p).enumerate().for_each(fill_row);
    }
}

/// Row `row` (input channel, kernel row, kernel column) of one image's patch matrix, for output
/// positions `p0..p0 + dst.len()`: the input values that tap multiplies, zero in the padding,
/// an output row segment at a time (a plain copy when the stride is 1). `xn` is the image
/// `[c, h, w]`, in any element type (f32, or bf16 bits).
pub(super) fn im2col_row<T: Copy + Default>(
    xn: &[T],
    g: Conv2dGeom,
    row: usize,
    p0: usize,
    dst: &mut [T],
) {
    let p = dst.len();
    let ci = row / (g.kh * g.kw);
    let ki = (row / g.kw) % g.kh;
    let kj = row % g.kw;
    let plane = &xn[ci * g.h * g.w..(ci + 1) * g.h * g.w];
    // Output columns whose input column `ox * stride + kj - pad` lies inside the image.
    let ox_lo = g.pad.saturating_sub(kj).div_ceil(g.stride).min(g.wo);
    let ox_hi = (g.w + g.pad)
        .saturating_sub(kj)
        .div_ceil(g.stride)
        .clamp(ox_lo, g.wo);
    let mut j = 0;
    while j < p {
        let pos = p0 + j;
        let (oy, ox0) = (pos / g.wo, pos % g.wo);
        let run = (g.wo - ox0).min(p - j);
        let seg = &mut dst[j..j + run];
        let iy = (oy * g.stride + ki) as isize - g.pad as isize;
        if iy < 0 || iy as usize >= g.h {
            seg.fill(T::default());
        } else {
            let src = &plane[iy as usize * g.w..][..g.w];
            let (lo, hi) = (ox_lo.clamp(ox0, ox0 + run), ox_hi.clamp(ox0, ox0 + run));
            seg[..lo - ox0].fill(T::default());
            seg[hi - ox0..].fill(T::default());
            let inside = &mut seg[lo - ox0..hi - ox0];
            if !inside.is_empty() {
                let ix0 = lo * g.stride + kj - g.pad;
                if g.stride == 1 {
                    inside.copy_from_slice(&src[ix0..ix0 + inside.len()]);
                } else {
                    for (t, d) in inside.iter_mut().enumerate() {
                        *d = src[ix0 + t * g.stride];
                    }
                }
            }
        }
        j += run;
    }
}

/// Nearest-neighbour 2× upsampling of `planes` planes of `h × w`.
pub(crate) fn upsample_nearest2x<T: Copy + Default + Send + Sync>(
    x: &[T],
    h: usize,
    w: usize,
) -> Vec<T> {
    let row_len = 2 * w;
    let mut out = vec![T::default(); x.len() * 4];
    if out.is_empty() {
        return out;
    }
    let run = |(r, dst): (usize, &mut [T])| {
        let (plane, oy) = (r / (2 * h), r % (2 * h));
        let src = &x[(plane * h + oy / 2) * w..][..w];
        for (j, d) in dst.iter_mut().enumerate() {
            *d = src[j / 2];
        }
    };
    if out.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(row_len).enumerate().for_each(run);
    } else {
        out.chunks_mut(row_len).enumerate().for_each(run);
    }
    out
}
