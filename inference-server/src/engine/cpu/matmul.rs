//! Matrix products on the CPU: batched `matmul` and `linear` (half-precision weights streamed
//! in blocks, never converted as a whole).

use half::bf16;
use rayon::prelude::*;

use super::bf16gemm::{Operand, sgemm_bf16_weight};
use super::gemm::{Mat, Par, Products, gemm_with};
use super::storage::CpuSlice;
use crate::engine::op::{LinearGeom, MatmulGeom};

/// f32 elements of converted weight rows held at once by `linear` for half-precision weights.
const LINEAR_SCRATCH: usize = 1 << 22;

/// Multiply-adds per matrix below which `matmul` parallelises over the batch instead of inside gemm.
const BATCH_PAR_BELOW: usize = 64 * 64 * 64;

/// `a [batch.., m, k] · b [batch.., k, n]` with broadcast batch dims.
pub(crate) fn matmul(a: &[f32], b: &[f32], g: &MatmulGeom, products: Products) -> Vec<f32> {
    let (m, k, n) = (g.m, g.k, g.n);
    let batch = g.batch();
    let mut out = vec![0f32; batch * m * n];
    let one = |(i, dst): (usize, &mut [f32]), par: Par| {
        let (ai, bi) = g.locate(i);
        let lhs = Mat::rows(&a[ai * m * k..(ai + 1) * m * k], k);
        let rhs = Mat::rows(&b[bi * k * n..(bi + 1) * k * n], n);
        gemm_with(products, m, n, k, lhs, rhs, dst, n, false, par);
    };
    if m * n > 0 {
        if batch > 1 && m * n * k < BATCH_PAR_BELOW {
            out.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|x| one(x, Par::Serial));
        } else {
            out.chunks_mut(m * n)
                .enumerate()
                .for_each(|x| one(x, Par::Auto));
        }
    }
    out
}

/// `rows` output rows of `n_out`, each the bias (zeros without one): what the product adds to.
fn bias_rows(rows: usize, n_out: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0f32; rows * n_out];
    if let Some(b) = bias {
        for row in out.chunks_mut(n_out.max(1)) {
            row.copy_from_slice(b);
        }
    }
    out
}

/// [`linear`] of bf16 activations with bf16 products, packed from their bits (no f32 copy of
/// `x`; the rows are read once, two bytes an element), where the AVX-512 BF16 path runs and
/// `n_in` is even; `None` elsewhere (the caller widens `x` and calls [`linear`]). The same
/// products and sums as that path.
pub(crate) fn linear_bf16_activations(
    x: &[bf16],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    g: LinearGeom,
) -> Option<Vec<f32>> {
    let (rows, n_in, n_out) = (g.rows, g.n_in, g.n_out);
    with_weight_operand(weight, n_in, |rhs| {
        linear_bf16_general(x, rhs, bias, (rows, n_in, n_out))
    })
}

/// A linear layer of bf16 activations with bf16 products, the bias and the rounding to bf16
/// applied as each tile leaves the kernel (`bf16gemm::linear_bf16_out`: no f32 output) where
/// that path runs, else `None` (the caller takes [`linear_bf16_activations`]). Results may
/// differ from that path's by one bf16 rounding step (the bias is added after the sum, not
/// before it).
pub(crate) fn linear_bf16_out(
    x: &[bf16],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    g: LinearGeom,
) -> Option<Vec<bf16>> {
    // With `g.geglu`, the gate is applied in the same epilogue (`[rows, n_out / 2]` out).
    if !matches!(weight, CpuSlice::BF16(_) | CpuSlice::F32(_)) {
        // A weight of another dtype would be widened per call; that path is for cast models.
        return None;
    }
    with_weight_operand(weight, g.n_in, |w| {
        super::bf16gemm::linear_bf16_out(x, w, bias, (g.rows, g.n_out, g.n_in), g.geglu)
    })
}

