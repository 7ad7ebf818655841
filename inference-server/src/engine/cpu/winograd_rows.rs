//! Winograd's input and output transforms for a group of [`LANES`] side-by-side tiles that lie
//! inside the image, on AVX-512 (where `SDSERVE_CPU_ISA` allows it): the group's patches are
//! gathered from whole input rows, and its output rows are assembled and stored as whole rows,
//! each by vector permutes.
//!
//! Why: the transforms work on `[f32; LANES]` rows, one tile per lane, and the general code
//! copies each tile's 36 inputs into its lane and each of its 16 outputs out of it one value at
//! a time; measured on the SD 1.5 VAE at 512×512 (128 channels, 2 cores), the two transforms
//! took 2.9× as long as the 36 GEMMs between them. Tiles on an edge (or groups that straddle a
//! tile row) keep the general code. The values moved are the same, so the results are too, bit
//! for bit (tests).

use super::winograd::{ALPHA, Elem, LANES, Lane, TILE, Tiling};
use crate::engine::op::Conv2dGeom;

/// Input values a row of [`LANES`] side-by-side tiles covers (`4·LANES + 2`), padded so that
/// [`spread_rows`] may load whole vectors.
pub(super) const SPAN: usize = 4 * LANES + 4;

/// Whether the patches of tiles `t..t + n` can be gathered by [`spread_rows`]: the AVX-512
/// path runs ([`avx512f`]), the group is a whole [`LANES`] of tiles in one tile row, and none
/// of them touches the padding. If so, the six input rows they cover, widened to f32
/// (`[row][column]`, from the column left of the first tile; the last two columns unused).
#[inline(always)]
pub(super) fn interior_rows<T: Elem>(
    x: &[T],
    g: &Conv2dGeom,
    tiling: &Tiling,
    ci: usize,
    t: usize,
    n: usize,
) -> Option<[[f32; SPAN]; ALPHA]> {
    let (image, ty, tx) = tiling.locate(t);
    let (y0, x0) = (ty * TILE, tx * TILE);
    let interior = n == LANES
        && tx + LANES <= tiling.tiles_w
        && y0 >= 1
        && x0 >= 1
        && y0 + 5 <= g.h
        && x0 + 4 * (LANES - 1) + 5 <= g.w;
    if !(interior && avx512f()) {
        return None;
    }
    let hw = g.h * g.w;
    let plane = &x[(image * g.c + ci) * hw..][..hw];
    let mut rows = [[0f32; SPAN]; ALPHA];
    for (i, row) in rows.iter_mut().enumerate() {
        let src = &plane[(y0 - 1 + i) * g.w + x0 - 1..][..SPAN - 2];
        for (d, &v) in row.iter_mut().zip(src) {
            *d = v.into();
        }
    }
    Some(rows)
}

/// Whether the AVX-512 gathers run: the CPU has avx512f and `SDSERVE_CPU_ISA` does not cap the
/// backend below it (so a forced `avx2` or `portable` run has no AVX-512 code in the
/// transforms either).
fn avx512f() -> bool {
    super::f32gemm::isa() == super::f32gemm::Isa::Avx512
}

/// The patches of [`LANES`] side-by-side tiles from the input rows they cover:
/// `d[i][j][l] = rows[i][4l + j]`, each `d[i][j]` one two-source permute of whole-vector loads
/// (tile l's column j is four columns right of tile l − 1's).
///
/// # Safety
/// The CPU has avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn spread_rows(rows: &[[f32; SPAN]; ALPHA]) -> [[Lane; ALPHA]; ALPHA] {
    use std::arch::x86_64::*;
    // Lane l of permute j reads element 4l + j of the 32 in two vectors (lanes 8.. unused).
    const fn index(j: i32) -> [i32; 16] {
        let mut idx = [0i32; 16];
        let mut l = 0;
        while l < LANES {
            idx[l] = 4 * l as i32 + j;
            l += 1;
        }
        idx
    }
    const IDX: [[i32; 16]; 4] = [index(0), index(1), index(2), index(3)];
    let mut d = [[[0f32; LANES]; ALPHA]; ALPHA];
    for (row, di) in rows.iter().zip(d.iter_mut()) {
        let r = row.as_ptr();
        // SAFETY: loads of 16 f32 at offsets 0, 16, 4 and 20 end by 36 ≤ SPAN; stores write
        // the low 8 lanes of a vector into one 8-lane row of `d`.
        unsafe {
            let (a0, a1) = (_mm512_loadu_ps(r), _mm512_loadu_ps(r.add(16)));
            let (b0, b1) = (_mm512_loadu_ps(r.add(4)), _mm512_loadu_ps(r.add(20)));
            for (j, dj) in di.iter_mut().enumerate() {
                let (lo, hi, idx) = match j < 4 {
                    true => (a0, a1, IDX[j]),
                    false => (b0, b1, IDX[j - 4]),
                };
                let idx = _mm512_loadu_si512(idx.as_ptr().cast());
                let v = _mm512_permutex2var_ps(lo, idx, hi);
                _mm256_storeu_ps(dj.as_mut_ptr(), _mm512_castps512_ps256(v));
            }
        }
    }
    d
}

/// Output values a group's row holds: four per tile.
pub(super) const RUN: usize = TILE * LANES;

/// Where the outputs of tiles `t..t + n` can be written by [`join_rows`]: the AVX-512 path runs,
/// the group is a whole [`LANES`] of tiles in one tile row, and all its 4 × 32 outputs lie in
/// the image. If so, the image and the group's top-left output (row, column).
#[inline(always)]
pub(super) fn full_rows(
    g: &Conv2dGeom,
    tiling: &Tiling,
    t: usize,
    n: usize,
) -> Option<(usize, usize, usize)> {
    let (image, ty, tx) = tiling.locate(t);
    let (y0, x0) = (ty * TILE, tx * TILE);
    let full = n == LANES && tx + LANES <= tiling.tiles_w && y0 + TILE <= g.ho && x0 + RUN <= g.wo;
    (full && avx512f()).then_some((image, y0, x0))
}

