//! The CUDA backend through the public `Tensor` API on the `cuda-emu` device, against the CPU
//! backend: every op of the backend trait, on sizes that are not multiples of the kernels'
//! tiles. f32 within 1e-5 (relative for |x| ≥ 1, else absolute): the kernels compute in f32
//! like the CPU, only the summation order differs.

use crate::engine::{DType, Device, Tensor};

/// The device under test: `cuda-emu`, or the one `SDSERVE_TEST_DEVICE` names (`cuda:0` in
/// `scripts/gpu-check.sh`, which reruns these tests on a real GPU).
pub(super) fn emu() -> Device {
    let spec = std::env::var("SDSERVE_TEST_DEVICE").unwrap_or_else(|_| "cuda-emu".into());
    Device::parse(&spec).unwrap_or_else(|e| panic!("device under test {spec:?}: {e}"))
}

/// Deterministic values in [-1, 1): the kernel tests' generator.
pub(super) fn values(n: usize, seed: u64) -> Vec<f32> {
    super::ops::tests::random(n, seed, 1.0)
}

/// The same random tensor on the CPU and on the emulated GPU.
fn pair(dims: &[usize], seed: u64) -> (Tensor, Tensor) {
    let n = dims.iter().product();
    let cpu = Tensor::from_vec(values(n, seed), dims, &Device::Cpu).unwrap();
    let gpu = cpu.to_device(&emu()).unwrap();
    (cpu, gpu)
}

fn close(what: &str, cpu: &Tensor, gpu: &Tensor, tol: f32) {
    assert_eq!(cpu.dims(), gpu.dims(), "{what}: dims");
    assert_eq!(cpu.dtype(), gpu.dtype(), "{what}: dtype");
    assert_eq!(gpu.device(), &emu(), "{what}: result left the device");
    let (a, b) = (cpu.to_vec_f32().unwrap(), gpu.to_vec_f32().unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * x.abs().max(1.0),
            "{what}: element {i}: cpu {x}, cuda-emu {y}"
        );
    }
}

#[test]
fn elementwise_reduce_and_layout_ops_match_the_cpu() {
    let (c, g) = pair(&[3, 37, 29], 1);
    let (cb, gb) = pair(&[37, 1], 2);
    close("silu", &c.silu().unwrap(), &g.silu().unwrap(), 1e-5);
    close("gelu", &c.gelu().unwrap(), &g.gelu().unwrap(), 1e-5);
    close(
        "affine",
        &c.affine(1.5, -0.25).unwrap(),
        &g.affine(1.5, -0.25).unwrap(),
        1e-5,
    );
    close(
        "clamp",
        &c.clamp(-0.5, 0.25).unwrap(),
        &g.clamp(-0.5, 0.25).unwrap(),
        0.0,
    );
    close(
        "mul broadcast",
        &c.mul(&cb).unwrap(),
        &g.mul(&gb).unwrap(),
        1e-6,
    );
    close(
        "sub broadcast",
        &cb.sub(&c).unwrap(),
        &gb.sub(&g).unwrap(),
        1e-6,
    );
    close(
        "softmax",
        &c.softmax_last_dim().unwrap(),
        &g.softmax_last_dim().unwrap(),
        1e-5,
    );
    close(
        "mean_dim",
        &c.mean_dim(1, true).unwrap(),
        &g.mean_dim(1, true).unwrap(),
        1e-5,
    );
    close(
        "permute",
        &c.permute(&[2, 0, 1]).unwrap(),
        &g.permute(&[2, 0, 1]).unwrap(),
        0.0,
    );
    close(
        "narrow",
        &c.narrow(1, 5, 17).unwrap(),
        &g.narrow(1, 5, 17).unwrap(),
        0.0,
    );
    let (cc, gc) = (
        Tensor::cat(&[&c, &c.narrow(2, 0, 3).unwrap()], 2).unwrap(),
        Tensor::cat(&[&g, &g.narrow(2, 0, 3).unwrap()], 2).unwrap(),
    );
    close("cat", &cc, &gc, 0.0);
    close(
        "index_select",
        &c.index_select(&[4, 0, 36, 4], 1).unwrap(),
        &g.index_select(&[4, 0, 36, 4], 1).unwrap(),
        0.0,
    );
    let (c2, g2) = pair(&[5, 2 * 45], 3);
    close("geglu", &c2.geglu().unwrap(), &g2.geglu().unwrap(), 1e-5);
    let h = g.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    close(
        "to_dtype round trip",
        &c.to_dtype(DType::F16).unwrap(),
        &h,
        0.0,
    );
}

