//! Sum over the middle axis, softmax, LayerNorm and GroupNorm against the CPU kernels, under
//! every emulator schedule (they use barriers and shuffles).

use super::*;
use crate::engine::cpu::{elementwise as cpu_ew, norm as cpu_norm};
use crate::engine::cuda::ops::norm::{GroupNormGeom, group_norm, layer_norm};
use crate::engine::cuda::ops::reduce::{softmax_last, sum_middle};
use crate::engine::op::GroupNormGeom as CpuGroupNorm;

#[test]
fn sum_middle_matches_the_cpu() {
    // (outer, d, inner): a mean over the last axis (inner = 1), a middle axis with inner wider
    // than a warp and not a multiple of it, and a long reduction.
    let cases = [(5, 333, 1), (3, 17, 45), (2, 1000, 7)];
    under_each_schedule(|s| {
        for dtype in DTYPES {
            for &(outer, d, inner) in &cases {
                let x = random(outer * d * inner, 31, 1.0);
                let mut xb = Buf::from_f32(dtype, &x);
                let mut out = Buf::zeros(dtype, outer * inner);
                let scale = 1.0 / d as f32;
                sum_middle(&L, dtype, xb.ptr(), out.ptr(), outer, d, inner, scale).unwrap();
                let want = cpu_ew::sum_middle(&rounded(dtype, &x), outer, d, inner, scale as f64);
                assert_close(
                    &format!("sum_middle_{dtype} {outer}x{d}x{inner} {s:?}"),
                    &out.to_f32(),
                    &want,
                    tol(dtype),
                );
            }
        }
    });
}

#[test]
fn softmax_matches_the_cpu() {
    // CLIP's 77, a row shorter than a warp, and a row longer than the 1024-thread block.
    let cases = [(13, 77), (9, 5), (3, 4133)];
    under_each_schedule(|s| {
        for dtype in DTYPES {
            for &(rows, cols) in &cases {
                let x = random(rows * cols, 41, 8.0);
                let mut xb = Buf::from_f32(dtype, &x);
                let mut out = Buf::zeros(dtype, rows * cols);
                softmax_last(&L, dtype, xb.ptr(), out.ptr(), rows, cols).unwrap();
                let want = cpu_ew::map_rows(&rounded(dtype, &x), cols, cpu_ew::softmax_row);
                assert_close(
                    &format!("softmax_last_{dtype} {rows}x{cols} {s:?}"),
                    &out.to_f32(),
                    &want,
                    tol(dtype),
                );
            }
        }
    });
}

#[test]
fn layer_norm_matches_the_cpu() {
    let cases = [(11, 77), (4, 1000), (3, 5)];
    under_each_schedule(|s| {
        for dtype in DTYPES {
            for &(rows, c) in &cases {
                let x: Vec<f32> = random(rows * c, 51, 3.0).iter().map(|v| v + 0.7).collect();
                let (w, b) = (random(c, 52, 1.5), random(c, 53, 0.5));
                let mut xb = Buf::from_f32(dtype, &x);
                let (mut wb, mut bb) =
                    (Buf::from_f32(DType::F32, &w), Buf::from_f32(DType::F32, &b));
                let mut out = Buf::zeros(dtype, rows * c);
                layer_norm(
                    &L,
                    dtype,
                    xb.ptr(),
                    out.ptr(),
                    wb.ptr(),
                    bb.ptr(),
                    rows,
                    c,
                    1e-5,
                )
                .unwrap();
                let want = cpu_norm::layer_norm(&rounded(dtype, &x), c, &w, &b, 1e-5);
                assert_close(
                    &format!("layer_norm_{dtype} {rows}x{c} {s:?}"),
                    &out.to_f32(),
                    &want,
                    tol(dtype),
                );
            }
        }
    });
}

#[test]
fn group_norm_with_and_without_silu_matches_the_cpu() {
    // (n, c, spatial, groups): channels per group 3 and 1, a spatial size that is no multiple of
    // the block, one group spanning fewer elements than the block has threads.
    let cases = [(2, 12, 7 * 9, 4), (1, 5, 301, 5), (3, 6, 3, 2)];
    under_each_schedule(|s| {
        for dtype in DTYPES {
            for &(n, c, spatial, groups) in &cases {
                for silu in [false, true] {
                    let x: Vec<f32> = random(n * c * spatial, 61, 2.0)
                        .iter()
                        .map(|v| v - 0.3)
                        .collect();
                    let (w, b) = (random(c, 62, 1.5), random(c, 63, 0.5));
                    let mut xb = Buf::from_f32(dtype, &x);
                    let (mut wb, mut bb) =
                        (Buf::from_f32(DType::F32, &w), Buf::from_f32(DType::F32, &b));
                    let mut out = Buf::zeros(dtype, x.len());
                    let g = GroupNormGeom {
                        n,
                        c,
                        spatial,
                        groups,
                        eps: 1e-6,
                        silu,
                    };
                    group_norm(&L, dtype, xb.ptr(), out.ptr(), wb.ptr(), bb.ptr(), g).unwrap();
                    let want = cpu_norm::group_norm(
                        &rounded(dtype, &x),
                        &w,
                        &b,
                        CpuGroupNorm {
                            c,
                            spatial,
                            groups,
                            eps: 1e-6,
                            silu,
                        },
                    );
                    let what =
                        format!("group_norm_{dtype} {n}x{c}x{spatial}/{groups} silu={silu} {s:?}");
                    assert_close(&what, &out.to_f32(), &want, tol(dtype));
                }
            }
        }
    });
}
