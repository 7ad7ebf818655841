//! Winograd F(4×4, 3×3) for the 3×3, stride-1, pad-1 convolutions that dominate the UNet and
//! VAE: each 4×4 output tile costs 36 multiplies per input channel instead of 144, done as 36
//! GEMMs `[o, c] · [c, tiles]`, between an input transform (`Bᵀ d B` on 6×6 patches) and an
//! output transform (`Aᵀ m A`). The weights are transformed per call (`G g Gᵀ`), which costs
//! about as much as one output tile row and keeps the weights' single copy the stored one.
//!
//! Accuracy: the interpolation points (0, ±1, ±2, ∞) of Lavin & Gray's F(4, 3) give f32 results
//! within about 1e-5 of direct convolution relative to the output's scale on SD's shapes
//! (measured by the tests below: the largest error over several layers is printed and bounded).

use rayon::prelude::*;

use super::gemm::{Mat, Par, Products, gemm_with};
use super::winograd_rows as rows;
pub(super) use super::winograd_weights::transform_weights;
use crate::engine::op::Conv2dGeom;

/// Input tile side (`m + r − 1` for m = 4 outputs and r = 3 taps).
pub(super) const ALPHA: usize = 6;
/// Output tile side.
pub(super) const TILE: usize = 4;
/// Points of the transformed domain: one GEMM each.
pub(super) const POINTS: usize = ALPHA * ALPHA;
/// Transformed inputs (and outputs) held per block of tiles, in f32 elements (1 MiB each, so a
/// block's transforms and GEMMs stay in cache)...
const BLOCK_ELEMS: usize = 1 << 18;
/// ...but at least this many tiles per block, however many channels: the GEMMs' `n`, below
/// which packing the `[o, c]` matrices costs more than cache misses do. Measured on the VAE
/// decoder (2 cores): 16 tiles 25.3 s, 128 19.2 s, 256 18.2–19.4 s, 512 18.5 s.
const MIN_BLOCK_TILES: usize = 256;

/// Whether `g` is a convolution this path computes, and is large enough to gain: a 3×3 kernel
/// at stride 1 with padding 1 over at least 32×32 outputs and 16 channels each way. Measured on
/// the SD 1.5 UNet at batch 2 (2 cores, each conv timed both ways): 64×64 runs 1.8–2.5× faster
/// than im2col, 32×32 1.15–1.3×, but 16×16 with 1280 channels 2× slower (the per-call weight
/// transform and 32-tile GEMMs cost more than the saved multiplies).
pub(crate) fn applies(g: &Conv2dGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.pad == 1
        && g.ho == g.h
        && g.wo == g.w
        && g.ho * g.wo >= 1024
        && g.c >= 16
        && g.o >= 16
}

/// Tiles transformed together: the arithmetic runs on `[f32; LANES]` rows, which the compiler
/// turns into vector instructions, and the transformed values are stored `LANES` at a time.
pub(super) const LANES: usize = 8;

/// A row of `LANES` tiles' values at one position.
pub(super) type Lane = [f32; LANES];

#[inline(always)]
fn lane(f: impl Fn(usize) -> f32) -> Lane {
    std::array::from_fn(f)
}

/// `Bᵀ · d`, lane-wise.
#[inline(always)]
fn input_taps(d: &[Lane; ALPHA]) -> [Lane; ALPHA] {
    [
        lane(|l| 4.0 * d[0][l] - 5.0 * d[2][l] + d[4][l]),
        lane(|l| -4.0 * (d[1][l] + d[2][l]) + d[3][l] + d[4][l]),
        lane(|l| 4.0 * (d[1][l] - d[2][l]) - d[3][l] + d[4][l]),
        lane(|l| -2.0 * (d[1][l] - d[3][l]) - d[2][l] + d[4][l]),
        lane(|l| 2.0 * (d[1][l] - d[3][l]) - d[2][l] + d[4][l]),
        lane(|l| 4.0 * d[1][l] - 5.0 * d[3][l] + d[5][l]),
    ]
}