#[test]
fn nn_ops_match_the_cpu() {
    let (x, gx) = pair(&[2, 12, 9, 11], 4);
    let (w, gw) = pair(&[12], 5);
    let (b, gb) = pair(&[12], 6);
    close(
        "group_norm+silu",
        &x.group_norm(4, &w, &b, 1e-5, true).unwrap(),
        &gx.group_norm(4, &gw, &gb, 1e-5, true).unwrap(),
        1e-5,
    );
    let (cw, gcw) = pair(&[7, 12, 3, 3], 7);
    let cw16 = cw.to_dtype(DType::F16).unwrap();
    let (cbias, gcbias) = pair(&[7], 8);
    for (stride, pad) in [(1, 1), (2, 0)] {
        let want = x.conv2d(&cw16, Some(&cbias), stride, pad).unwrap();
        let got = gx
            .conv2d(
                &gcw.to_dtype(DType::F16).unwrap(),
                Some(&gcbias),
                stride,
                pad,
            )
            .unwrap();
        close("conv2d", &want, &got, 1e-5);
        // The fused residual (a ResNet block's skip connection).
        let (r, gr) = pair(want.dims(), 10);
        close(
            "conv2d_add",
            &x.conv2d_add(&cw16, Some(&cbias), stride, pad, &r).unwrap(),
            &gx.conv2d_add(
                &gcw.to_dtype(DType::F16).unwrap(),
                Some(&gcbias),
                stride,
                pad,
                &gr,
            )
            .unwrap(),
            1e-5,
        );
    }
    let (pw, gpw) = pair(&[5, 12, 1, 1], 9);
    close(
        "conv2d 1x1",
        &x.conv2d(&pw, None, 1, 0).unwrap(),
        &gx.conv2d(&gpw, None, 1, 0).unwrap(),
        1e-5,
    );
    close(
        "upsample",
        &x.upsample_nearest2x().unwrap(),
        &gx.upsample_nearest2x().unwrap(),
        0.0,
    );
    close(
        "pad2d",
        &x.pad2d(0, 1, 0, 1).unwrap(),
        &gx.pad2d(0, 1, 0, 1).unwrap(),
        0.0,
    );
    let (t, gt) = pair(&[3, 19, 40], 10);
    let (lw, glw) = pair(&[33, 40], 11);
    let (lb, glb) = pair(&[33], 12);
    close(
        "linear",
        &t.linear(&lw, Some(&lb)).unwrap(),
        &gt.linear(&glw, Some(&glb)).unwrap(),
        1e-5,
    );
    // A bias that is a view one element into its buffer: 4-byte aligned, where fresh buffers
    // are 256 (cuBLASLt chooses its kernel by the bias pointer's alignment).
    let (lb2, glb2) = pair(&[34], 16);
    close(
        "linear, bias view at an offset",
        &t.linear(&lw, Some(&lb2.narrow(0, 1, 33).unwrap())).unwrap(),
        &gt.linear(&glw, Some(&glb2.narrow(0, 1, 33).unwrap()))
            .unwrap(),
        1e-5,
    );
    let (nw, gnw) = pair(&[40], 13);
    let (nb, gnb) = pair(&[40], 14);
    close(
        "layer_norm",
        &t.layer_norm(&nw, &nb, 1e-5).unwrap(),
        &gt.layer_norm(&gnw, &gnb, 1e-5).unwrap(),
        1e-5,
    );
    let (m, gm) = pair(&[3, 40, 17], 15);
    close(
        "matmul batched",
        &t.matmul(&m).unwrap(),
        &gt.matmul(&gm).unwrap(),
        1e-5,
    );
    let (a, ga) = pair(&[2, 1, 19, 40], 16);
    let (bm, gbm) = pair(&[1, 3, 40, 17], 17);
    close(
        "matmul broadcast",
        &a.matmul(&bm).unwrap(),
        &ga.matmul(&gbm).unwrap(),
        1e-5,
    );
}

#[test]
fn attention_matches_the_cpu_fused_and_unfused() {
    for (d, causal) in [(40, false), (64, true), (512, false)] {
        let (q, gq) = pair(&[2, 3, 37, d], 20);
        let (k, gk) = pair(&[2, 3, 45, d], 21);
        let (v, gv) = pair(&[2, 3, 45, d], 22);
        let (lk, glk) = if causal {
            (q.clone(), gq.clone())
        } else {
            (k, gk)
        };
        let (lv, glv) = if causal {
            (q.clone(), gq.clone())
        } else {
            (v, gv)
        };
        let scale = 1.0 / (d as f32).sqrt();
        let want = Tensor::attention(&q, &lk, &lv, scale, causal).unwrap();
        let got = Tensor::attention(&gq, &glk, &glv, scale, causal).unwrap();
        close(
            &format!("attention d={d} causal={causal}"),
            &want,
            &got,
            1e-5,
        );
        // f16 takes the tensor-core (mma.sync) kernel: within f16 rounding of the f32 result.
        if d <= 160 {
            let h = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
            let got16 = Tensor::attention(&h(&gq), &h(&glk), &h(&glv), scale, causal).unwrap();
            close(
                &format!("attention f16 d={d}"),
                &want.to_dtype(DType::F16).unwrap(),
                &got16,
                4e-3,
            );
        }
    }
}

