//! im2col + a plain product against the CPU conv2d, the channel-bias add, and the
//! implicit-GEMM kernels (CUDA-core and tensor-core) with their fused bias/residual epilogue.

use super::*;
use crate::engine::cpu::CpuSlice;
use crate::engine::cpu::conv::{Conv2dGeom, conv2d, conv2d_im2col};
use crate::engine::cpu::gemm::Products;
use crate::engine::cuda::ops::conv::{Im2colGeom, add_channel_bias, im2col};
use crate::engine::cuda::ops::conv_igemm::implicit_gemm;

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

/// One implicit-GEMM case: (c, h, w, o, k, stride, pad, with bias, with residual).
type IgemmCase = (usize, usize, usize, usize, usize, usize, usize, bool, bool);

/// All with n = 2 images and no size a multiple of the 64 × 64 × 16/32 tiles: 3x3
/// same-padding, a stride-2 downsampler, a 1x1, channels on both sides of the GEMM beyond one
/// tile (K = 360), and a 5x5 stride 2 with o = 66 (one channel into the second M tile); every
/// bias/residual combination.
const IGEMM_CASES: [IgemmCase; 5] = [
    (5, 9, 11, 7, 3, 1, 1, true, false),
    (6, 9, 8, 5, 3, 2, 1, false, true),
    (7, 6, 5, 9, 1, 1, 0, false, false),
    (40, 10, 10, 70, 3, 1, 1, true, true),
    (3, 11, 13, 66, 5, 2, 2, true, true),
];

/// Runs every [`IGEMM_CASES`] entry through [`implicit_gemm`] (`tensor_cores` picks the mma
/// kernel for f16) under each emulator schedule and compares with the CPU's im2col conv2d on
/// the same (dtype-rounded) values.
fn check_igemm(dtype: DType, tensor_cores: bool, tol: f32) {
    under_each_schedule(|s| {
        for (ci, &(c, h, w, o, k, stride, pad, has_bias, has_res)) in IGEMM_CASES.iter().enumerate()
        {
            let n = 2;
            let (ho, wo) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let seed = 200 + 4 * ci as u64;
            let x = rounded(dtype, &random(n * c * h * w, seed, 1.0));
            let wt = rounded(dtype, &random(o * c * k * k, seed + 1, 1.0));
            let bias = random(o, seed + 2, 1.0);
            let res = rounded(dtype, &random(n * o * ho * wo, seed + 3, 2.0));
            let (mut xb, mut wb) = (Buf::from_f32(dtype, &x), Buf::from_f32(dtype, &wt));
            let mut bb = Buf::from_f32(DType::F32, &bias);
            let mut rb = Buf::from_f32(dtype, &res);
            // NaN-filled: an output the kernel skips shows as an infinite error.
            let mut out = Buf::from_f32(dtype, &vec![f32::NAN; n * o * ho * wo]);
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
            implicit_gemm(
                &L,
                dtype,
                tensor_cores,
                xb.ptr(),
                wb.ptr(),
                has_bias.then(|| bb.ptr()),
                has_res.then(|| rb.ptr()),
                out.ptr(),
                geom,
            )
            .unwrap();
            // The CPU's im2col path, not its default Winograd one, whose transforms add
            // rounding of their own that the f32 bound would have to absorb.
            let want = conv2d_im2col(
                &x,
                CpuSlice::F32(&wt),
                has_bias.then_some(&bias[..]),
                has_res.then_some(&res[..]),
                geom,
                Products::F32,
            );
            let path = if tensor_cores && dtype == DType::F16 {
                "mma"
            } else {
                "simt"
            };
            assert_close(
                &format!(
                    "conv_igemm_{dtype} {path} case {ci} (c={c} {h}x{w} o={o} k={k} s={stride} \
                     p={pad} bias={has_bias} res={has_res}) {s:?}"
                ),
                &out.to_f32(),
                &want,
                tol,
            );
        }
    });
}

#[test]
fn implicit_gemm_f32_matches_the_cpu() {
    // Both sides sum up to 360 f32 products in different orders: measured 3.0e-6 (the K = 360
    // case; about 1e-6 elsewhere), bound 1e-5.
    check_igemm(DType::F32, false, TOL_F32);
}

#[test]
fn implicit_gemm_half_dtypes_match_the_cpu() {
    // Same f32 sums on dtype-rounded inputs; the error is the output's single rounding (2^-11
    // f16, 2^-8 bf16, relative): measured f16 4.9e-4, bf16 3.9e-3.
    check_igemm(DType::F16, false, TOL_F16);
    check_igemm(DType::BF16, false, TOL_BF16);
}

#[test]
fn tensor_core_implicit_gemm_f16_matches_the_cpu() {
    // f16 × f16 products are exact in f32 and accumulate in f32, so only the output rounding
    // differs, as on the CUDA-core path: measured 4.9e-4, bound TOL_F16.
    check_igemm(DType::F16, true, TOL_F16);
}

#[test]
fn implicit_gemm_refuses_what_it_cannot_index_and_skips_empty_outputs() {
    let g = Conv2dGeom {
        n: 1,
        c: 1 << 20,
        h: 4,
        w: 4,
        o: 1,
        kh: 64,
        kw: 64,
        stride: 1,
        pad: 30,
        ho: 1,
        wo: 1,
    };
    // K = 2^32: the kernels' k index would wrap. Null pointers: nothing may be launched.
    let err = implicit_gemm(&L, DType::F32, false, 0, 0, None, None, 0, g).unwrap_err();
    assert!(err.to_string().contains("32-bit"), "{err}");
    let many = Conv2dGeom {
        n: 70_000,
        c: 1,
        kh: 1,
        kw: 1,
        pad: 0,
        ho: 4,
        wo: 4,
        ..g
    };
    let err = implicit_gemm(&L, DType::F16, true, 0, 0, None, None, 0, many).unwrap_err();
    assert!(err.to_string().contains("65535"), "{err}");
    let empty = Conv2dGeom { o: 0, ..many };
    implicit_gemm(&L, DType::F16, true, 0, 0, None, None, 0, empty).unwrap();
}
