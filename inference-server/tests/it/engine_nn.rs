//! Network ops (norms, conv2d, upsampling, attention) against naive f64 references on random
//! odd-sized inputs. Tolerance: |got - want| <= 1e-5 · (1 + |want|) unless noted; half inputs are
//! compared against the reference computed on the half-rounded values.

use crate::support::*;
use inference_server::engine::{DType, Device, EngineError, Tensor};

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

test_device!(layer_norm_over_last_dim);
fn layer_norm_over_last_dim(device: &Device) {
    let mut rng = Rng::new(20);
    let (x, xd) = rand_tensor(&mut rng, &[3, 7, 13], device);
    let (w, wd) = rand_tensor(&mut rng, &[13], device);
    let (b, _) = rand_tensor(&mut rng, &[13], device);
    let got = x
        .layer_norm(&w, &b.to_dtype(DType::F16).unwrap(), 1e-5)
        .unwrap();
    let bd: Vec<f64> = f64s(&b.to_dtype(DType::F16).unwrap().to_vec_f32().unwrap());
    let mut want = Vec::new();
    for row in f64s(&xd).chunks(13) {
        let mean = row.iter().sum::<f64>() / 13.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 13.0;
        want.extend(
            row.iter()
                .enumerate()
                .map(|(i, v)| (v - mean) / (var + 1e-5).sqrt() * wd[i] as f64 + bd[i]),
        );
    }
    assert_close("layer_norm", &got.to_vec_f32().unwrap(), &want, 1e-5);
    let err = x
        .layer_norm(&b, &w.narrow(0, 0, 12).unwrap(), 1e-5)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer_norm: bias must have shape [13], got [12]"
    );
}

#[allow(clippy::too_many_arguments)]
fn group_norm_ref(
    x: &[f64],
    n: usize,
    c: usize,
    s: usize,
    g: usize,
    w: &[f64],
    b: &[f64],
    silu: bool,
) -> Vec<f64> {
    let cpg = c / g;
    let mut out = vec![0.0; x.len()];
    for ni in 0..n {
        for gi in 0..g {
            let idx = |ci: usize, si: usize| (ni * c + gi * cpg + ci) * s + si;
            let vals: Vec<f64> = (0..cpg)
                .flat_map(|ci| (0..s).map(move |si| (ci, si)))
                .map(|(ci, si)| x[idx(ci, si)])
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            for ci in 0..cpg {
                let ch = gi * cpg + ci;
                for si in 0..s {
                    let y = (x[idx(ci, si)] - mean) / (var + 1e-6).sqrt() * w[ch] + b[ch];
                    out[idx(ci, si)] = if silu { y * sigmoid(y) } else { y };
                }
            }
        }
    }
    out
}

test_device!(group_norm_with_and_without_silu);
fn group_norm_with_and_without_silu(device: &Device) {
    let mut rng = Rng::new(21);
    let (x, xd) = rand_tensor(&mut rng, &[2, 6, 5, 7], device);
    let (w, wd) = rand_tensor(&mut rng, &[6], device);
    let (b, bd) = rand_tensor(&mut rng, &[6], device);
    for silu in [false, true] {
        let got = x.group_norm(3, &w, &b, 1e-6, silu).unwrap();
        assert_eq!(got.dims(), &[2, 6, 5, 7]);
        let want = group_norm_ref(&f64s(&xd), 2, 6, 35, 3, &f64s(&wd), &f64s(&bd), silu);
        assert_close("group_norm", &got.to_vec_f32().unwrap(), &want, 1e-5);
    }
    // [N, C, L] layout, large enough to run in parallel, f16 input.
    let (x, _) = rand_tensor(&mut rng, &[3, 10, 2011], device);
    let x = x.to_dtype(DType::F16).unwrap();
    let (w, wd) = rand_tensor(&mut rng, &[10], device);
    let (b, bd) = rand_tensor(&mut rng, &[10], device);
    let got = x.group_norm(5, &w, &b, 1e-6, true).unwrap();
    // The activation dtype flows through: an f16 input gives an f16 result, computed in f32 and
    // rounded once, so it is within one f16 rounding (2^-11 relative) of the f64 reference.
    assert_eq!(got.dtype(), DType::F16);
    let want = group_norm_ref(
        &f64s(&x.to_vec_f32().unwrap()),
        3,
        10,
        2011,
        5,
        &f64s(&wd),
        &f64s(&bd),
        true,
    );
    assert_close(
        "group_norm [N, C, L]",
        &got.to_vec_f32().unwrap(),
        &want,
        1e-3,
    );

    let err = x.group_norm(4, &w, &b, 1e-6, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "group_norm: 4 groups do not divide 10 channels"
    );
    assert!(matches!(
        x.group_norm(0, &w, &b, 1e-6, false),
        Err(EngineError::Invalid { .. })
    ));
}

