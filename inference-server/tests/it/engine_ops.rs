//! Engine ops against plain f64 reference loops on random odd-sized inputs.
//!
//! Tolerances (see `assert_close`: |got - want| <= tol · (1 + |want|)): 1e-5 for f32 kernels
//! against an f64 reference on inputs in [-1, 1); exact equality for pure data movement;
//! half-precision inputs are compared against the reference computed on the half-rounded values.

use std::sync::Arc;

use crate::support::*;
use half::{bf16, f16};
use inference_server::engine::{DType, Device, EngineError, Shape, SharedBytes, Tensor};

/// Row-major strides.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Multi-index of flat index `i` in `dims`.
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

/// Naive `[m, k] · [k, n]` in f64.
fn matmul_ref(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}

test_device!(constructors_accessors_and_shape_conversions);
fn constructors_accessors_and_shape_conversions(device: &Device) {
    let t = Tensor::from_vec(vec![1.0; 6], (2, 3), device).unwrap();
    assert_eq!(t.dims(), &[2, 3]);
    assert_eq!(t.elem_count(), 6);
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.device(), device);
    assert_eq!(Shape::from((2, 3, 4, 5)).elem_count(), 120);
    assert_eq!(Shape::from(vec![7usize]).rank(), 1);
    assert_eq!(Shape::from(&[1usize, 2][..]).dims(), &[1, 2]);
    assert_eq!(Shape::from((4,)).dims(), &[4]);
    assert_eq!(Shape::from((4, 5, 6)).dims(), &[4, 5, 6]);
    assert_eq!(DType::F16.size_in_bytes(), 2);
    assert_eq!(DType::BF16.to_string(), "bf16");

    let err = Tensor::from_vec(vec![1.0; 5], (2, 3), device).unwrap_err();
    assert_eq!(err.op(), Some("from_vec"));
    assert!(err.to_string().starts_with("from_vec: 5 elements"), "{err}");

    let err = Tensor::zeros((usize::MAX, 3), DType::F32, device).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "zeros: element count of shape [{}, 3] overflows",
            usize::MAX
        )
    );
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Tensor>();

    let z = Tensor::zeros((3, 5), DType::F16, device).unwrap();
    assert_eq!(z.dtype(), DType::F16);
    assert_eq!(z.to_vec_f32().unwrap(), vec![0.0; 15]);
}