/// `Aᵀ · m`, lane-wise.
#[inline(always)]
fn output_taps(m: &[Lane; ALPHA]) -> [Lane; TILE] {
    let s12 = lane(|l| m[1][l] + m[2][l]);
    let d12 = lane(|l| m[1][l] - m[2][l]);
    let s34 = lane(|l| m[3][l] + m[4][l]);
    let d34 = lane(|l| m[3][l] - m[4][l]);
    [
        lane(|l| m[0][l] + s12[l] + s34[l]),
        lane(|l| d12[l] + 2.0 * d34[l]),
        lane(|l| s12[l] + 4.0 * s34[l]),
        lane(|l| d12[l] + 8.0 * d34[l] + m[5][l]),
    ]
}

/// An element the transforms read or write: f32, or the bf16 activations of `--precision bf16`
/// (read widened, written rounded to nearest-even as `half` rounds), so that a bf16 layer needs
/// no f32 copy of its input or output.
pub(super) trait Elem: Copy + Send + Sync + Into<f32> {
    /// `x` in this type.
    fn narrow(x: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn narrow(x: f32) -> f32 {
        x
    }
}

impl Elem for half::bf16 {
    #[inline(always)]
    fn narrow(x: f32) -> half::bf16 {
        half::bf16::from_bits(super::bf16gemm::bf16_bits(x) as u16)
    }
}

/// The 6×6 input patch of tile (`ty`, `tx`) of `plane` (zeros outside: the padding).
#[inline(always)]
fn patch<T: Elem>(plane: &[T], g: &Conv2dGeom, ty: usize, tx: usize) -> [[f32; ALPHA]; ALPHA] {
    let mut d = [[0f32; ALPHA]; ALPHA];
    let (y0, x0) = (ty * TILE, tx * TILE);
    // Input rows y0 − 1 .. y0 + 5 and columns x0 − 1 .. x0 + 5; interior tiles copy whole rows.
    if y0 >= 1 && x0 >= 1 && y0 + 5 <= g.h && x0 + 5 <= g.w {
        for (i, row) in d.iter_mut().enumerate() {
            let src = &plane[(y0 - 1 + i) * g.w + x0 - 1..][..ALPHA];
            for (cell, &v) in row.iter_mut().zip(src) {
                *cell = v.into();
            }
        }
        return d;
    }
    for (i, row) in d.iter_mut().enumerate() {
        let Some(y) = (y0 + i).checked_sub(1).filter(|&y| y < g.h) else {
            continue;
        };
        for (j, cell) in row.iter_mut().enumerate() {
            if let Some(x) = (x0 + j).checked_sub(1).filter(|&x| x < g.w) {
                *cell = plane[y * g.w + x].into();
            }
        }
    }
    d
}

/// The 6×6 input patches of channel `ci` of the `n ≤ LANES` tiles `t..t + n`, tile by tile:
/// `[i][j][lane]`, missing lanes zero.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn patches<T: Elem>(
    x: &[T],
    g: &Conv2dGeom,
    tiling: &Tiling,
    ci: usize,
    t: usize,
    n: usize,
) -> [[Lane; ALPHA]; ALPHA] {
    let hw = g.h * g.w;
    let mut d = [[[0f32; LANES]; ALPHA]; ALPHA];
    for l in 0..n {
        let (image, ty, tx) = tiling.locate(t + l);
        let plane = &x[(image * g.c + ci) * hw..][..hw];
        let p = patch(plane, g, ty, tx);
        for i in 0..ALPHA {
            for j in 0..ALPHA {
                d[i][j][l] = p[i][j];
            }
        }
    }
    d
}

/// `Bᵀ d B` of channel `ci`'s 6×6 input patches of the `n ≤ LANES` tiles `t..t + n` (tiles
/// numbered across the batch, see [`Tiling::locate`]): `[point][lane]`, missing lanes zero.
// Index loops mirror the transforms' maths (`d[i][j][lane]`), across three array levels.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn input_lanes<T: Elem>(
    x: &[T],
    g: &Conv2dGeom,
    tiling: &Tiling,
    ci: usize,
    t: usize,
    n: usize,
) -> [Lane; POINTS] {
    // d[i][j][lane]: the patches of up to LANES tiles (missing lanes stay zero).
    let d = match rows::interior_rows(x, g, tiling, ci, t, n) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `interior_rows` returns rows only where the CPU has avx512f.
        Some(r) => unsafe { rows::spread_rows(&r) },
        _ => patches(x, g, tiling, ci, t, n),
    };
    // Bᵀ d: columns; then (Bᵀ d) B: rows.
    let mut cols = [[[0f32; LANES]; ALPHA]; ALPHA];
    for j in 0..ALPHA {
        let t = input_taps(&std::array::from_fn(|i| d[i][j]));
        for i in 0..ALPHA {
            cols[i][j] = t[i];
        }
    }
    let mut out = [[0f32; LANES]; POINTS];
    for (i, row) in cols.iter().enumerate() {
        for (j, value) in input_taps(row).into_iter().enumerate() {
            out[i * ALPHA + j] = value;
        }
    }
    out
}

