//! Convolutions of bf16 activations with bf16 products on AVX-512 BF16, for the geometries the
//! Winograd path leaves (1×1, strided, 3×3 over fewer than 32×32 outputs, fewer than 16 output
//! channels): the patch matrix is written straight into the bf16 GEMM's packed B panels from
//! the bf16 input, and the output is rounded to bf16 as it leaves the product.
//!
//! Why: the general path widens the whole input to f32, writes an f32 patch matrix (9 values a
//! position per input channel: 24 MiB for SD's 1280-channel 16×16 layers at batch 2), packs
//! that again, multiplies into an f32 output and narrows it in a further pass. Measured on the
//! SD 1.5 VAE at 512×512 (2 cores): its 1×1 shortcut 256 → 128 ran at 65 GFLOP/s that way.
//!
//! The products, their order (the weight's k-blocks over the same packed panels, the bias
//! first) and the single rounding at the end are the general path's, so the results are the
//! same bit for bit (tested).

use half::bf16;
use rayon::prelude::*;

use super::bf16gemm::{Operand, PACKED_NR, bf16_bits, bf16_native, sgemm_bf16_weight};
use super::conv::{Conv2dGeom, im2col_row};
use super::gemm::{Mat, Par};
use super::storage::CpuSlice;
use super::winograd::output_planes;

/// Packed patch panels held at once, in u32 (32 MiB): SD's deepest 3×3 layer at 16×16 and
/// batch 2 (2560 → 1280, k = 23040) fits whole, so its weight is read once; wider images are
/// done a block of columns at a time.
const PACKED_MAX: usize = 1 << 23;

/// The f32 product of a block held at once, in elements (32 MiB).
const PRODUCT_MAX: usize = 1 << 23;

/// A residual added before the rounding, in the precision it is stored in.
#[derive(Clone, Copy)]
enum Residual<'a> {
    None,
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

/// NCHW conv of bf16 `x [n, c, h, w]` by `weight [o, c·kh·kw]`, plus `bias [o]` and `residual
/// [n, o, ho, wo]` (in that order, in f32), rounded to bf16: `[n, o, ho, wo]`. `None`,
/// computing nothing, where the AVX-512 BF16 path does not run.
pub(crate) fn conv2d(
    x: &[bf16],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<CpuSlice<'_>>,
    g: Conv2dGeom,
) -> Option<Vec<bf16>> {
    conv2d_blocks(x, weight, bias, residual, g, PACKED_MAX)
}

/// [`conv2d`] with at most `packed_max` u32 of patch panels per block of output columns (a
/// parameter so the tests can split small images into several blocks).
fn conv2d_blocks(
    x: &[bf16],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    residual: Option<CpuSlice<'_>>,
    g: Conv2dGeom,
    packed_max: usize,
) -> Option<Vec<bf16>> {
    if !bf16_native() {
        return None;
    }
    let (k, p) = (g.c * g.kh * g.kw, g.ho * g.wo);
    let mut out = vec![bf16::ZERO; g.n * g.o * p];
    if out.is_empty() {
        return Some(out);
    }
    // A stored bf16 weight is packed from its bits; any other (or an odd k) as an f32 view.
    let widened;
    let lhs = match weight {
        CpuSlice::BF16(w) if k % 2 == 0 => Operand::Bf16(w),
        other => {
            widened = other.to_f32();
            Operand::View(Mat::rows(&widened, k))
        }
    };
    let widened_res;
    let res = match residual {
        None => Residual::None,
        Some(CpuSlice::F32(r)) => Residual::F32(r),
        Some(CpuSlice::BF16(r)) => Residual::Bf16(r),
        Some(other) => {
            widened_res = other.to_f32();
            Residual::F32(&widened_res)
        }
    };
    // Output columns are every image's positions side by side, in blocks of whole panels.
    let kp = k.div_ceil(2);
    let total = g.n * p;
    let by_packed = packed_max / (kp * PACKED_NR);
    let by_product = PRODUCT_MAX / (g.o * PACKED_NR);
    let block =
        (by_packed.min(by_product).max(1) * PACKED_NR).min(total.next_multiple_of(PACKED_NR));
    let mut panels = vec![0u32; block.div_ceil(PACKED_NR) * kp * PACKED_NR];
    let mut product = vec![0f32; g.o * block];
    let mut planes = output_planes(&mut out, &g);
    let x: &[u16] = bytemuck::cast_slice(x);
    for c0 in (0..total).step_by(block) {
        let cb = block.min(total - c0);
        let panels = &mut panels[..cb.div_ceil(PACKED_NR) * kp * PACKED_NR];
        pack_patches(x, &g, c0, cb, panels);
        let product = &mut product[..g.o * cb];
        // The bias first and the products added to it, as the general path sums.
        if let Some(b) = bias {
            for (row, &bo) in product.chunks_mut(cb).zip(b) {
                row.fill(bo);
            }
        }
        let rhs = Operand::Packed(panels);
        let acc = bias.is_some();
        let done = sgemm_bf16_weight(g.o, cb, k, lhs, rhs, product, cb, acc, Par::Auto);
        assert!(done, "the native bf16 path takes every operand given here");
        finish(product, res, &g, c0, cb, &mut planes);
    }
    drop(planes);
    Some(out)
}