#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    (n, c, h, wd): (usize, usize, usize, usize),
    (o, kh, kw): (usize, usize, usize),
    stride: usize,
    pad: usize,
) -> (Vec<f64>, usize, usize) {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (wd + 2 * pad - kw) / stride + 1;
    let mut out = vec![0.0; n * o * ho * wo];
    for ni in 0..n {
        for oi in 0..o {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b[oi]);
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * stride + i) as isize - pad as isize;
                                let ix = (xo * stride + j) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                                acc += xv * w[((oi * c + ci) * kh + i) * kw + j];
                            }
                        }
                    }
                    out[((ni * o + oi) * ho + y) * wo + xo] = acc;
                }
            }
        }
    }
    (out, ho, wo)
}

test_device!(conv2d_matches_naive_loops);
fn conv2d_matches_naive_loops(device: &Device) {
    let mut rng = Rng::new(22);
    // (n, c, h, w), (o, kh, kw), stride, padding, bias
    let cases = [
        ((2, 5, 9, 11), (4, 3, 3), 2, 1, true),
        ((2, 5, 9, 11), (4, 3, 3), 1, 1, false),
        ((1, 3, 8, 7), (6, 3, 3), 1, 0, true),
        ((3, 7, 5, 6), (5, 1, 1), 1, 0, true),
        ((1, 4, 6, 6), (3, 1, 1), 2, 0, false),
        ((1, 3, 7, 9), (2, 2, 4), 3, 2, true),
        // Padding wider than the kernel reach: whole rows and columns of zeros.
        ((1, 2, 4, 5), (3, 3, 3), 1, 3, false),
        ((1, 2, 5, 6), (2, 5, 5), 2, 4, true),
    ];
    for ((n, c, h, wd), (o, kh, kw), stride, pad, with_bias) in cases {
        let (x, xd) = rand_tensor(&mut rng, &[n, c, h, wd], device);
        let (w, wdata) = rand_tensor(&mut rng, &[o, c, kh, kw], device);
        let (b, bd) = rand_tensor(&mut rng, &[o], device);
        let bias = with_bias.then_some(&b);
        let got = x.conv2d(&w, bias, stride, pad).unwrap();
        let bd = f64s(&bd);
        let (want, ho, wo) = conv_ref(
            &f64s(&xd),
            &f64s(&wdata),
            with_bias.then_some(&bd[..]),
            (n, c, h, wd),
            (o, kh, kw),
            stride,
            pad,
        );
        assert_eq!(got.dims(), &[n, o, ho, wo]);
        let what = format!("conv2d {:?} k{kh}x{kw} s{stride} p{pad}", (n, c, h, wd));
        assert_close(&what, &got.to_vec_f32().unwrap(), &want, 1e-5);
    }
}

test_device!(conv2d_large_tiled_with_f16_weight);
fn conv2d_large_tiled_with_f16_weight(device: &Device) {
    let mut rng = Rng::new(23);
    // 64 channels × 3×3 = 576 rows of im2col; 40×45 output positions: several spatial tiles.
    let (n, c, h, wd, o) = (1, 64, 40, 45, 12);
    let (x, xd) = rand_tensor(&mut rng, &[n, c, h, wd], device);
    let (w, _) = rand_tensor(&mut rng, &[o, c, 3, 3], device);
    let w = w.to_dtype(DType::F16).unwrap();
    let (b, bd) = rand_tensor(&mut rng, &[o], device);
    let got = x.conv2d(&w, Some(&b), 1, 1).unwrap();
    let wdata = f64s(&w.to_vec_f32().unwrap());
    let (want, _, _) = conv_ref(
        &f64s(&xd),
        &wdata,
        Some(&f64s(&bd)),
        (n, c, h, wd),
        (o, 3, 3),
        1,
        1,
    );
    // 576-term sums: allow for f32 accumulation error.
    assert_close("conv2d large", &got.to_vec_f32().unwrap(), &want, 3e-5);
}