/// Fills `v [c][36][tb]` with `Bᵀ d B` of the 6×6 input patch of each tile `t0..t0 + tb`,
/// tiles numbered across the batch (see [`Tiling::locate`]).
fn transform_input(
    x: &[f32],
    g: &Conv2dGeom,
    tiling: &Tiling,
    t0: usize,
    tb: usize,
    v: &mut [f32],
) {
    v.par_chunks_mut(POINTS * tb)
        .enumerate()
        .for_each(|(ci, dst)| {
            for tj0 in (0..tb).step_by(LANES) {
                let n = LANES.min(tb - tj0);
                let lanes = input_lanes(x, g, tiling, ci, t0 + tj0, n);
                for (point, value) in lanes.iter().enumerate() {
                    let dst = &mut dst[point * tb + tj0..];
                    // A whole lane row is a fixed-size copy (no call to memmove).
                    match n == LANES {
                        true => dst[..LANES].copy_from_slice(value),
                        false => dst[..n].copy_from_slice(&value[..n]),
                    }
                }
            }
        });
}

/// Writes `Aᵀ m A` (+ bias, then + residual) of each tile of `m [36][o][tb]` into the output
/// planes, given per output channel as one plane per image (`planes[o][image]`, each `ho·wo`;
/// `residual` is `[n, o, ho, wo]`).
#[allow(clippy::too_many_arguments)]
// Index loops mirror the transforms' maths (`d[i][j][lane]`), across three array levels.
#[allow(clippy::needless_range_loop)]
pub(super) fn transform_output<R: Elem, O: Elem>(
    m: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[R]>,
    g: &Conv2dGeom,
    tiling: &Tiling,
    t0: usize,
    tb: usize,
    planes: &mut [Vec<&mut [O]>],
) {
    let o = planes.len();
    planes.par_iter_mut().enumerate().for_each(|(oi, images)| {
        let b = bias.map_or(0.0, |b| b[oi]);
        for tj0 in (0..tb).step_by(LANES) {
            let n = LANES.min(tb - tj0);
            let at = |i: usize, j: usize| -> Lane {
                let s = &m[((i * ALPHA + j) * o + oi) * tb + tj0..][..n];
                lane(|l| if l < n { s[l] } else { 0.0 })
            };
            // Aᵀ m: columns; then (Aᵀ m) A: rows.
            let mut rows = [[[0f32; LANES]; ALPHA]; TILE];
            for j in 0..ALPHA {
                let t = output_taps(&std::array::from_fn(|i| at(i, j)));
                for i in 0..TILE {
                    rows[i][j] = t[i];
                }
            }
            let out: [[Lane; TILE]; TILE] = std::array::from_fn(|i| output_taps(&rows[i]));
            if let Some((image, y0, x0)) = rows::full_rows(g, tiling, t0 + tj0, n) {
                // SAFETY: `full_rows` answers only where the CPU has avx512f.
                #[cfg(target_arch = "x86_64")]
                let lines = unsafe { rows::join_rows(&out) };
                #[cfg(not(target_arch = "x86_64"))]
                let lines: [[f32; rows::RUN]; TILE] = unreachable!("{image}");
                let plane = &mut *images[image];
                for (i, line) in lines.iter().enumerate() {
                    let at = (y0 + i) * g.wo + x0;
                    let res = residual.map(|r| &r[(image * o + oi) * g.ho * g.wo + at..]);
                    finish(line, b, res, &mut plane[at..][..rows::RUN]);
                }
                continue;
            }
            for l in 0..n {
                let (image, ty, tx) = tiling.locate(t0 + tj0 + l);
                let plane = &mut *images[image];
                let (y0, x0) = (ty * TILE, tx * TILE);
                let width = TILE.min(g.wo - x0);
                for (i, row) in out
                    .iter()
                    .enumerate()
                    .take(g.ho.saturating_sub(y0).min(TILE))
                {
                    let at = (y0 + i) * g.wo + x0;
                    let res = residual.map(|r| &r[(image * o + oi) * g.ho * g.wo + at..]);
                    let line: [f32; TILE] = std::array::from_fn(|j| row[j][l]);
                    finish(&line[..width], b, res, &mut plane[at..][..width]);
                }
            }
        }
    });
}