#[test]
fn operands_on_two_devices_are_an_error_naming_them() {
    let (c, g) = pair(&[4, 4], 30);
    let err = c.add(&g).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("add: operands are on different devices (cpu and {})", emu())
    );
}

#[test]
fn both_conv2d_paths_and_the_measured_choice_match_the_cpu() {
    use crate::engine::cuda::CudaDevice;
    use crate::engine::cuda::conv_choice::{ConvPath, ConvPolicy};
    // Fresh emulated devices (not the shared one) so each policy holds for its own tensors.
    // Tolerances: f32 as above; f16 and bf16 round the output once (2^-11, 2^-8 relative) on
    // both backends from the same rounded inputs, so they differ by at most two such steps.
    let policies = [
        ConvPolicy::Always(ConvPath::Im2col),
        ConvPolicy::Always(ConvPath::Implicit),
        ConvPolicy::Measure,
    ];
    for policy in policies {
        let dev = Device::Cuda(CudaDevice::emulated_with(policy));
        for (dtype, tol) in [
            (DType::F32, 1e-5),
            (DType::F16, 2e-3),
            (DType::BF16, 1.6e-2),
        ] {
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let x = on(&Tensor::from_vec(
                values(2 * 12 * 9 * 11, 40),
                &[2, 12, 9, 11][..],
                &Device::Cpu,
            )
            .unwrap());
            let w = on(
                &Tensor::from_vec(values(7 * 12 * 9, 41), &[7, 12, 3, 3][..], &Device::Cpu)
                    .unwrap(),
            );
            let b = Tensor::from_vec(values(7, 42), &[7][..], &Device::Cpu).unwrap();
            let pw = on(
                &Tensor::from_vec(values(7 * 12, 43), &[7, 12, 1, 1][..], &Device::Cpu).unwrap(),
            );
            let put = |t: &Tensor| t.to_device(&dev).unwrap();
            let (gx, gw, gb, gpw) = (put(&x), put(&w), put(&b), put(&pw));
            for (stride, pad) in [(1, 1), (2, 1)] {
                let want = x.conv2d(&w, Some(&b), stride, pad).unwrap();
                let r =
                    on(
                        &Tensor::from_vec(values(want.elem_count(), 44), want.dims(), &Device::Cpu)
                            .unwrap(),
                    );
                let cases = [
                    (
                        "conv2d",
                        want,
                        gx.conv2d(&gw, Some(&gb), stride, pad).unwrap(),
                    ),
                    (
                        "conv2d_add",
                        x.conv2d_add(&w, Some(&b), stride, pad, &r).unwrap(),
                        gx.conv2d_add(&gw, Some(&gb), stride, pad, &put(&r))
                            .unwrap(),
                    ),
                ];
                for (what, cpu, gpu) in cases {
                    let what = format!("{what} {dtype} s{stride} {policy:?}");
                    compare(&what, &cpu, &gpu, tol);
                }
            }
            let r = on(
                &Tensor::from_vec(values(2 * 7 * 99, 45), &[2, 7, 9, 11][..], &Device::Cpu)
                    .unwrap(),
            );
            compare(
                &format!("conv2d_add 1x1 {dtype} {policy:?}"),
                &x.conv2d_add(&pw, None, 1, 0, &r).unwrap(),
                &gx.conv2d_add(&gpw, None, 1, 0, &put(&r)).unwrap(),
                tol,
            );
        }
    }

    fn compare(what: &str, cpu: &Tensor, gpu: &Tensor, tol: f32) {
        assert_eq!(
            (cpu.dims(), cpu.dtype()),
            (gpu.dims(), gpu.dtype()),
            "{what}"
        );
        let (a, b) = (cpu.to_vec_f32().unwrap(), gpu.to_vec_f32().unwrap());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let err = (x - y).abs() / x.abs().max(1.0);
            assert!(err <= tol, "{what}: element {i}: cpu {x}, cuda-emu {y}");
        }
    }
}