#[test]
fn device_parse() {
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert_eq!(Device::parse(" CPU ").unwrap(), Device::Cpu);
    // No GPU on the machines that run the tests: a GPU is a clear start-up error saying why,
    // never a panic from a missing library.
    let err = Device::parse("cuda:1").unwrap_err();
    assert!(
        matches!(err, EngineError::DeviceUnavailable { ref device, .. } if device == "cuda:1"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("NVIDIA driver") || msg.contains("no GPU with ordinal 1"),
        "{msg}"
    );
    assert!(matches!(
        Device::parse("cuda").unwrap_err(),
        EngineError::DeviceUnavailable { .. }
    ));
    // The emulator parses in builds with the `cuda-emu` feature (this crate's tests).
    assert_eq!(Device::parse("cuda-emu").unwrap().to_string(), "cuda-emu");
    assert!(matches!(
        Device::parse("tpu:0").unwrap_err(),
        EngineError::UnknownDevice(_)
    ));
    assert!(matches!(
        Device::parse("cuda:x").unwrap_err(),
        EngineError::UnknownDevice(_)
    ));
}

test_device!(dtype_conversions_round_to_half);
fn dtype_conversions_round_to_half(device: &Device) {
    let mut rng = Rng::new(1);
    let (t, data) = rand_tensor(&mut rng, &[7, 3], device);
    let h = t.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    let want: Vec<f32> = data.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(h.to_vec_f32().unwrap(), want);
    let b = h.to_dtype(DType::BF16).unwrap();
    let want_b: Vec<f32> = want.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
    assert_eq!(b.to_vec_f32().unwrap(), want_b);
    assert_eq!(
        b.to_dtype(DType::F32).unwrap().to_vec_f32().unwrap(),
        want_b
    );
    // Large tensors convert in parallel chunks; same result.
    let big: Vec<f32> = rng.vec(100_003, -4.0, 4.0);
    let bt = Tensor::from_vec(big.clone(), 100_003, device)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let want: Vec<f32> = big.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(bt.to_vec_f32().unwrap(), want);
}

test_device!(from_shared_bytes_is_zero_copy_when_aligned);
fn from_shared_bytes_is_zero_copy_when_aligned(device: &Device) {
    let data: Vec<f32> = (0..35).map(|i| i as f32 * 0.5).collect();
    let src = Arc::new(F32Bytes(data.clone()));
    let src_ptr = src.as_bytes().as_ptr();
    let t = Tensor::from_shared_bytes(src, DType::F32, (5, 7), device).unwrap();
    // On the CPU the tensor borrows the bytes; a GPU copies them to device memory, which has
    // no host address.
    let host = |p: *const u8| matches!(device, Device::Cpu).then_some(p);
    assert_eq!(t.storage_ptr(), host(src_ptr));
    assert_eq!(t.to_vec_f32().unwrap(), data);
    // Reshape and a leading-dim narrow share the storage too.
    assert_eq!(t.reshape((7, 5)).unwrap().storage_ptr(), host(src_ptr));
    let row2 = t.narrow(0, 2, 2).unwrap();
    assert_eq!(row2.storage_ptr(), host(unsafe { src_ptr.add(2 * 7 * 4) }));
    assert_eq!(row2.to_vec_f32().unwrap(), data[14..28].to_vec());
}

test_device!(from_shared_bytes_misaligned_is_copied_and_correct);
fn from_shared_bytes_misaligned_is_copied_and_correct(device: &Device) {
    let vals: Vec<f32> = (0..13).map(|i| i as f32 - 6.25).collect();
    let raw: Vec<u8> = bytemuck::cast_slice(&vals).to_vec();
    let mut buf = vec![0u64; 8];
    bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[1..1 + raw.len()].copy_from_slice(&raw);
    let src = Arc::new(OffsetBytes {
        buf,
        skip: 1,
        len: raw.len(),
    });
    let src_ptr = src.as_bytes().as_ptr();
    let t = Tensor::from_shared_bytes(src, DType::F32, 13, device).unwrap();
    assert_ne!(t.storage_ptr(), Some(src_ptr));
    assert_eq!(t.to_vec_f32().unwrap(), vals);

    // f16 at an odd address.
    let hs: Vec<f16> = vals.iter().map(|&x| f16::from_f32(x)).collect();
    let raw: Vec<u8> = bytemuck::cast_slice(&hs).to_vec();
    let mut buf = vec![0u64; 8];
    bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[3..3 + raw.len()].copy_from_slice(&raw);
    let t = Tensor::from_shared_bytes(
        Arc::new(OffsetBytes {
            buf,
            skip: 3,
            len: raw.len(),
        }),
        DType::F16,
        13,
        device,
    )
    .unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.to_vec_f32().unwrap(), vals);

    let err =
        Tensor::from_shared_bytes(Arc::new(F32Bytes(vals)), DType::F32, 12, device).unwrap_err();
    assert!(
        err.to_string().starts_with("from_shared_bytes: 52 bytes"),
        "{err}"
    );
}

test_device!(reshape_shares_storage_and_checks_count);
fn reshape_shares_storage_and_checks_count(device: &Device) {
    let mut rng = Rng::new(2);
    let (t, data) = rand_tensor(&mut rng, &[3, 5], device);
    let r = t.reshape(vec![5, 3]).unwrap();
    assert_eq!(r.storage_ptr(), t.storage_ptr());
    assert_eq!(r.to_vec_f32().unwrap(), data);
    let err = t.reshape((4, 4)).unwrap_err();
    assert!(err.to_string().starts_with("reshape:"), "{err}");
}

