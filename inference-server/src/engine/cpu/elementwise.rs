//! Element-wise kernels: unary maps, broadcast binary ops, softmax and reductions.

use half::bf16;
use rayon::prelude::*;

use super::PAR_MIN_WORK;
/// The scalar activations (the vector kernels' own code), for tests that map one element.
#[cfg(test)]
pub(crate) use super::fastmath::{gelu_quick1 as gelu_quick, gelu1 as gelu, silu1 as silu};

/// `run(dst chunk, src chunk)` over `src`, in parallel chunks when large; returns `dst`.
fn chunked_map(src: &[f32], run: impl Fn(&mut [f32], &[f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    if src.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(PAR_MIN_WORK / 2)
            .zip(src.par_chunks(PAR_MIN_WORK / 2))
            .for_each(|(d, s)| run(d, s));
    } else {
        run(&mut out, src);
    }
    out
}

/// `act` applied to every element at vector width ([`super::fastmath::activate`]), in parallel
/// chunks when large.
pub(crate) fn activation_map(src: &[f32], act: super::fastmath::Activation) -> Vec<f32> {
    chunked_map(src, |d, s| super::fastmath::activate(d, s, act))
}

/// `f` applied to every element, in parallel chunks when large.
pub(crate) fn unary_map(src: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    chunked_map(src, |d, s| {
        for (o, &x) in d.iter_mut().zip(s) {
            *o = f(x);
        }
    })
}

/// `op(lhs, rhs)` over the broadcast shape `dims`; `ls`/`rs` are the inputs' strides with 0 on
/// broadcast dims. `dims` has rank ≥ 1.
pub(crate) fn binary_broadcast(
    lhs: &[f32],
    rhs: &[f32],
    dims: &[usize],
    ls: &[usize],
    rs: &[usize],
    op: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let total: usize = dims.iter().product();
    let mut out = vec![0f32; total];
    if total == 0 {
        return out;
    }
    let rank = dims.len();
    let row_len = dims[rank - 1];
    let (l_last, r_last) = (ls[rank - 1], rs[rank - 1]);
    let row = |r: usize, dst: &mut [f32]| {
        let (mut rem, mut lb, mut rb) = (r, 0, 0);
        for i in (0..rank - 1).rev() {
            let idx = rem % dims[i];
            rem /= dims[i];
            lb += idx * ls[i];
            rb += idx * rs[i];
        }
        match (l_last, r_last) {
            (1, 1) => {
                for ((o, &a), &b) in dst
                    .iter_mut()
                    .zip(&lhs[lb..lb + row_len])
                    .zip(&rhs[rb..rb + row_len])
                {
                    *o = op(a, b);
                }
            }
            (1, 0) => {
                let b = rhs[rb];
                for (o, &a) in dst.iter_mut().zip(&lhs[lb..lb + row_len]) {
                    *o = op(a, b);
                }
            }
            (0, 1) => {
                let a = lhs[lb];
                for (o, &b) in dst.iter_mut().zip(&rhs[rb..rb + row_len]) {
                    *o = op(a, b);
                }
            }
            _ => {
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = op(lhs[lb + j * l_last], rhs[rb + j * r_last]);
                }
            }
        }
    };
    let rows_per_chunk = (PAR_MIN_WORK / row_len).max(1);
    if total >= PAR_MIN_WORK {
        out.par_chunks_mut(rows_per_chunk * row_len)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (r, dst) in chunk.chunks_mut(row_len).enumerate() {
                    row(ci * rows_per_chunk + r, dst);
                }
            });
    } else {
        for (r, dst) in out.chunks_mut(row_len).enumerate() {
            row(r, dst);
        }
    }
    out
}

/// Applies `f` to each row of length `row_len` (`src` rows → `out` rows), in parallel when large.
pub(crate) fn map_rows(
    src: &[f32],
    row_len: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    if row_len == 0 {
        return out;
    }
    let rows_per_chunk = (PAR_MIN_WORK / row_len).max(1);
    let chunk = rows_per_chunk * row_len;
    let run = |(d, s): (&mut [f32], &[f32])| {
        for (dr, sr) in d.chunks_mut(row_len).zip(s.chunks(row_len)) {
            f(sr, dr);
        }
    };
    if src.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(run);
    } else {
        run((&mut out, src));
    }
    out
}

