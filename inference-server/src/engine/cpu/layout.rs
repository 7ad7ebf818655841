//! Layout kernels: strided copies (permute, narrow), concatenation and row gathers.
//! Generic over the element type so layout ops keep the input dtype.

use rayon::prelude::*;

use super::PAR_MIN_WORK;
use crate::engine::op::PadGeom;

/// Copies the strided view `src[offset + Σ idx_i * strides_i]` over `dims` into a new
/// row-major vector.
pub(crate) fn strided_copy<T: Copy + Default + Send + Sync>(
    src: &[T],
    offset: usize,
    dims: &[usize],
    strides: &[usize],
) -> Vec<T> {
    let total: usize = dims.iter().product();
    if dims.is_empty() {
        return vec![src[offset]];
    }
    let mut out = vec![T::default(); total];
    if total == 0 {
        return out;
    }
    let rank = dims.len();
    let row_len = dims[rank - 1];
    let last_stride = strides[rank - 1];
    let outer_dims = &dims[..rank - 1];
    let outer_strides = &strides[..rank - 1];
    let copy_row = |row: usize, dst: &mut [T]| {
        let mut rem = row;
        let mut base = offset;
        for (d, s) in outer_dims.iter().zip(outer_strides).rev() {
            base += (rem % d) * s;
            rem /= d;
        }
        if last_stride == 1 {
            dst.copy_from_slice(&src[base..base + row_len]);
        } else {
            for (j, v) in dst.iter_mut().enumerate() {
                *v = src[base + j * last_stride];
            }
        }
    };
    let rows_per_chunk = (PAR_MIN_WORK / row_len.max(1)).max(1);
    if total >= PAR_MIN_WORK {
        out.par_chunks_mut(rows_per_chunk * row_len)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (r, dst) in chunk.chunks_mut(row_len).enumerate() {
                    copy_row(ci * rows_per_chunk + r, dst);
                }
            });
    } else {
        for (r, dst) in out.chunks_mut(row_len).enumerate() {
            copy_row(r, dst);
        }
    }
    out
}

/// Concatenates `parts` (each `outer × len_i × inner`, given as (slice, len_i)) along the middle axis.
pub(crate) fn cat<T: Copy>(parts: &[(&[T], usize)], outer: usize, inner: usize) -> Vec<T> {
    let total_len: usize = parts.iter().map(|p| p.1).sum();
    let mut out = Vec::with_capacity(outer * total_len * inner);
    for o in 0..outer {
        for (data, len) in parts {
            let block = len * inner;
            out.extend_from_slice(&data[o * block..(o + 1) * block]);
        }
    }
    out
}

/// Gathers `ids` along the middle axis of an `outer × d × inner` array. Ids are pre-checked.
pub(crate) fn index_select<T: Copy>(
    src: &[T],
    outer: usize,
    d: usize,
    inner: usize,
    ids: &[u32],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &id in ids {
            let start = (o * d + id as usize) * inner;
            out.extend_from_slice(&src[start..start + inner]);
        }
    }
    out
}

/// Zero padding of the last two dims of `g.planes` planes (any element type).
pub(crate) fn pad2d<T: Copy + Default>(src: &[T], g: PadGeom) -> Vec<T> {
    let (h, w) = (g.h, g.w);
    let (ho, wo) = (h + g.top + g.bottom, w + g.left + g.right);
    let mut out = vec![T::default(); g.planes * ho * wo];
    if h > 0 && w > 0 {
        for (plane, dst) in src
            .chunks_exact(h * w)
            .zip(out.chunks_exact_mut(ho * wo))
            .take(g.planes)
        {
            for (row, line) in plane.chunks_exact(w).enumerate() {
                let at = (row + g.top) * wo + g.left;
                dst[at..at + w].copy_from_slice(line);
            }
        }
    }
    out
}