/// `dst[j] = (src[j] + b) + res[j]` in f32, rounded once to the output type: what the unfused
/// ops (conv with bias, then the residual add) give.
#[inline(always)]
fn finish<R: Elem, O: Elem>(src: &[f32], b: f32, res: Option<&[R]>, dst: &mut [O]) {
    match res {
        Some(r) => {
            for ((d, &s), &r) in dst.iter_mut().zip(src).zip(r) {
                *d = O::narrow(s + b + r.into());
            }
        }
        None => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = O::narrow(s + b);
            }
        }
    }
}

/// For transformed inputs written straight into a GEMM's packed B panels (`per_point` values
/// per point, panels of `panel_len`): one task per panel of a block of `tb` tiles, `nr` tiles a
/// panel, each task holding that panel of every point, so tasks write disjoint slices.
pub(super) fn panel_tasks<T>(
    v: &mut [T],
    per_point: usize,
    panel_len: usize,
    tb: usize,
    nr: usize,
) -> Vec<Vec<&mut [T]>> {
    let mut points: Vec<std::slice::ChunksMut<'_, T>> = v
        .chunks_mut(per_point)
        .map(|p| p.chunks_mut(panel_len))
        .collect();
    (0..tb.div_ceil(nr))
        .map(|_| {
            points
                .iter_mut()
                .map(|panels| panels.next().expect("one panel per task"))
                .collect()
        })
        .collect()
}

/// The block loop of a Winograd convolution whose 36 GEMMs read the transformed inputs as
/// packed B panels (`per_point` elements a point, in the layout `input` writes), shared by the
/// f32 and the bf16 path: per block of `tiling`'s tiles `t0..t0 + tb`, `input(t0, tb, v)` writes
/// the block's transformed inputs, `gemm(ξ, tb, v_ξ, m_ξ)` multiplies point ξ into its
/// `[o, tb]` slice of `m` (one point per task, each GEMM on its thread), and the output
/// transform writes the tiles, bias and residual added. Returns `[n, o, ho, wo]`.
pub(super) fn packed_blocks<R: Elem, O: Elem, P: Copy + Default + Send + Sync>(
    g: &Conv2dGeom,
    tiling: &Tiling,
    bias: Option<&[f32]>,
    residual: Option<&[R]>,
    per_point: usize,
    input: impl Fn(usize, usize, &mut [P]),
    gemm: impl Fn(usize, usize, &[P], &mut [f32]) + Sync,
) -> Vec<O> {
    let o = g.o;
    let mut out = vec![O::narrow(0.0); g.n * o * g.ho * g.wo];
    // The panels' layout does not depend on tb, so the last, narrower block reuses the buffer.
    let mut v = vec![P::default(); POINTS * per_point];
    let mut m = vec![0f32; o * POINTS * tiling.block];
    let mut planes = output_planes(&mut out, g);
    let mut t0 = 0;
    while t0 < tiling.total {
        let tb = tiling.block.min(tiling.total - t0);
        input(t0, tb, &mut v);
        let m = &mut m[..o * POINTS * tb];
        let v = &v;
        m.par_chunks_mut(o * tb)
            .enumerate()
            .for_each(|(xi, mx)| gemm(xi, tb, &v[xi * per_point..][..per_point], mx));
        transform_output(m, bias, residual, g, tiling, t0, tb, &mut planes);
        t0 += tb;
    }
    drop(planes);
    out
}