test_device!(conv2d_add_is_the_convolution_then_the_residual);
fn conv2d_add_is_the_convolution_then_the_residual(device: &Device) {
    let mut rng = Rng::new(31);
    // (n, c, h, w), (o, k), stride, padding: a batch of small images (one GEMM for the batch),
    // a Winograd-sized 3×3 (33×35 outputs, 16 channels each way), a 1×1, and a strided im2col.
    let cases = [
        ((2, 5, 9, 11), (4, 3), 1, 1),
        ((2, 16, 33, 35), (16, 3), 1, 1),
        ((1, 6, 40, 40), (5, 1), 1, 0),
        ((1, 3, 40, 40), (7, 3), 2, 1),
    ];
    for ((n, c, h, wd), (o, k), stride, pad) in cases {
        let (x, _) = rand_tensor(&mut rng, &[n, c, h, wd], device);
        let (w, _) = rand_tensor(&mut rng, &[o, c, k, k], device);
        let (b, _) = rand_tensor(&mut rng, &[o], device);
        let plain = x.conv2d(&w, Some(&b), stride, pad).unwrap();
        let (r, _) = rand_tensor(&mut rng, plain.dims(), device);
        let fused = x.conv2d_add(&w, Some(&b), stride, pad, &r).unwrap();
        assert_eq!(fused.dims(), plain.dims());
        // The same sums in the same order: (conv + bias) + residual, bit for bit.
        assert_eq!(
            fused.to_vec_f32().unwrap(),
            plain.add(&r).unwrap().to_vec_f32().unwrap(),
            "conv2d_add {:?} k{k} s{stride} p{pad}",
            (n, c, h, wd)
        );
    }
    let (x, _) = rand_tensor(&mut rng, &[1, 2, 5, 5], device);
    let (w, _) = rand_tensor(&mut rng, &[3, 2, 3, 3], device);
    let (r, _) = rand_tensor(&mut rng, &[1, 3, 4, 5], device);
    let err = x.conv2d_add(&w, None, 1, 1, &r).unwrap_err();
    assert!(
        matches!(err, EngineError::Shape { .. }) && err.to_string().contains("residual"),
        "{err}"
    );
}

test_device!(conv2d_half_weight_converted_in_channel_blocks);
fn conv2d_half_weight_converted_in_channel_blocks(device: &Device) {
    let mut rng = Rng::new(27);
    // 1200 × 3×3 = 10800 weight columns: the bf16 weight is converted ~97 output channels at a
    // time, so 100 output channels take two blocks.
    let (n, c, h, wd, o) = (1, 1200, 4, 5, 100);
    let (x, xd) = rand_tensor(&mut rng, &[n, c, h, wd], device);
    let (w, _) = rand_tensor(&mut rng, &[o, c, 3, 3], device);
    let w = w.to_dtype(DType::BF16).unwrap();
    let got = x.conv2d(&w, None, 2, 1).unwrap();
    let w32 = w.to_dtype(DType::F32).unwrap();
    let same = x.conv2d(&w32, None, 2, 1).unwrap().to_vec_f32().unwrap();
    // Same values, but gemm may order the 10800-term sums differently for a smaller block.
    assert_close(
        "conv2d bf16 vs f32 weight",
        &got.to_vec_f32().unwrap(),
        &f64s(&same),
        1e-5,
    );
    let (want, _, _) = conv_ref(
        &f64s(&xd),
        &f64s(&w32.to_vec_f32().unwrap()),
        None,
        (n, c, h, wd),
        (o, 3, 3),
        2,
        1,
    );
    // ~10^4-term sums of products in [-1, 1): f32 accumulation error up to ~1e-4 absolute.
    assert_close(
        "conv2d bf16 vs reference",
        &got.to_vec_f32().unwrap(),
        &want,
        2e-4,
    );
    // A 1x1 conv with an f16 weight goes straight to gemm.
    let (w1, _) = rand_tensor(&mut rng, &[o, c, 1, 1], device);
    let w1 = w1.to_dtype(DType::F16).unwrap();
    let got = x.conv2d(&w1, None, 1, 0).unwrap().to_vec_f32().unwrap();
    let same = x
        .conv2d(&w1.to_dtype(DType::F32).unwrap(), None, 1, 0)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_close("conv2d 1x1 f16", &got, &f64s(&same), 1e-6);
}

test_device!(conv2d_errors_name_the_op);
fn conv2d_errors_name_the_op(device: &Device) {
    let x = Tensor::zeros((1, 5, 9, 11), DType::F32, device).unwrap();
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, device).unwrap();
    let err = x.conv2d(&w, None, 1, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: input has 5 channels but weight [4, 3, 3, 3] expects 3"
    );
    let w = Tensor::zeros((4, 5, 3, 3), DType::F32, device).unwrap();
    assert_eq!(
        x.conv2d(&w, None, 0, 1).unwrap_err().to_string(),
        "conv2d: stride must be >= 1"
    );
    let err = x
        .reshape((5, 9, 11))
        .unwrap()
        .conv2d(&w, None, 1, 1)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("conv2d: input must have rank 4"),
        "{err}"
    );
    let big = Tensor::zeros((4, 5, 13, 3), DType::F32, device).unwrap();
    assert!(
        x.conv2d(&big, None, 1, 1)
            .unwrap_err()
            .to_string()
            .starts_with("conv2d: kernel 13x3")
    );
}