/// `f` of the weight `[n_out, n_in]` as the bf16 GEMMs' rhs operand (Bᵀ): a stored bf16 weight
/// packed from its bits, an f32 one as a view, another dtype widened first.
fn with_weight_operand<T>(
    weight: CpuSlice<'_>,
    n_in: usize,
    f: impl FnOnce(Operand<'_>) -> Option<T>,
) -> Option<T> {
    match weight {
        CpuSlice::BF16(w) => f(Operand::Bf16(w)),
        CpuSlice::F32(w) => f(Operand::View(Mat::rows_t(w, n_in))),
        other => {
            let widened = other.to_f32();
            f(Operand::View(Mat::rows_t(&widened, n_in)))
        }
    }
}

/// [`linear_bf16_activations`] on a prepared rhs.
fn linear_bf16_general(
    x: &[bf16],
    rhs: Operand<'_>,
    bias: Option<&[f32]>,
    (rows, n_in, n_out): (usize, usize, usize),
) -> Option<Vec<f32>> {
    let mut out = bias_rows(rows, n_out, bias);
    let lhs = Operand::Bf16(x);
    let done = sgemm_bf16_weight(
        rows,
        n_out,
        n_in,
        lhs,
        rhs,
        &mut out,
        n_out,
        bias.is_some(),
        Par::Auto,
    );
    done.then_some(out)
}

/// `x [rows, n_in] · weight [n_out, n_in]ᵀ + bias`. A half-precision weight (also mmap-backed)
/// is converted to f32 a block of rows at a time into a bounded scratch buffer. `products` is
/// chosen by the caller from the activation dtype: bf16 only under `--precision bf16`, so a
/// bf16-stored weight meeting f32 activations still computes exactly in f32.
pub(crate) fn linear(
    x: &[f32],
    weight: CpuSlice<'_>,
    bias: Option<&[f32]>,
    g: LinearGeom,
    products: Products,
) -> Vec<f32> {
    let (rows, n_in, n_out) = (g.rows, g.n_in, g.n_out);
    let mut out = bias_rows(rows, n_out, bias);
    let acc = bias.is_some();
    let lhs = Mat::rows(x, n_in);
    match weight {
        CpuSlice::F32(w) => gemm_with(
            products,
            rows,
            n_out,
            n_in,
            lhs,
            Mat::rows_t(w, n_in),
            &mut out,
            n_out,
            acc,
            Par::Auto,
        ),
        CpuSlice::BF16(w)
            if products == Products::Bf16
                && sgemm_bf16_weight(
                    rows,
                    n_out,
                    n_in,
                    Operand::View(lhs),
                    Operand::Bf16(w),
                    &mut out,
                    n_out,
                    acc,
                    Par::Auto,
                ) => {}
        w => {
            let block = (LINEAR_SCRATCH / n_in.max(1)).clamp(16, n_out.max(16));
            let mut scratch = vec![0f32; block.min(n_out) * n_in];
            let mut o0 = 0;
            while o0 < n_out {
                let ob = block.min(n_out - o0);
                let s = &mut scratch[..ob * n_in];
                w.convert_range_par(o0 * n_in, s);
                gemm_with(
                    products,
                    rows,
                    ob,
                    n_in,
                    lhs,
                    Mat::rows_t(s, n_in),
                    &mut out[o0..],
                    n_out,
                    acc,
                    Par::Auto,
                );
                o0 += ob;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::bf16gemm::bf16_native;
    use crate::engine::cpu::gemm_testing::values;

    #[test]
    fn bf16_activations_give_the_widened_path_bit_for_bit() {
        let bf = |v: Vec<f32>| -> Vec<bf16> { v.into_iter().map(bf16::from_f32).collect() };
        // Rows beyond one MC block, an n_out beyond one NC block, and a 4-wide odd n_in case.
        for (rows, n_in, n_out) in [(700, 64, 40), (9, 320, 2100), (5, 7, 3)] {
            let g = LinearGeom {
                rows,
                n_in,
                n_out,
                geglu: false,
            };
            let x = bf(values(rows * n_in, 1));
            let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let (w, bias) = (bf(values(n_out * n_in, 2)), values(n_out, 3));
            for b in [None, Some(&bias[..])] {
                let got = linear_bf16_activations(&x, CpuSlice::BF16(&w), b, g);
                if !bf16_native() || n_in % 2 == 1 {
                    assert!(
                        got.is_none(),
                        "declined without native bf16 or with odd n_in"
                    );
                    continue;
                }
                let got = got.expect("native");
                let want = linear(&wide, CpuSlice::BF16(&w), b, g, Products::Bf16);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{:?} bias={}", (rows, n_in, n_out), b.is_some());
            }
        }
    }
}