/// How a convolution's output is cut into tiles and blocks of tiles.
pub(super) struct Tiling {
    /// Tiles per image.
    pub tiles: usize,
    /// Tiles per row of an image.
    pub tiles_w: usize,
    /// Tiles across the batch: they are numbered across it, so small images still make wide
    /// GEMMs.
    pub total: usize,
    /// Tiles transformed and multiplied together (see [`BLOCK_ELEMS`], [`MIN_BLOCK_TILES`]).
    pub block: usize,
}

impl Tiling {
    /// The tiling of `g`'s output.
    pub(super) fn of(g: &Conv2dGeom) -> Tiling {
        let (tiles_h, tiles_w) = (g.ho.div_ceil(TILE), g.wo.div_ceil(TILE));
        let tiles = tiles_h * tiles_w;
        let total = g.n * tiles;
        let block = (BLOCK_ELEMS / (POINTS * g.c.max(g.o)))
            .max(MIN_BLOCK_TILES)
            .min(total);
        Tiling {
            tiles,
            tiles_w,
            total,
            block,
        }
    }

    /// Tile `t` (numbered across the batch) as (image, tile row, tile column).
    #[inline(always)]
    pub(super) fn locate(&self, t: usize) -> (usize, usize, usize) {
        let within = t % self.tiles;
        (t / self.tiles, within / self.tiles_w, within % self.tiles_w)
    }
}

/// `out [n, o, ho·wo]` as one plane per output channel and image (`planes[o][image]`), the
/// layout [`transform_output`] writes.
pub(super) fn output_planes<'a, O>(out: &'a mut [O], g: &Conv2dGeom) -> Vec<Vec<&'a mut [O]>> {
    let mut planes: Vec<Vec<&mut [O]>> = (0..g.o).map(|_| Vec::with_capacity(g.n)).collect();
    for (index, plane) in out.chunks_mut(g.ho * g.wo).enumerate() {
        planes[index % g.o].push(plane);
    }
    planes
}

/// NCHW convolution of `x [n, c, h, w]` by `weight [o, c, 3, 3]` (f32), optional `bias [o]`
/// and optional `residual [n, o, h, w]` (added as the output transform writes each tile), for a
/// geometry [`applies`] accepts; returns `[n, o, h, w]`.
/// `products` applies to the per-point GEMMs (of transformed inputs and weights).
/// With f32 products on the own AVX-512 GEMM, the input transform writes the GEMM's packed
/// panels directly ([`super::winograd_f32`], same results bit for bit).
pub(crate) fn conv2d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
    products: Products,
) -> Vec<f32> {
    debug_assert!(applies(&g), "winograd::conv2d called for {g:?}");
    if products == Products::F32
        && let Some(out) = super::winograd_f32::conv2d(x, weight, bias, residual, g)
    {
        return out;
    }
    unfused(x, weight, bias, residual, g, products)
}