test_device!(transpose_and_permute_match_index_mapping);
fn transpose_and_permute_match_index_mapping(device: &Device) {
    let mut rng = Rng::new(3);
    let dims = [3, 5, 7, 2];
    let (t, data) = rand_tensor(&mut rng, &dims, device);
    let perm = [2, 0, 3, 1];
    let p = t.permute(&perm).unwrap();
    let out_dims: Vec<usize> = perm.iter().map(|&d| dims[d]).collect();
    assert_eq!(p.dims(), &out_dims[..]);
    let in_strides = strides(&dims);
    let got = p.to_vec_f32().unwrap();
    for (i, &g) in got.iter().enumerate() {
        let oi = unravel(i, &out_dims);
        let src: usize = perm
            .iter()
            .enumerate()
            .map(|(o, &d)| oi[o] * in_strides[d])
            .sum();
        assert_eq!(g, data[src]);
    }
    let tr = t.transpose(1, 2).unwrap();
    assert_eq!(tr.dims(), &[3, 7, 5, 2]);
    assert_eq!(tr.transpose(1, 2).unwrap().to_vec_f32().unwrap(), data);
    // Half tensors keep their dtype through layout ops.
    assert_eq!(
        t.to_dtype(DType::F16)
            .unwrap()
            .transpose(0, 3)
            .unwrap()
            .dtype(),
        DType::F16
    );
    assert_eq!(t.permute(&[0, 0, 1, 2]).unwrap_err().op(), Some("permute"));
    assert_eq!(t.transpose(0, 4).unwrap_err().op(), Some("transpose"));
}

test_device!(narrow_cat_index_select);
fn narrow_cat_index_select(device: &Device) {
    let mut rng = Rng::new(4);
    let (t, data) = rand_tensor(&mut rng, &[3, 5, 7], device);
    let n = t.narrow(1, 1, 3).unwrap();
    assert_eq!(n.dims(), &[3, 3, 7]);
    let got = n.to_vec_f32().unwrap();
    for (i, &g) in got.iter().enumerate() {
        let idx = unravel(i, &[3, 3, 7]);
        assert_eq!(g, data[idx[0] * 35 + (idx[1] + 1) * 7 + idx[2]]);
    }
    assert!(
        t.narrow(1, 4, 2)
            .unwrap_err()
            .to_string()
            .starts_with("narrow: range")
    );

    // cat along the middle dim of pieces 2 + 3 recovers [3, 5, 7].
    let a = t.narrow(1, 0, 2).unwrap();
    let b = t.narrow(1, 2, 3).unwrap();
    assert_eq!(
        Tensor::cat(&[&a, &b], 1).unwrap().to_vec_f32().unwrap(),
        data
    );
    let c = Tensor::cat(&[&t, &t.to_dtype(DType::F16).unwrap()], 0).unwrap();
    assert_eq!(c.dims(), &[6, 5, 7]);
    assert_eq!(c.dtype(), DType::F32);
    let err = Tensor::cat(&[&a, &t.narrow(2, 0, 3).unwrap()], 1).unwrap_err();
    assert!(err.to_string().starts_with("cat: shapes"), "{err}");

    // Embedding lookup.
    let (w, wd) = rand_tensor(&mut rng, &[11, 5], device);
    let ids = [3u32, 0, 10, 3];
    let e = w.index_select(&ids, 0).unwrap();
    assert_eq!(e.dims(), &[4, 5]);
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| wd[i as usize * 5..i as usize * 5 + 5].to_vec())
        .collect();
    assert_eq!(e.to_vec_f32().unwrap(), want);
    let cols = w.index_select(&[4, 1], 1).unwrap().to_vec_f32().unwrap();
    let want: Vec<f32> = (0..11)
        .flat_map(|r| [wd[r * 5 + 4], wd[r * 5 + 1]])
        .collect();
    assert_eq!(cols, want);
    let err = w.index_select(&[2, 11], 0).unwrap_err();
    assert!(matches!(
        err,
        EngineError::Invalid {
            op: "index_select",
            ..
        }
    ));
    assert!(err.to_string().contains("id 11 out of range"), "{err}");
}

