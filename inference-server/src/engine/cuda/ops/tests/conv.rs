//! im2col + a plain product against the CPU conv2d, and the channel-bias add.

use super::*;
use crate::engine::cpu::CpuSlice;
use crate::engine::cpu::conv::{Conv2dGeom, conv2d};
use crate::engine::cpu::gemm::Products;
use crate::engine::cuda::ops::conv::{Im2colGeom, add_channel_bias, im2col};

#[test]
fn im2col_tiles_then_gemm_equal_the_cpu_conv() {
    // (c, h, w, o, k, stride, pad, tile): 3x3 same-padding with tiles that split output rows, a
    // stride-2 downsampler, and a 1x1.
    let cases = [
        (3, 9, 11, 4, 3, 1, 1, 37),
        (5, 8, 7, 3, 3, 2, 1, 5),
        (4, 5, 6, 2, 1, 1, 0, 30),
    ];
    for dtype in DTYPES {
        for (ci, &(c, h, w, o, k, stride, pad, tile)) in cases.iter().enumerate() {
            let n = 2;
            let (ho, wo) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let kk = c * k * k;
            let x = rounded(dtype, &random(n * c * h * w, 90 + ci as u64, 1.0));
            let wt = random(o * kk, 91 + ci as u64, 1.0);
            let mut xb = Buf::from_f32(dtype, &x);
            let mut got = vec![0f32; n * o * ho * wo];
            for img in 0..n {
                let mut p0 = 0;
                while p0 < ho * wo {
                    let p = tile.min(ho * wo - p0);
                    let mut cols = Buf::zeros(dtype, kk * p);
                    let g = Im2colGeom {
                        c: c as u32,
                        h: h as u32,
                        w: w as u32,
                        kh: k as u32,
                        kw: k as u32,
                        stride: stride as u32,
                        pad: pad as u32,
                        ho: ho as u32,
                        wo: wo as u32,
                        p0: p0 as u32,
                        p: p as u32,
                        unused: 0,
                    };
                    let xi = xb.ptr() + (img * c * h * w * dtype.size_in_bytes()) as u64;
                    im2col(&L, dtype, xi, cols.ptr(), g).unwrap();
                    let cols = cols.to_f32();
                    for oc in 0..o {
                        for j in 0..p {
                            let s: f64 = (0..kk)
                                .map(|r| wt[oc * kk + r] as f64 * cols[r * p + j] as f64)
                                .sum();
                            got[(img * o + oc) * ho * wo + p0 + j] = s as f32;
                        }
                    }
                    p0 += p;
                }
            }
            let geom = Conv2dGeom {
                n,
                c,
                h,
                w,
                o,
                kh: k,
                kw: k,
                stride,
                pad,
                ho,
                wo,
            };
            let want = conv2d(&x, CpuSlice::F32(&wt), None, None, geom, Products::F32);
            // im2col only moves values, so the only difference is the sum order of the two
            // products (f64 here, f32 gemm there): 1e-5 holds for every dtype.
            assert_close(&format!("im2col_{dtype} case {ci}"), &got, &want, TOL_F32);
        }
    }
}

#[test]
fn add_channel_bias_matches_a_direct_definition() {
    for dtype in DTYPES {
        let (n, c, spatial) = (2, 5, 33);
        let x = random(n * c * spatial, 95, 2.0);
        let bias = random(c, 96, 1.0);
        let want: Vec<f32> = rounded(dtype, &x)
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias[(i / spatial) % c])
            .collect();
        let mut xb = Buf::from_f32(dtype, &x);
        let mut bb = Buf::from_f32(DType::F32, &bias);
        add_channel_bias(&L, dtype, xb.ptr(), bb.ptr(), n, c, spatial).unwrap();
        assert_close(
            &format!("add_channel_bias_{dtype}"),
            &xb.to_f32(),
            &want,
            tol(dtype),
        );
    }
}