test_device!(upsample_nearest_doubles_h_and_w);
fn upsample_nearest_doubles_h_and_w(device: &Device) {
    let mut rng = Rng::new(24);
    let (x, xd) = rand_tensor(&mut rng, &[2, 3, 5, 7], device);
    let got = x.upsample_nearest2x().unwrap();
    assert_eq!(got.dims(), &[2, 3, 10, 14]);
    let g = got.to_vec_f32().unwrap();
    for p in 0..6 {
        for y in 0..10 {
            for xx in 0..14 {
                assert_eq!(g[(p * 10 + y) * 14 + xx], xd[(p * 5 + y / 2) * 7 + xx / 2]);
            }
        }
    }
}

/// Naive attention with an explicit score matrix, in f64.
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bh: usize,
    lq: usize,
    lk: usize,
    d: usize,
    scale: f64,
    causal: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; bh * lq * d];
    for b in 0..bh {
        for i in 0..lq {
            let keys = if causal { (i + 1).min(lk) } else { lk };
            let s: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..d)
                        .map(|t| q[(b * lq + i) * d + t] * k[(b * lk + j) * d + t])
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for t in 0..d {
                out[(b * lq + i) * d + t] = (0..keys)
                    .map(|j| e[j] * v[(b * lk + j) * d + t])
                    .sum::<f64>()
                    / sum;
            }
        }
    }
    out
}

test_device!(attention_matches_naive_softmax_across_tiles);
fn attention_matches_naive_softmax_across_tiles(device: &Device) {
    let mut rng = Rng::new(25);
    // (b, h, lq, lk, d): query tiles are 32 rows and key tiles 64, so these cross both.
    for (b, h, lq, lk, d) in [(2, 3, 37, 53, 24), (1, 2, 70, 150, 8), (1, 1, 5, 3, 7)] {
        let (q, qd) = rand_tensor(&mut rng, &[b, h, lq, d], device);
        let (k, kd) = rand_tensor(&mut rng, &[b, h, lk, d], device);
        let (v, vd) = rand_tensor(&mut rng, &[b, h, lk, d], device);
        // Scale up the logits so the softmax is peaked and the online rescaling matters.
        let scale = 3.0 / (d as f32).sqrt();
        for causal in [false, true] {
            let got = Tensor::attention(&q, &k, &v, scale, causal).unwrap();
            assert_eq!(got.dims(), &[b, h, lq, d]);
            let want = attention_ref(
                &f64s(&qd),
                &f64s(&kd),
                &f64s(&vd),
                b * h,
                lq,
                lk,
                d,
                scale as f64,
                causal,
            );
            let what = format!("attention {:?} causal={causal}", (b, h, lq, lk, d));
            assert_close(&what, &got.to_vec_f32().unwrap(), &want, 1e-5);
        }
    }
}

test_device!(attention_with_half_inputs_and_errors);
fn attention_with_half_inputs_and_errors(device: &Device) {
    let mut rng = Rng::new(26);
    let (q, _) = rand_tensor(&mut rng, &[1, 2, 33, 16], device);
    let (k, kd) = rand_tensor(&mut rng, &[1, 2, 65, 16], device);
    let (v, vd) = rand_tensor(&mut rng, &[1, 2, 65, 16], device);
    let q = q.to_dtype(DType::F16).unwrap();
    let got = Tensor::attention(&q, &k, &v, 0.25, false).unwrap();
    let qd = f64s(&q.to_vec_f32().unwrap());
    let want = attention_ref(&qd, &f64s(&kd), &f64s(&vd), 2, 33, 65, 16, 0.25, false);
    assert_close("attention f16 q", &got.to_vec_f32().unwrap(), &want, 1e-5);

    let err = Tensor::attention(&q, &k, &v.narrow(2, 0, 64).unwrap(), 0.25, false).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("attention: k [1, 2, 65, 16] and v [1, 2, 64, 16] differ"),
        "{err}"
    );
    let err = Tensor::attention(
        &q,
        &k.narrow(3, 0, 8).unwrap(),
        &v.narrow(3, 0, 8).unwrap(),
        0.25,
        false,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("must share batch, heads and head dim"),
        "{err}"
    );
    let err = Tensor::attention(&q.reshape((2, 33, 16)).unwrap(), &k, &v, 0.25, false).unwrap_err();
    assert_eq!(err.op(), Some("attention"));
}