/// Writes the patch matrix's columns `c0..c0 + cb` (positions numbered across the batch) as B
/// panels: panel j holds columns 64j.. as `[pair of k rows][column]`, each u32 the bf16 of row
/// 2p (low half) and row 2p + 1 (high half), zero past k and past the block. One task a panel.
fn pack_patches(x: &[u16], g: &Conv2dGeom, c0: usize, cb: usize, panels: &mut [u32]) {
    let (k, p, image_len) = (g.c * g.kh * g.kw, g.ho * g.wo, g.c * g.h * g.w);
    let kp = k.div_ceil(2);
    let fill = |(j, panel): (usize, &mut [u32])| {
        let first = c0 + j * PACKED_NR;
        let width = PACKED_NR.min(c0 + cb - first);
        // Row `row` of the patch matrix over this panel's columns, image by image.
        let row_into = |row: usize, dst: &mut [u16; PACKED_NR]| {
            let mut col = 0;
            while col < width {
                let (image, pos) = ((first + col) / p, (first + col) % p);
                let run = (p - pos).min(width - col);
                let xn = &x[image * image_len..][..image_len];
                im2col_row(xn, *g, row, pos, &mut dst[col..col + run]);
                col += run;
            }
        };
        // Columns past `width` are never written, so they stay zero in every pair.
        let (mut lo, mut hi) = ([0u16; PACKED_NR], [0u16; PACKED_NR]);
        for pair in 0..kp {
            row_into(2 * pair, &mut lo);
            if 2 * pair + 1 < k {
                row_into(2 * pair + 1, &mut hi);
            } else {
                hi = [0; PACKED_NR];
            }
            let dst = &mut panel[pair * PACKED_NR..][..PACKED_NR];
            for ((d, &a), &b) in dst.iter_mut().zip(&lo).zip(&hi) {
                *d = a as u32 | (b as u32) << 16;
            }
        }
    };
    panels
        .par_chunks_mut(kp * PACKED_NR)
        .enumerate()
        .for_each(fill);
}

