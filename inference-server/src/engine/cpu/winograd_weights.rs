//! Winograd's weight transform `U = G g Gᵀ` (see [`super::winograd`]), vectorised across input
//! channels. It runs on every Winograd call: the transformed weights are four times the size
//! of the stored ones (36 values per 3×3 kernel), too much to keep beside them.

use rayon::prelude::*;

use super::winograd::{ALPHA, POINTS};

/// The transformed weights `U = G g Gᵀ` of `weight [o, c, 3, 3]`, laid out `[36][o][c]`: one
/// row-major `[o, c]` matrix per point, which the GEMMs read contiguously.
pub(super) fn transform_weights(weight: &[f32], o: usize, c: usize) -> Vec<f32> {
    const ROWS: usize = 8;
    let mut u = vec![0f32; o * c * POINTS];
    // Work is split by blocks of ROWS output channels; each block writes its rows of all 36
    // matrices, so the 36 row ranges of a block are gathered into one list of slices.
    let mut per_point: Vec<std::slice::ChunksMut<'_, f32>> = u
        .chunks_mut(o * c)
        .map(|m| m.chunks_mut(ROWS * c))
        .collect();
    let blocks: Vec<Vec<&mut [f32]>> = (0..o.div_ceil(ROWS))
        .map(|_| {
            per_point
                .iter_mut()
                .map(|rows| rows.next().expect("one chunk per block"))
                .collect()
        })
        .collect();
    blocks
        .into_par_iter()
        .enumerate()
        .for_each(|(block, mut dst)| {
            let rows = block * ROWS..(block * ROWS + ROWS).min(o);
            weight_rows(weight, c, rows, &mut dst);
        });
    u
}

/// The transformed weights of output channels `rows` into their rows of the 36 matrices
/// (`dst[point]`, rows from the block's first).
#[inline(always)]
fn weight_rows(weight: &[f32], c: usize, rows: std::ops::Range<usize>, dst: &mut [&mut [f32]]) {
    for (r, oi) in rows.enumerate() {
        // WL input channels at a time as lanes: the same operations (divisions
        // included, so the same results bit for bit), vectorised across channels.
        let full = c - c % WL;
        for c0 in (0..full).step_by(WL) {
            let tap = |t: usize| -> [f32; WL] {
                std::array::from_fn(|l| weight[(oi * c + c0 + l) * 9 + t])
            };
            let g: [[f32; WL]; 9] = std::array::from_fn(tap);
            // G g column by column, then (G g) Gᵀ row by row.
            let cols: [[[f32; WL]; ALPHA]; 3] =
                std::array::from_fn(|j| taps_lanes(&g[j], &g[3 + j], &g[6 + j]));
            for i in 0..ALPHA {
                let row = taps_lanes(&cols[0][i], &cols[1][i], &cols[2][i]);
                for (j, v) in row.iter().enumerate() {
                    dst[i * ALPHA + j][r * c + c0..][..WL].copy_from_slice(v);
                }
            }
        }
        for ci in full..c {
            let g = &weight[(oi * c + ci) * 9..][..9];
            // G g: 6 × 3, transformed column by column; then (G g) Gᵀ row by row.
            let mut gg = [[0f32; 3]; ALPHA];
            for j in 0..3 {
                for (i, v) in kernel_taps(g[j], g[3 + j], g[6 + j])
                    .into_iter()
                    .enumerate()
                {
                    gg[i][j] = v;
                }
            }
            for (i, row) in gg.iter().enumerate() {
                for (j, v) in kernel_taps(row[0], row[1], row[2]).into_iter().enumerate() {
                    dst[i * ALPHA + j][r * c + ci] = v;
                }
            }
        }
    }
}

/// Input channels [`transform_weights`] transforms together.
const WL: usize = 16;

/// [`kernel_taps`] on `WL` lanes at once (the same operations per lane).
#[inline(always)]
fn taps_lanes(g0: &[f32; WL], g1: &[f32; WL], g2: &[f32; WL]) -> [[f32; WL]; ALPHA] {
    let mut out = [[0f32; WL]; ALPHA];
    for l in 0..WL {
        let t = kernel_taps(g0[l], g1[l], g2[l]);
        for (i, v) in t.into_iter().enumerate() {
            out[i][l] = v;
        }
    }
    out
}

/// `G · (g0, g1, g2)`.
#[inline(always)]
pub(super) fn kernel_taps(g0: f32, g1: f32, g2: f32) -> [f32; ALPHA] {
    let (a, b) = (g0 + g2, g1);
    [
        g0 / 4.0,
        -(a + b) / 6.0,
        -(a - b) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}