/// Numerically stable softmax of one row.
pub(crate) fn softmax_row(src: &[f32], dst: &mut [f32]) {
    let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (d, &x) in dst.iter_mut().zip(src) {
        let e = (x - max).exp();
        *d = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

/// Sums the middle axis of an `outer × d × inner` array, accumulating in f64.
pub(crate) fn sum_middle(
    src: &[f32],
    outer: usize,
    d: usize,
    inner: usize,
    scale: f64,
) -> Vec<f32> {
    let mut out = vec![0f32; outer * inner];
    let mut acc = vec![0f64; inner];
    for o in 0..outer {
        acc.fill(0.0);
        for k in 0..d {
            let base = (o * d + k) * inner;
            for (a, &x) in acc.iter_mut().zip(&src[base..base + inner]) {
                *a += x as f64;
            }
        }
        for (dst, a) in out[o * inner..(o + 1) * inner].iter_mut().zip(&acc) {
            *dst = (a * scale) as f32;
        }
    }
    out
}

/// GEGLU of whole rows: `dst` rows of `half` from `src` rows of `2 · half`.
pub(crate) fn geglu_rows(dst: &mut [f32], src: &[f32], half: usize) {
    for (dr, sr) in dst.chunks_mut(half).zip(src.chunks(2 * half)) {
        let (a, gate) = sr.split_at(half);
        super::fastmath::geglu(dr, a, gate);
    }
}

/// `f(rows as f32, output rows)` over the bf16 rows of `src` (`in_row` elements each, giving
/// `out_row` each), a chunk of rows at a time through f32 scratch and narrowed back to bf16
/// (nearest-even, as `half`): the f32 kernel's results, rounded once, with no f32 copy of the
/// whole input or output (`--precision bf16` activations are up to 42 MiB a tensor in the UNet,
/// and each f32 copy was written, page-faulted and converted).
pub(crate) fn map_rows_bf16(
    src: &[bf16],
    in_row: usize,
    out_row: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<bf16> {
    let rows = src.len().checked_div(in_row).unwrap_or(0);
    let mut out = vec![bf16::ZERO; rows * out_row];
    if rows == 0 || out_row == 0 {
        return out;
    }
    let per_chunk = (PAR_MIN_WORK / in_row.max(out_row)).max(1);
    let run = |(wide, result): &mut (Vec<f32>, Vec<f32>), (d, s): (&mut [bf16], &[bf16])| {
        wide.resize(s.len(), 0.0);
        result.resize(d.len(), 0.0);
        super::fastmath::from_bf16(wide, s);
        f(wide, result);
        super::fastmath::to_bf16(d, result);
    };
    out.par_chunks_mut(per_chunk * out_row)
        .zip(src.par_chunks(per_chunk * in_row))
        .for_each_init(|| (Vec::new(), Vec::new()), run);
    out
}

/// `op(a, b)` element by element over two bf16 arrays of one length, a chunk at a time through
/// f32 scratch, narrowed once (the f32 op's result rounded; no f32 copies of the operands or
/// the result).
pub(crate) fn zip_bf16(a: &[bf16], b: &[bf16], op: impl Fn(f32, f32) -> f32 + Sync) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; a.len().min(b.len())];
    let chunk = PAR_MIN_WORK / 2;
    let run = |(x, y): &mut (Vec<f32>, Vec<f32>),
               ((d, a), b): ((&mut [bf16], &[bf16]), &[bf16])| {
        x.resize(d.len(), 0.0);
        y.resize(d.len(), 0.0);
        super::fastmath::from_bf16(x, a);
        super::fastmath::from_bf16(y, b);
        for (xi, &yi) in x.iter_mut().zip(y.iter()) {
            *xi = op(*xi, yi);
        }
        super::fastmath::to_bf16(d, x);
    };
    out.par_chunks_mut(chunk)
        .zip(a.par_chunks(chunk))
        .zip(b.par_chunks(chunk))
        .for_each_init(|| (Vec::new(), Vec::new()), run);
    out
}

/// Whether `strides` are the row-major strides of `dims` (an operand read in order).
pub(crate) fn is_row_major(dims: &[usize], strides: &[usize]) -> bool {
    let mut expect = 1;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    dims.len() == strides.len()
}

/// GEGLU over rows of `2 · half`: `row[..half] · gelu(row[half..])`.
pub(crate) fn geglu(src: &[f32], half: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len() / 2];
    if half == 0 {
        return out;
    }
    let rows_per_chunk = (PAR_MIN_WORK / half).max(1);
    let run = |(d, s): (&mut [f32], &[f32])| geglu_rows(d, s, half);
    if out.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(rows_per_chunk * half)
            .zip(src.par_chunks(rows_per_chunk * 2 * half))
            .for_each(run);
    } else {
        run((&mut out, src));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::gemm_testing::values;

    #[test]
    fn bf16_row_maps_are_the_f32_kernels_rounded_once() {
        let narrow =
            |v: &[f32]| -> Vec<u16> { v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect() };
        // Enough rows for several parallel chunks, and a ragged last chunk.
        let (half, rows) = (96, 1000);
        let x: Vec<bf16> = values(rows * 2 * half, 7)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let got = map_rows_bf16(&x, 2 * half, half, |s, d| geglu_rows(d, s, half));
        let got: Vec<u16> = got.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, narrow(&geglu(&wide, half)), "geglu");
        let (w, b) = (values(2 * half, 8), values(2 * half, 9));
        let c = 2 * half;
        let got = map_rows_bf16(&x, c, c, |s, d| {
            for (sr, dr) in s.chunks(c).zip(d.chunks_mut(c)) {
                crate::engine::cpu::norm::layer_norm_row(sr, dr, &w, &b, 1e-5);
            }
        });
        let got: Vec<u16> = got.iter().map(|v| v.to_bits()).collect();
        let want = crate::engine::cpu::norm::layer_norm(&wide, c, &w, &b, 1e-5);
        assert_eq!(got, narrow(&want), "layer norm");
        assert!(map_rows_bf16(&[], 4, 2, |_, _| unreachable!("no rows")).is_empty());
        let y: Vec<bf16> = values(x.len(), 10)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let got: Vec<u16> = zip_bf16(&x, &y, |a, b| a + b)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let sum: Vec<f32> = x
            .iter()
            .zip(&y)
            .map(|(a, b)| a.to_f32() + b.to_f32())
            .collect();
        assert_eq!(got, narrow(&sum), "add");
        assert!(is_row_major(&[2, 3, 4], &[12, 4, 1]) && is_row_major(&[2, 1, 4], &[4, 9, 1]));
        assert!(!is_row_major(&[2, 3, 4], &[0, 4, 1]) && !is_row_major(&[3, 2], &[1, 3]));
    }
}
