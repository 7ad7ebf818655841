//! Tiled attention with online softmax (flash-attention style). Memory per task is
//! O(tile · (D + tile)); the full `Lq × Lk` score matrix is never formed.

use rayon::prelude::*;

use super::fastmath;
use super::gemm::{Mat, Par, Products, gemm_with};
pub(crate) use crate::engine::op::AttnGeom;

/// Query rows per task. With [`BK`], the score tile is 128 KiB (fits L2) and each gemm call is
/// large enough to amortise its packing; measured best of 32..256 × 64..512 at SD's shapes.
const BQ: usize = 128;
/// Keys per inner step.
const BK: usize = 256;

/// `softmax(scale · q kᵀ [+ mask]) v` for `q [bh, lq, d]`, `k`, `v [bh, lk, d]`.
/// `products` applies to both products (scores and the weighted sum of values).
pub(crate) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: AttnGeom,
    products: Products,
) -> Vec<f32> {
    if products == Products::Bf16
        && let Some(out) = super::bf16gemm::attention(q, k, v, g)
    {
        return out;
    }
    tiled(q, k, v, g, products)
}

/// [`attention`] through the general GEMMs: `products` for both products, any mask. (The
/// transposed bf16 attention is checked against it.)
pub(crate) fn tiled(q: &[f32], k: &[f32], v: &[f32], g: AttnGeom, products: Products) -> Vec<f32> {
    let d = g.d;
    let mut out = vec![0f32; g.bh * g.lq * d];
    if out.is_empty() || g.lk == 0 {
        return out;
    }
    out.par_chunks_mut(g.lq * d)
        .enumerate()
        .for_each(|(b, out_b)| {
            let qb = &q[b * g.lq * d..(b + 1) * g.lq * d];
            let kb = &k[b * g.lk * d..(b + 1) * g.lk * d];
            let vb = &v[b * g.lk * d..(b + 1) * g.lk * d];
            out_b
                .par_chunks_mut(BQ * d)
                .enumerate()
                .for_each(|(t, acc)| {
                    let q0 = t * BQ;
                    let bq = acc.len() / d;
                    tile(&qb[q0 * d..(q0 + bq) * d], kb, vb, q0, acc, g, products);
                });
        });
    out
}

/// One query tile: `acc [bq, d]` receives the output rows for queries `q0..q0 + bq`.
#[allow(clippy::too_many_arguments)]
fn tile(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    q0: usize,
    acc: &mut [f32],
    g: AttnGeom,
    products: Products,
) {
    let d = g.d;
    let bq = q.len() / d;
    // Scores come out in base 2 (`q · scale · log2 e`), so the softmax needs only `2^x`.
    let qs: Vec<f32> = q
        .iter()
        .map(|&x| x * g.scale * std::f32::consts::LOG2_E)
        .collect();
    let mut m = vec![f32::NEG_INFINITY; bq];
    let mut l = vec![0f32; bq];
    let mut s = vec![0f32; bq * BK];
    let mut k0 = 0;
    while k0 < g.lk {
        if g.causal && k0 > q0 + bq - 1 {
            break;
        }
        let bk = BK.min(g.lk - k0);
        let s = &mut s[..bq * bk];
        let kt = &k[k0 * d..(k0 + bk) * d];
        gemm_with(
            products,
            bq,
            bk,
            d,
            Mat::rows(&qs, d),
            Mat::rows_t(kt, d),
            s,
            bk,
            false,
            Par::Serial,
        );
        for i in 0..bq {
            let row = &mut s[i * bk..(i + 1) * bk];
            // Keys visible to query q0 + i within this tile.
            let visible = if g.causal {
                (q0 + i + 1).saturating_sub(k0).min(bk)
            } else {
                bk
            };
            let new_m = m[i].max(fastmath::max(&row[..visible]));
            if new_m == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let corr = (m[i] - new_m).exp2();
            let sum = fastmath::exp2_sub_sum(&mut row[..visible], new_m);
            row[visible..].fill(0.0);
            l[i] = l[i] * corr + sum;
            m[i] = new_m;
            if corr != 1.0 {
                for a in acc[i * d..(i + 1) * d].iter_mut() {
                    *a *= corr;
                }
            }
        }
        let vt = &v[k0 * d..(k0 + bk) * d];
        gemm_with(
            products,
            bq,
            d,
            bk,
            Mat::rows(s, bk),
            Mat::rows(vt, d),
            acc,
            d,
            true,
            Par::Serial,
        );
        k0 += bk;
    }
    for i in 0..bq {
        let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
        for a in acc[i * d..(i + 1) * d].iter_mut() {
            *a *= inv;
        }
    }
}