/// The output rows of [`LANES`] side-by-side tiles, `out[i][j][l]` (row i, column j of tile l),
/// as whole rows: `line[i][4l + j]`. Two permutes a row over the four columns' vectors.
///
/// # Safety
/// The CPU has avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn join_rows(out: &[[Lane; TILE]; TILE]) -> [[f32; RUN]; TILE] {
    use std::arch::x86_64::*;
    // Position p = 4l + j reads column j's lane l: columns 0 and 1 are the first vector's
    // halves (indices l, 8 + l), columns 2 and 3 the second's (16 + l, 24 + l).
    const fn index(half: usize) -> [i32; 16] {
        let mut idx = [0i32; 16];
        let mut q = 0;
        while q < 16 {
            let (l, j) = ((16 * half + q) / 4, (16 * half + q) % 4);
            idx[q] = (8 * j + l) as i32;
            q += 1;
        }
        idx
    }
    const IDX: [[i32; 16]; 2] = [index(0), index(1)];
    let mut lines = [[0f32; RUN]; TILE];
    for (row, line) in out.iter().zip(lines.iter_mut()) {
        // SAFETY: 8-lane loads from the rows of `out`, 16-lane stores inside `line` (32 f32).
        unsafe {
            let cols = |j: usize| _mm512_castps256_ps512(_mm256_loadu_ps(row[j].as_ptr()));
            let ab = _mm512_insertf32x8(cols(0), _mm256_loadu_ps(row[1].as_ptr()), 1);
            let cd = _mm512_insertf32x8(cols(2), _mm256_loadu_ps(row[3].as_ptr()), 1);
            for (half, idx) in IDX.iter().enumerate() {
                let idx = _mm512_loadu_si512(idx.as_ptr().cast());
                let v = _mm512_permutex2var_ps(ab, idx, cd);
                _mm512_storeu_ps(line.as_mut_ptr().add(16 * half), v);
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::gemm_testing::values;
    use crate::engine::cpu::winograd::patches;
    use crate::engine::cpu::winograd::tests::geom;

    #[test]
    fn patches_gathered_by_rows_equal_the_tile_by_tile_copies() {
        // Two images of 3 channels, 11 × 19 tiles: rows of 8 interior tiles and groups that
        // straddle an edge, a tile row or an image (those take the copies).
        let g = geom(2, 3, 4, 44, 76);
        let x: Vec<half::bf16> = values(2 * 3 * 44 * 76, 9)
            .iter()
            .map(|&v| half::bf16::from_f32(v))
            .collect();
        let tiling = Tiling::of(&g);
        let tiles = tiling.tiles;
        let mut gathered = 0;
        for ci in 0..3 {
            for t in 0..2 * tiles - LANES {
                let want = patches(&x, &g, &tiling, ci, t, LANES);
                let Some(rows) = interior_rows(&x, &g, &tiling, ci, t, LANES) else {
                    continue;
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: rows come back only where the CPU has avx512f.
                let got = unsafe { spread_rows(&rows) };
                #[cfg(not(target_arch = "x86_64"))]
                let got: [[Lane; ALPHA]; ALPHA] = unreachable!("{rows:?}");
                assert_eq!(got, want, "channel {ci}, tiles {t}..");
                gathered += 1;
            }
        }
        if avx512f() {
            // Per image and channel: 9 interior tile rows × tx 1..=10 (tiles 1..=18 interior).
            assert_eq!(gathered, 2 * 3 * 9 * 10, "groups gathered by rows");
        } else {
            eprintln!("note: AVX-512 path off (CPU or SDSERVE_CPU_ISA); patches copied per tile");
        }
    }

    #[test]
    fn output_rows_joined_by_permutes_equal_the_lane_by_lane_copies() {
        if !avx512f() {
            eprintln!("note: AVX-512 path off (CPU or SDSERVE_CPU_ISA); outputs written per lane");
            return;
        }
        let v = values(TILE * TILE * LANES, 5);
        let out: [[Lane; TILE]; TILE] = std::array::from_fn(|i| {
            std::array::from_fn(|j| std::array::from_fn(|l| v[(i * TILE + j) * LANES + l]))
        });
        // SAFETY: the CPU has avx512f (checked above).
        let lines = unsafe { join_rows(&out) };
        for i in 0..TILE {
            for l in 0..LANES {
                for j in 0..TILE {
                    assert_eq!(
                        lines[i][4 * l + j],
                        out[i][j][l],
                        "row {i}, tile {l}, column {j}"
                    );
                }
            }
        }
        // Which groups qualify: 2 images of 44 × 76 outputs, 11 × 19 tiles.
        let g = geom(1, 3, 4, 44, 76);
        let tiling = Tiling::of(&g);
        let tiles = tiling.tiles;
        assert_eq!(full_rows(&g, &tiling, 0, LANES), Some((0, 0, 0)));
        assert_eq!(full_rows(&g, &tiling, 11, LANES), Some((0, 0, 44)));
        // Straddles the tile row; a partial group; the second image's first row.
        assert_eq!(full_rows(&g, &tiling, 12, LANES), None);
        assert_eq!(full_rows(&g, &tiling, 0, LANES - 1), None);
        assert_eq!(full_rows(&g, &tiling, tiles + 19, LANES), Some((1, 4, 0)));
    }
}