/// Adds the residual to `product [o, cb]` (columns `c0..` across the batch) and stores it
/// rounded to bf16 into the output planes (`planes[o][image]`). One task per output channel.
fn finish(
    product: &[f32],
    res: Residual<'_>,
    g: &Conv2dGeom,
    c0: usize,
    cb: usize,
    planes: &mut [Vec<&mut [bf16]>],
) {
    let (o, p) = (g.o, g.ho * g.wo);
    planes.par_iter_mut().enumerate().for_each(|(oi, images)| {
        let row = &product[oi * cb..][..cb];
        let mut col = 0;
        while col < cb {
            let (image, pos) = ((c0 + col) / p, (c0 + col) % p);
            let run = (p - pos).min(cb - col);
            let src = &row[col..col + run];
            let dst = &mut images[image][pos..pos + run];
            let at = (image * o + oi) * p + pos;
            let narrow = |v: f32| bf16::from_bits(bf16_bits(v) as u16);
            match res {
                Residual::None => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = narrow(s)),
                Residual::F32(r) => {
                    let r = &r[at..at + run];
                    for ((d, &s), &a) in dst.iter_mut().zip(src).zip(r) {
                        *d = narrow(s + a);
                    }
                }
                Residual::Bf16(r) => {
                    let r = &r[at..at + run];
                    for ((d, &s), &a) in dst.iter_mut().zip(src).zip(r) {
                        *d = narrow(s + a.to_f32());
                    }
                }
            }
            col += run;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::conv::conv2d_im2col;
    use crate::engine::cpu::gemm::Products;
    use crate::engine::cpu::gemm_testing::values;

    fn geom(
        (n, c, h, w): (usize, usize, usize, usize),
        o: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Conv2dGeom {
        Conv2dGeom {
            n,
            c,
            h,
            w,
            o,
            kh: kernel,
            kw: kernel,
            stride,
            pad,
            ho: (h + 2 * pad - kernel) / stride + 1,
            wo: (w + 2 * pad - kernel) / stride + 1,
        }
    }

    fn to_bf16(x: &[f32]) -> Vec<bf16> {
        x.iter().map(|&v| bf16::from_f32(v)).collect()
    }

    #[test]
    fn equals_the_widened_im2col_path_bit_for_bit() {
        if !bf16_native() {
            eprintln!("note: no native bf16 path here; the packed-patch conv declines");
            let g = geom((1, 4, 8, 8), 4, 3, 1, 1);
            let none = conv2d(
                &to_bf16(&values(256, 1)),
                CpuSlice::F32(&values(144, 2)),
                None,
                None,
                g,
            );
            assert!(none.is_none());
            return;
        }
        // 1×1, strided 3×3, small 3×3 at batch 2, few output channels, an odd k (c = 3, 1×1),
        // images whose positions do not fill whole 64-column panels (7×9, panels straddle two
        // images), and blocks smaller than the batch (packed_max of a few panels).
        let cases = [
            (geom((2, 32, 16, 16), 24, 1, 1, 0), 1 << 23),
            (geom((1, 16, 17, 15), 20, 3, 2, 1), 1 << 23),
            (geom((2, 24, 8, 8), 40, 3, 1, 1), 1 << 23),
            (geom((1, 32, 20, 20), 3, 3, 1, 1), 1 << 23),
            (geom((2, 3, 9, 7), 8, 1, 1, 0), 1 << 23),
            (geom((3, 10, 7, 9), 12, 3, 1, 1), 1 << 23),
            (geom((3, 10, 7, 9), 12, 3, 1, 1), 45 * 64 * 2),
            (geom((2, 16, 16, 16), 16, 1, 1, 0), 8 * 64),
        ];
        for (g, packed_max) in cases {
            let k = g.c * g.kh * g.kw;
            let x = to_bf16(&values(g.n * g.c * g.h * g.w, 1 + g.c as u64));
            let wf = values(g.o * k, 2 + g.o as u64);
            let wb = to_bf16(&wf);
            let bias = values(g.o, 3);
            let res = to_bf16(&values(g.n * g.o * g.ho * g.wo, 4));
            let xw: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let rw: Vec<f32> = res.iter().map(|v| v.to_f32()).collect();
            for (weight, bias, residual) in [
                (
                    CpuSlice::BF16(&wb),
                    Some(&bias[..]),
                    Some(CpuSlice::BF16(&res)),
                ),
                (CpuSlice::BF16(&wb), None, None),
                (
                    CpuSlice::F32(&wf),
                    Some(&bias[..]),
                    Some(CpuSlice::F32(&rw)),
                ),
            ] {
                let rf = residual.map(|r| r.to_f32());
                let want = conv2d_im2col(&xw, weight, bias, rf.as_deref(), g, Products::Bf16);
                let got = conv2d_blocks(&x, weight, bias, residual, g, packed_max).expect("native");
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(*a, bf16::from_f32(*b), "{g:?} element {i}");
                }
            }
        }
    }
}