test_device!(broadcast_binary_ops);
fn broadcast_binary_ops(device: &Device) {
    let mut rng = Rng::new(5);
    let (a, ad) = rand_tensor(&mut rng, &[3, 1, 5], device);
    let (b, bd) = rand_tensor(&mut rng, &[4, 1], device);
    let b = b.to_dtype(DType::F16).unwrap();
    let bd: Vec<f32> = bd.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    type Op = fn(f64, f64) -> f64;
    let cases: [(&str, Op); 4] = [
        ("add", |x, y| x + y),
        ("sub", |x, y| x - y),
        ("mul", |x, y| x * y),
        ("div", |x, y| x / y),
    ];
    for (name, f) in cases {
        let got = match name {
            "add" => a.add(&b),
            "sub" => a.sub(&b),
            "mul" => a.mul(&b),
            _ => a.div(&b),
        }
        .unwrap();
        assert_eq!(got.dims(), &[3, 4, 5]);
        assert_eq!(got.dtype(), DType::F32);
        let want: Vec<f64> = (0..60)
            .map(|i| {
                let idx = unravel(i, &[3, 4, 5]);
                f(ad[idx[0] * 5 + idx[2]] as f64, bd[idx[1]] as f64)
            })
            .collect();
        assert_close(name, &got.to_vec_f32().unwrap(), &want, 1e-6);
    }
    // Same-shape, scalar-like and a large parallel case.
    let (c, cd) = rand_tensor(&mut rng, &[301, 257], device);
    let (bias, biasd) = rand_tensor(&mut rng, &[257], device);
    let got = c.add(&bias).unwrap().to_vec_f32().unwrap();
    let want: Vec<f64> = (0..301 * 257)
        .map(|i| cd[i] as f64 + biasd[i % 257] as f64)
        .collect();
    assert_close("large add", &got, &want, 1e-6);
    let err = a
        .add(&Tensor::zeros((3, 2), DType::F32, device).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("add: shapes [3, 1, 5] and [3, 2] do not broadcast"),
        "{err}"
    );
}