/// [`conv2d`] through the general GEMM entry: the transformed inputs as matrices, which the
/// GEMM packs (any instruction set, f32 or bf16 products).
pub(super) fn unfused(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: Conv2dGeom,
    products: Products,
) -> Vec<f32> {
    let spatial = g.ho * g.wo;
    let mut out = vec![0f32; g.n * g.o * spatial];
    let u = transform_weights(weight, g.o, g.c);
    let tiling = Tiling::of(&g);
    let (total, block) = (tiling.total, tiling.block);
    let mut v = vec![0f32; g.c * POINTS * block];
    let mut m = vec![0f32; g.o * POINTS * block];
    let mut planes = output_planes(&mut out, &g);
    let mut t0 = 0;
    while t0 < total {
        let tb = block.min(total - t0);
        let (v, m) = (&mut v[..g.c * POINTS * tb], &mut m[..g.o * POINTS * tb]);
        transform_input(x, &g, &tiling, t0, tb, v);
        // U_ξ [o, c] · V_ξ [c, tb] → M_ξ [o, tb], one whole GEMM per point and thread: 36
        // products of a few hundred rows and columns each, which split badly across threads
        // one at a time (a serial B pack, then a fork and join per product). V is read in place
        // in its interleaved layout; M is point-major, so each product owns a contiguous block.
        let v = &*v;
        m.par_chunks_mut(g.o * tb).enumerate().for_each(|(xi, mx)| {
            let lhs = Mat::rows(&u[xi * g.o * g.c..][..g.o * g.c], g.c);
            let rhs = Mat {
                data: &v[xi * tb..],
                rs: POINTS * tb,
                cs: 1,
            };
            gemm_with(products, g.o, tb, g.c, lhs, rhs, mx, tb, false, Par::Serial);
        });
        transform_output(m, bias, residual, &g, &tiling, t0, tb, &mut planes);
        t0 += tb;
    }
    drop(planes);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::engine::cpu::winograd_weights::kernel_taps;

    /// A 3×3, stride-1, pad-1 convolution of `n` images `c × h × w` to `o` channels.
    pub(in crate::engine::cpu) fn geom(
        n: usize,
        c: usize,
        o: usize,
        h: usize,
        w: usize,
    ) -> Conv2dGeom {
        Conv2dGeom {
            n,
            c,
            h,
            w,
            o,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
            ho: h,
            wo: w,
        }
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct convolution in f64, the reference.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], g: &Conv2dGeom) -> Vec<f64> {
        let mut out = vec![0f64; g.n * g.o * g.h * g.w];
        for n in 0..g.n {
            for o in 0..g.o {
                for y in 0..g.h {
                    for xx in 0..g.w {
                        let mut acc = bias[o] as f64;
                        for c in 0..g.c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (
                                        y as isize + ky as isize - 1,
                                        xx as isize + kx as isize - 1,
                                    );
                                    if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w
                                    {
                                        continue;
                                    }
                                    let xv = x
                                        [((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize]
                                        as f64;
                                    acc += xv * w[((o * g.c + c) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        out[((n * g.o + o) * g.h + y) * g.w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_direct_convolution_on_partial_tiles_batches_and_bias() {
        // 66×70 and 37×33: partial tiles on the edges; batch 2 (612 tiles: blocks span the
        // two images); bias.
        for &(n, c, o, h, w) in &[
            (2, 16, 24, 66, 70),
            (1, 32, 16, 32, 32),
            (1, 20, 17, 37, 33),
        ] {
            let g = geom(n, c, o, h, w);
            assert!(applies(&g));
            let x = values(n * c * h * w, 1);
            let wt: Vec<f32> = values(o * c * 9, 2)
                .iter()
                .map(|v| v / (c as f32 * 9.0).sqrt())
                .collect();
            let bias = values(o, 3);
            let got = conv2d(&x, &wt, Some(&bias), None, g, Products::F32);
            let want = reference(&x, &wt, &bias, &g);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
            assert!(
                err <= 2e-5 * scale,
                "{g:?}: max error {err:e} at output scale {scale}"
            );
        }
    }

    #[test]
    fn weight_transform_lanes_equal_the_per_channel_transform_bit_for_bit() {
        // 37 input channels: two 16-lane groups and a scalar remainder of 5.
        let (o, c) = (3, 37);
        let w = values(o * c * 9, 11);
        let u = transform_weights(&w, o, c);
        for oi in 0..o {
            for ci in 0..c {
                let g = &w[(oi * c + ci) * 9..][..9];
                let cols: [[f32; ALPHA]; 3] =
                    std::array::from_fn(|j| kernel_taps(g[j], g[3 + j], g[6 + j]));
                for i in 0..ALPHA {
                    let row = kernel_taps(cols[0][i], cols[1][i], cols[2][i]);
                    for (j, v) in row.iter().enumerate() {
                        let got = u[((i * ALPHA + j) * o + oi) * c + ci];
                        assert_eq!(got.to_bits(), v.to_bits(), "o {oi} c {ci} point {i},{j}");
                    }
                }
            }
        }
    }

    #[test]
    fn small_or_other_convolutions_are_left_to_im2col() {
        assert!(
            !applies(&geom(1, 16, 16, 8, 8)),
            "8×8 outputs: too few tiles"
        );
        assert!(!applies(&Conv2dGeom {
            stride: 2,
            ho: 8,
            wo: 8,
            ..geom(1, 64, 64, 16, 16)
        }));
        assert!(!applies(&Conv2dGeom {
            kh: 1,
            kw: 1,
            pad: 0,
            ..geom(1, 64, 64, 32, 32)
        }));
        assert!(
            !applies(&geom(1, 4, 64, 64, 64)),
            "4 input channels (the UNet's conv_in)"
        );
    }
}
