//! Element-wise kernels: unary maps, broadcast binary ops, softmax and reductions.

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

/// GEGLU over rows of `2 · half`: `row[..half] · gelu(row[half..])`.
pub(crate) fn geglu(src: &[f32], half: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len() / 2];
    if half == 0 {
        return out;
    }
    let rows_per_chunk = (PAR_MIN_WORK / half).max(1);
    let run = |(d, s): (&mut [f32], &[f32])| {
        for (dr, sr) in d.chunks_mut(half).zip(s.chunks(2 * half)) {
            let (a, gate) = sr.split_at(half);
            super::fastmath::geglu(dr, a, gate);
        }
    };
    if out.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(rows_per_chunk * half)
            .zip(src.par_chunks(rows_per_chunk * 2 * half))
            .for_each(run);
    } else {
        run((&mut out, src));
    }
    out
}