/// erf by its Taylor series (accurate in f64 for |x| <= 4).
fn erf_ref(x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

test_device!(activations_and_affine);
fn activations_and_affine(device: &Device) {
    let mut rng = Rng::new(6);
    let data = rng.vec(13 * 7, -5.0, 5.0);
    let t = Tensor::from_vec(data.clone(), (13, 7), device).unwrap();
    let x = f64s(&data);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let check = |name: &str, got: Tensor, f: &dyn Fn(f64) -> f64| {
        let want: Vec<f64> = x.iter().map(|&v| f(v)).collect();
        assert_close(name, &got.to_vec_f32().unwrap(), &want, 1e-5);
    };
    check("gelu", t.gelu().unwrap(), &|v| {
        0.5 * v * (1.0 + erf_ref(v / 2f64.sqrt()))
    });
    check("gelu_quick", t.gelu_quick().unwrap(), &|v| {
        v * sig(1.702 * v)
    });
    check("silu", t.silu().unwrap(), &|v| v * sig(v));
    check("affine", t.affine(0.3, -1.5).unwrap(), &|v| v * 0.3 - 1.5);
    check("exp", t.exp().unwrap(), &f64::exp);
    check("clamp", t.clamp(-1.0, 2.5).unwrap(), &|v| {
        v.clamp(-1.0, 2.5)
    });
    assert_eq!(t.clamp(1.0, -1.0).unwrap_err().op(), Some("clamp"));
    let f = Tensor::full(0.5, (2, 3), device).unwrap();
    assert_eq!(f.to_vec_f32().unwrap(), vec![0.5; 6]);
    check("sqrt", t.affine(0.0, 2.0).unwrap().sqrt().unwrap(), &|_| {
        2f64.sqrt()
    });
    // Relative accuracy of gelu deep in the negative tail, where erf cancels.
    let tail = Tensor::from_vec(vec![-4.0, -6.0], 2, device)
        .unwrap()
        .gelu()
        .unwrap()
        .to_vec_f32()
        .unwrap();
    for (g, v) in tail.iter().zip([-4.0f64, -6.0]) {
        let want = 0.5 * v * libm_erfc_tail(-v / 2f64.sqrt());
        assert!(
            ((*g as f64 - want) / want).abs() < 1e-5,
            "gelu({v}) = {g}, want {want}"
        );
    }
}

/// erfc(z) for z >= 2 by its continued fraction (Lentz), for the gelu tail check.
fn libm_erfc_tail(z: f64) -> f64 {
    let mut f = 0.0;
    for k in (1..200).rev() {
        f = (k as f64 / 2.0) / (z + f);
    }
    (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
}

test_device!(softmax_is_stable_on_large_values);
fn softmax_is_stable_on_large_values(device: &Device) {
    let mut rng = Rng::new(7);
    let mut data = rng.vec(5 * 11, -3.0, 3.0);
    for (i, v) in data.iter_mut().enumerate() {
        *v += if i < 22 { 1000.0 } else { -1000.0 } * ((i % 3) as f32);
    }
    let t = Tensor::from_vec(data.clone(), (5, 11), device).unwrap();
    let got = t.softmax_last_dim().unwrap().to_vec_f32().unwrap();
    let mut want = Vec::new();
    for row in f64s(&data).chunks(11) {
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        want.extend(row.iter().map(|v| (v - max).exp() / sum));
    }
    assert!(got.iter().all(|v| v.is_finite()));
    assert_close("softmax", &got, &want, 1e-5);
}

test_device!(sum_and_mean_over_a_dim);
fn sum_and_mean_over_a_dim(device: &Device) {
    let mut rng = Rng::new(8);
    let (t, d) = rand_tensor(&mut rng, &[3, 5, 7], device);
    let s = t.sum_dim(1, false).unwrap();
    assert_eq!(s.dims(), &[3, 7]);
    let want: Vec<f64> = (0..21)
        .map(|i| (0..5).map(|j| d[(i / 7) * 35 + j * 7 + i % 7] as f64).sum())
        .collect();
    assert_close("sum_dim", &s.to_vec_f32().unwrap(), &want, 1e-6);
    let m = t.mean_dim(1, true).unwrap();
    assert_eq!(m.dims(), &[3, 1, 7]);
    let want: Vec<f64> = want.iter().map(|v| v / 5.0).collect();
    assert_close("mean_dim", &m.to_vec_f32().unwrap(), &want, 1e-6);
    assert_eq!(t.sum_dim(3, false).unwrap_err().op(), Some("sum_dim"));
}

test_device!(matmul_plain_batched_and_broadcast);
fn matmul_plain_batched_and_broadcast(device: &Device) {
    let mut rng = Rng::new(9);
    let (a, ad) = rand_tensor(&mut rng, &[7, 13], device);
    let (b, bd) = rand_tensor(&mut rng, &[13, 5], device);
    let got = a.matmul(&b).unwrap();
    assert_eq!(got.dims(), &[7, 5]);
    assert_close(
        "matmul",
        &got.to_vec_f32().unwrap(),
        &matmul_ref(&f64s(&ad), &f64s(&bd), 7, 13, 5),
        1e-5,
    );

    // Batch 3 on both sides.
    let (a, ad) = rand_tensor(&mut rng, &[3, 7, 13], device);
    let (b, bd) = rand_tensor(&mut rng, &[3, 13, 5], device);
    let got = a.matmul(&b).unwrap().to_vec_f32().unwrap();
    let mut want = Vec::new();
    for i in 0..3 {
        want.extend(matmul_ref(
            &f64s(&ad[i * 91..(i + 1) * 91]),
            &f64s(&bd[i * 65..(i + 1) * 65]),
            7,
            13,
            5,
        ));
    }
    assert_close("batched matmul", &got, &want, 1e-5);

    // [3, 1, 7, 13] x [2, 13, 5] -> [3, 2, 7, 5].
    let (a, ad) = rand_tensor(&mut rng, &[3, 1, 7, 13], device);
    let (b, bd) = rand_tensor(&mut rng, &[2, 13, 5], device);
    let got = a.matmul(&b).unwrap();
    assert_eq!(got.dims(), &[3, 2, 7, 5]);
    let mut want = Vec::new();
    for i in 0..3 {
        for j in 0..2 {
            want.extend(matmul_ref(
                &f64s(&ad[i * 91..(i + 1) * 91]),
                &f64s(&bd[j * 65..(j + 1) * 65]),
                7,
                13,
                5,
            ));
        }
    }
    assert_close("broadcast matmul", &got.to_vec_f32().unwrap(), &want, 1e-5);

    // Rank 2 against a batch: [7, 13] x [3, 13, 5] -> [3, 7, 5].
    let (a, ad) = rand_tensor(&mut rng, &[7, 13], device);
    let got = a.matmul(&b.reshape((2, 13, 5)).unwrap()).unwrap();
    assert_eq!(got.dims(), &[2, 7, 5]);
    let mut want = Vec::new();
    for j in 0..2 {
        want.extend(matmul_ref(
            &f64s(&ad),
            &f64s(&bd[j * 65..(j + 1) * 65]),
            7,
            13,
            5,
        ));
    }
    assert_close(
        "rank-2 x batch matmul",
        &got.to_vec_f32().unwrap(),
        &want,
        1e-5,
    );

    // Large enough for the multi-threaded gemm path, with an f16 operand.
    let (a, ad) = rand_tensor(&mut rng, &[131, 149], device);
    let (b, _) = rand_tensor(&mut rng, &[149, 67], device);
    let b = b.to_dtype(DType::F16).unwrap();
    let got = a.matmul(&b).unwrap().to_vec_f32().unwrap();
    let bd = f64s(&b.to_vec_f32().unwrap());
    assert_close(
        "large matmul",
        &got,
        &matmul_ref(&f64s(&ad), &bd, 131, 149, 67),
        1e-5,
    );

    let (c, _) = rand_tensor(&mut rng, &[4, 3], device);
    let err = c.matmul(&a).unwrap_err();
    assert_eq!(
        err.to_string(),
        "matmul: inner dims 3 and 131 differ ([4, 3] x [131, 149])"
    );
    let err = a
        .matmul(&Tensor::zeros(5, DType::F32, device).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("matmul: operands need rank >= 2"),
        "{err}"
    );
}

/// `x [rows, in] · w [out, in]ᵀ + b` in f64.
fn linear_ref(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    rows: usize,
    n_in: usize,
    n_out: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * n_out];
    for r in 0..rows {
        for o in 0..n_out {
            let dot: f64 = (0..n_in).map(|i| x[r * n_in + i] * w[o * n_in + i]).sum();
            out[r * n_out + o] = dot + b.map_or(0.0, |b| b[o]);
        }
    }
    out
}

test_device!(linear_f32_with_bias_over_leading_dims);
fn linear_f32_with_bias_over_leading_dims(device: &Device) {
    let mut rng = Rng::new(10);
    let (x, xd) = rand_tensor(&mut rng, &[2, 3, 13], device);
    let (w, wd) = rand_tensor(&mut rng, &[5, 13], device);
    let (b, bd) = rand_tensor(&mut rng, &[5], device);
    let got = x.linear(&w, Some(&b)).unwrap();
    assert_eq!(got.dims(), &[2, 3, 5]);
    let want = linear_ref(&f64s(&xd), &f64s(&wd), Some(&f64s(&bd)), 6, 13, 5);
    assert_close("linear", &got.to_vec_f32().unwrap(), &want, 1e-5);
    let want = linear_ref(&f64s(&xd), &f64s(&wd), None, 6, 13, 5);
    assert_close(
        "linear no bias",
        &x.linear(&w, None).unwrap().to_vec_f32().unwrap(),
        &want,
        1e-5,
    );

    let err = x
        .linear(&Tensor::zeros((5, 12), DType::F32, device).unwrap(), None)
        .unwrap_err();
    assert!(
        err.to_string().starts_with("linear: input features 13"),
        "{err}"
    );
    let err = x
        .linear(&w, Some(&Tensor::zeros(4, DType::F32, device).unwrap()))
        .unwrap_err();
    assert_eq!(err.to_string(), "linear: bias must have shape [5], got [4]");
}

test_device!(linear_geglu_is_linear_then_geglu);
fn linear_geglu_is_linear_then_geglu(device: &Device) {
    let mut rng = Rng::new(12);
    // 16 in-features (even: the CPU's fused bf16 path takes it), 2 × 35 out-features (the gate
    // pairs do not fill a 32-wide panel evenly).
    let (x, _) = rand_tensor(&mut rng, &[2, 3, 16], device);
    let (w, _) = rand_tensor(&mut rng, &[70, 16], device);
    let (b, _) = rand_tensor(&mut rng, &[70], device);
    let got = x.linear_geglu(&w, Some(&b)).unwrap();
    assert_eq!(got.dims(), &[2, 3, 35]);
    let want = x.linear(&w, Some(&b)).unwrap().geglu().unwrap();
    let want64 = f64s(&want.to_vec_f32().unwrap());
    // f32: the same product and gate (fused or not), up to summation order.
    assert_close(
        "linear_geglu f32",
        &got.to_vec_f32().unwrap(),
        &want64,
        1e-5,
    );
    // bf16 activations and weights: fused from the unrounded sums on the CPU, so within a
    // couple of bf16 steps (2^-8 each) of the unfused result, which rounds a and gate first.
    let (xb, wb) = (
        x.to_dtype(DType::BF16).unwrap(),
        w.to_dtype(DType::BF16).unwrap(),
    );
    let got = xb.linear_geglu(&wb, Some(&b)).unwrap();
    assert_eq!((got.dims(), got.dtype()), (&[2, 3, 35][..], DType::BF16));
    let want = xb.linear(&wb, Some(&b)).unwrap().geglu().unwrap();
    let want64 = f64s(&want.to_vec_f32().unwrap());
    assert_close(
        "linear_geglu bf16",
        &got.to_vec_f32().unwrap(),
        &want64,
        3e-2,
    );

    let (odd, _) = rand_tensor(&mut rng, &[9, 16], device);
    let err = x.linear_geglu(&odd, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "linear_geglu: GEGLU needs an even number of out-features, got 9"
    );
}

test_device!(linear_half_weights_match_their_f32_conversion);
fn linear_half_weights_match_their_f32_conversion(device: &Device) {
    let mut rng = Rng::new(11);
    // 1031 in-features: the f16 path converts several blocks of weight rows.
    let (n_in, n_out, rows) = (1031, 1109, 3);
    let (x, xd) = rand_tensor(&mut rng, &[rows, n_in], device);
    let (w32, _) = rand_tensor(&mut rng, &[n_out, n_in], device);
    let (b, bd) = rand_tensor(&mut rng, &[n_out], device);
    for dtype in [DType::F16, DType::BF16] {
        let wh = w32.to_dtype(dtype).unwrap();
        let wr = wh.to_dtype(DType::F32).unwrap();
        let got = x.linear(&wh, Some(&b)).unwrap().to_vec_f32().unwrap();
        let same = x.linear(&wr, Some(&b)).unwrap().to_vec_f32().unwrap();
        assert_close(&format!("linear {dtype} vs f32"), &got, &f64s(&same), 1e-6);
        let want = linear_ref(
            &f64s(&xd),
            &f64s(&wr.to_vec_f32().unwrap()),
            Some(&f64s(&bd)),
            rows,
            n_in,
            n_out,
        );
        // k = 1031 terms of magnitude ~0.25 each: f32 accumulation error ~ eps·k·0.25 ≈ 2e-5.
        assert_close(&format!("linear {dtype} vs reference"), &got, &want, 5e-5);
    }
}

test_device!(linear_with_mmap_backed_f16_weight);
fn linear_with_mmap_backed_f16_weight(device: &Device) {
    let mut rng = Rng::new(12);
    let (n_in, n_out) = (37, 29);
    let w: Vec<f16> = rng
        .vec(n_in * n_out, -1.0, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let mut file = tempfile::tempfile().unwrap();
    // An 8-byte header like safetensors', then the weight.
    use std::io::Write;
    file.write_all(&[0u8; 8]).unwrap();
    file.write_all(bytemuck::cast_slice(&w)).unwrap();
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file).unwrap() });
    let slice = MmapSlice {
        map: map.clone(),
        start: 8,
        len: n_in * n_out * 2,
    };
    let wt = Tensor::from_shared_bytes(Arc::new(slice), DType::F16, (n_out, n_in), device).unwrap();
    assert_eq!(
        wt.storage_ptr(),
        matches!(device, Device::Cpu).then_some(map[8..].as_ptr())
    );
    let (x, xd) = rand_tensor(&mut rng, &[9, n_in], device);
    let got = x.linear(&wt, None).unwrap().to_vec_f32().unwrap();
    let wd: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
    assert_close(
        "mmap linear",
        &got,
        &linear_ref(&f64s(&xd), &wd, None, 9, n_in, n_out),
        1e-5,
    );
}