#[test]
fn more_memory_than_the_device_has_is_out_of_memory_and_the_device_keeps_working() {
    // A small input padded to 2^29 × 2^29 elements: 2^60 bytes of output, allocated on the
    // device. More than any GPU has and more than a host can map (x86-64 addresses 2^47
    // bytes), so the emulator fails it too instead of overcommitting.
    let (_, g) = pair(&[1, 1, 1, 1], 98);
    let pad = (1usize << 29) - 1;
    match g.pad2d(0, pad, 0, pad) {
        Err(crate::engine::EngineError::OutOfMemory { bytes, .. }) => {
            assert_eq!(bytes, 1 << 60, "the failed request's size")
        }
        other => panic!(
            "expected OutOfMemory, got {:?}",
            other.map(|t| t.dims().to_vec())
        ),
    }
    // The failure took nothing down: the next request on the same device runs.
    let (c, g) = pair(&[4, 33], 99);
    close(
        "silu after OOM",
        &c.silu().unwrap(),
        &g.silu().unwrap(),
        1e-5,
    );
}

/// A recording whose work copies to the host cannot be a graph: the driver invalidates the
/// capture, `record` fails (or, where nothing records, declines), the capture's buffers go back,
/// and the device keeps computing.
#[test]
fn a_recording_that_reads_back_to_the_host_fails_and_the_device_keeps_working() {
    let dev = emu();
    let x = Tensor::from_vec(values(64, 3), (8, 8), &dev).unwrap();
    let recorded = dev.record(&[&x], |x| {
        let host = x[0].add(&x[0])?.to_vec_f32()?;
        Tensor::from_vec(host, (8, 8), x[0].device())
    });
    let records = matches!(&dev, Device::Cuda(d) if !d.is_emulated())
        && crate::engine::graphs_enabled()
        && std::env::var("SDSERVE_STANDIN_GRAPHS").as_deref() != Ok("0");
    match recorded {
        Ok(Some(_)) => panic!("a recording that copies to the host must not become a graph"),
        Ok(None) => assert!(!records, "{dev:?} records graphs, yet record declined"),
        Err(e) => eprintln!("record failed as it should: {e}"),
    }
    let want: Vec<f32> = values(64, 3).iter().map(|v| v * 3.0).collect();
    let got = x.add(&x).unwrap().add(&x).unwrap().to_vec_f32().unwrap();
    assert_eq!(got, want);
    if let Device::Cuda(d) = &dev {
        // Nothing of the failed capture is still counted as in use (x, 256-byte rounded, is).
        assert_eq!(d.memory_stats().in_use % 256, 0);
    }
}

/// Under `SDSERVE_PROFILE=1` a GPU times every kernel and library GEMM on the GPU, by name
/// (`standin_tests.rs` runs this with it set), and records no graphs; otherwise, and on the
/// emulator, there are no kernel times.
#[test]
fn under_profile_a_gpu_times_each_kernel_and_gemm_and_records_no_graph() {
    let dev = emu();
    let Device::Cuda(d) = &dev else {
        panic!("the device under test is a CUDA device")
    };
    let x = Tensor::from_vec(values(6 * 40, 7), (6, 40), &dev).unwrap();
    let w = Tensor::from_vec(values(24 * 40, 8), (24, 40), &dev).unwrap();
    let profiled = !d.is_emulated() && crate::engine::profile::enabled();
    if let Some(times) = d.kernel_times() {
        times.unwrap(); // what came before this test
    }
    let y = x.add(&x).unwrap().linear(&w, None).unwrap();
    let _ = y.to_vec_f32().unwrap();
    let Some(times) = d.kernel_times() else {
        assert!(!profiled, "{dev:?} is profiled, yet it has no kernel times");
        return;
    };
    assert!(
        profiled,
        "{dev:?} has kernel times without SDSERVE_PROFILE=1"
    );
    let times = times.unwrap();
    let find = |prefix: &str| times.iter().find(|t| t.name.starts_with(prefix));
    let add = find("add_").unwrap_or_else(|| panic!("no add kernel in {times:?}"));
    let gemm = find("gemm f32 6×24×40").unwrap_or_else(|| panic!("no GEMM in {times:?}"));
    assert!(add.calls >= 1 && gemm.calls == 1, "{times:?}");
    assert!(
        times.iter().all(|t| t.ms >= 0.0 && t.ms.is_finite()),
        "{times:?}"
    );
    let recorded = dev.record(&[&x], |x| x[0].add(&x[0])).unwrap();
    assert!(recorded.is_none(), "a profiled GPU recorded a graph");
}