test_device!(geglu_chunk_squeeze_and_trig);
fn geglu_chunk_squeeze_and_trig(device: &Device) {
    let mut rng = Rng::new(13);
    let (x, xd) = rand_tensor(&mut rng, &[3, 5, 14], device);
    let got = x.geglu().unwrap();
    assert_eq!(got.dims(), &[3, 5, 7]);
    let want: Vec<f64> = (0..105)
        .map(|i| {
            let (r, j) = (i / 7, i % 7);
            let (a, g) = (xd[r * 14 + j] as f64, xd[r * 14 + 7 + j] as f64);
            a * 0.5 * g * (1.0 + erf_ref(g / 2f64.sqrt()))
        })
        .collect();
    assert_close("geglu", &got.to_vec_f32().unwrap(), &want, 1e-5);
    assert!(
        x.narrow(2, 0, 13)
            .unwrap()
            .geglu()
            .unwrap_err()
            .to_string()
            .starts_with("geglu: last dim 13")
    );

    let parts = x.chunk(2, 2).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[1].to_vec_f32().unwrap(),
        x.narrow(2, 7, 7).unwrap().to_vec_f32().unwrap()
    );
    assert_eq!(x.chunk(4, 2).unwrap_err().op(), Some("chunk"));
    let u = x.unsqueeze(1).unwrap();
    assert_eq!(u.dims(), &[3, 1, 5, 14]);
    assert_eq!(u.storage_ptr(), x.storage_ptr());
    assert_eq!(u.squeeze(1).unwrap().dims(), &[3, 5, 14]);
    assert_eq!(x.squeeze(0).unwrap_err().op(), Some("squeeze"));
    assert_eq!(x.unsqueeze(3).unwrap().dims(), &[3, 5, 14, 1]);
    assert_eq!(x.to_device(device).unwrap().storage_ptr(), x.storage_ptr());

    let s = x.sin().unwrap().to_vec_f32().unwrap();
    let c = x.cos().unwrap().to_vec_f32().unwrap();
    assert_close(
        "sin",
        &s,
        &f64s(&xd).iter().map(|v| v.sin()).collect::<Vec<_>>(),
        1e-6,
    );
    assert_close(
        "cos",
        &c,
        &f64s(&xd).iter().map(|v| v.cos()).collect::<Vec<_>>(),
        1e-6,
    );
}
