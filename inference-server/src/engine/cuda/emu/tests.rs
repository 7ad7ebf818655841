//! Tests of the emulator itself, through the FFI, on the kernels of `emu/selftest.cu`. Each test
//! checks a result the emulator could get wrong (or an error it could miss).

use std::ffi::c_void;
use std::time::Instant;

use half::{bf16, f16};

use super::{Schedule, launch, set_schedule};
use crate::engine::cuda::error::CudaError;
use crate::engine::cuda::launch::LaunchCfg;

/// Launches with each argument passed by value as the C type of its Rust expression.
macro_rules! run {
    ($kernel:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        launch($kernel, $cfg, &mut [$((&mut { $arg }) as *mut _ as *mut c_void),*])
    };
}

/// A device pointer under the emulator: the host address.
fn dev<T>(v: &[T]) -> u64 {
    v.as_ptr() as u64
}

/// Reproducible pseudo-random f32 values in [-1, 1) (xorshift; no dependency needed).
fn random_f32(n: usize, mut seed: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn emu_message(r: Result<(), CudaError>) -> String {
    match r {
        Err(CudaError::EmuLaunch { message, .. }) => message,
        other => panic!("expected an emulator launch error, got {other:?}"),
    }
}

#[test]
fn block_reduction_with_shared_memory_and_a_partial_last_block() {
    let n = 1000usize; // 4 blocks of 256, the last one partial
    let x = random_f32(n, 1);
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        let out = vec![0f32; 4];
        run!("selftest_block_sum_f32", LaunchCfg::linear(n, 256); dev(&x), dev(&out), n as i32)
            .unwrap();
        for (b, &got) in out.iter().enumerate() {
            let want: f64 = x[b * 256..((b + 1) * 256).min(n)]
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            assert!(
                (f64::from(got) - want).abs() < 1e-4,
                "{schedule:?} block {b}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn warp_shuffles_and_ballot() {
    let n = 200usize; // 6.25 warps of data in 8 warps of threads
    let x = random_f32(n, 2);
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        let sums = vec![0f32; 16];
        let positives = vec![0u32; 8];
        run!("selftest_warp_sum_f32", LaunchCfg::linear(256, 64); dev(&x), dev(&sums), dev(&positives), n as i32)
            .unwrap();
        for w in 0..8 {
            let lanes = &x[(w * 32).min(n)..((w + 1) * 32).min(n)];
            let want: f32 = lanes.iter().sum();
            let ballot = lanes
                .iter()
                .enumerate()
                .fold(0u32, |m, (l, &v)| if v > 0.0 { m | 1 << l } else { m });
            assert!(
                (sums[2 * w] - want).abs() < 1e-5,
                "{schedule:?} warp {w} down: {} vs {want}",
                sums[2 * w]
            );
            assert!(
                (sums[2 * w + 1] - want).abs() < 1e-5,
                "{schedule:?} warp {w} xor: {} vs {want}",
                sums[2 * w + 1]
            );
            assert_eq!(positives[w], ballot, "{schedule:?} warp {w} ballot");
        }
    }
}

#[test]
fn dynamic_shared_memory_sized_by_the_launch() {
    let (block, blocks) = (128usize, 3usize);
    let x = random_f32(block * blocks, 3);
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        let y = vec![0f32; x.len()];
        let cfg = LaunchCfg::new([blocks as u32, 1, 1], [block as u32, 1, 1])
            .with_shared_mem(4 * block as u32);
        run!("selftest_dyn_reverse_f32", cfg; dev(&x), dev(&y)).unwrap();
        for (i, &got) in y.iter().enumerate() {
            assert_eq!(
                got,
                x[i / block * block + block - 1 - i % block],
                "{schedule:?} element {i}"
            );
        }
    }
}

#[test]
fn missing_syncthreads_is_caught_under_some_schedule() {
    let x = random_f32(512, 4);
    let mut caught = Vec::new();
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        let y = vec![0f32; x.len()];
        run!("selftest_missing_sync_f32", LaunchCfg::linear(512, 256); dev(&x), dev(&y)).unwrap();
        let wrong = (0..512)
            .filter(|&i| y[i] != x[i / 256 * 256 + 255 - i % 256])
            .count();
        if wrong > 0 {
            caught.push(schedule);
        }
    }
    assert!(
        !caught.is_empty(),
        "no schedule exposed the missing __syncthreads"
    );
}

#[test]
fn shared_memory_is_poisoned_before_every_block() {
    let out = vec![0u32; 2 * 3 * 64];
    let cfg = LaunchCfg::new([3, 1, 1], [64, 1, 1]).with_shared_mem(64 * 4);
    run!("selftest_read_unwritten_shared", cfg; dev(&out)).unwrap();
    for (i, &v) in out.iter().enumerate() {
        let (block, t) = (i / 128, (i % 128 / 2) as u32);
        assert_eq!(
            v,
            if block == 0 { t } else { u32::MAX },
            "block {block} thread {t} ({})",
            ["static", "dynamic"][i % 2]
        );
    }
}

#[test]
fn half_a_warp_skipping_a_shuffle_is_a_deadlock_error() {
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        let out = vec![0f32; 64];
        let msg = emu_message(
            run!("selftest_half_warp_skips_shfl", LaunchCfg::linear(64, 64); dev(&out)),
        );
        assert!(
            msg.contains("deadlock") && msg.contains("__shfl_xor_sync"),
            "{schedule:?}: {msg}"
        );
    }
}

#[test]
fn shuffle_reading_an_exited_lane_is_an_error() {
    let out = vec![0f32; 64];
    let msg =
        emu_message(run!("selftest_shfl_reads_exited_lane", LaunchCfg::linear(64, 64); dev(&out)));
    assert!(msg.contains("not active"), "{msg}");
}

#[test]
fn cpp_exception_becomes_an_error_and_the_emulator_keeps_working() {
    let out = vec![0i32; 1024];
    let msg = emu_message(run!("selftest_throws", LaunchCfg::linear(1024, 256); dev(&out)));
    assert!(
        msg.contains("selftest exception from thread 3") && msg.contains("block (1,0,0)"),
        "{msg}"
    );
    let x = vec![1f32; 256];
    let sum = vec![0f32; 1];
    run!("selftest_block_sum_f32", LaunchCfg::linear(256, 256); dev(&x), dev(&sum), 256i32)
        .unwrap();
    assert_eq!(sum[0], 256.0);
}

#[test]
fn unknown_kernels_bad_arity_and_bad_configurations_are_clear_errors() {
    let err = run!("no_such_kernel_f32", LaunchCfg::linear(1, 1);).unwrap_err();
    assert!(
        matches!(&err, CudaError::UnknownKernel { name } if name == "no_such_kernel_f32"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_kernel_f32"));
    let msg = emu_message(run!("selftest_block_sum_f32", LaunchCfg::linear(1, 256); 0u64));
    assert!(msg.contains("takes 3 parameters"), "{msg}");
    let x = vec![0f32; 4];
    let msg = emu_message(
        run!("selftest_block_sum_f32", LaunchCfg::linear(1, 2048); dev(&x), dev(&x), 1i32),
    );
    assert!(msg.contains("more than 1024"), "{msg}");
}

/// Runs a conversion kernel over `x` and returns the converted values.
fn convert<S, D: Default + Clone>(kernel: &str, x: &[S]) -> Vec<D> {
    let y = vec![D::default(); x.len()];
    run!(kernel, LaunchCfg::linear(x.len(), 256); dev(x), dev(&y), x.len() as i32).unwrap();
    y
}

/// Inputs for f32 -> half: every half value widened, the midpoints between neighbours (ties
/// to even), one f32 ulp on either side of them, and random bit patterns of every exponent.
fn rounding_inputs(widen: impl Fn(u16) -> f32) -> Vec<f32> {
    let mut v = Vec::new();
    for bits in 0..=u16::MAX {
        let (a, b) = (widen(bits), widen(bits.wrapping_add(1)));
        v.push(a);
        if a.is_finite() && b.is_finite() && (a < 0.0) == (b < 0.0) {
            let mid =
                f32::from_bits(((u64::from(a.to_bits()) + u64::from(b.to_bits())) / 2) as u32);
            v.extend([
                mid,
                f32::from_bits(mid.to_bits() - 1),
                f32::from_bits(mid.to_bits() + 1),
            ]);
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.push(f32::from_bits((seed >> 32) as u32));
    }
    v
}

fn assert_same_or_both_nan(got: f32, want: f32, what: &str) {
    assert!(
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
        "{what}: {got:e} vs {want:e}"
    );
}

#[test]
fn f16_conversions_match_the_half_crate_on_every_bit_pattern() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let wide: Vec<f32> = convert("selftest_convert_f16_f32", &all);
    for (h, &got) in all.iter().zip(&wide) {
        assert_same_or_both_nan(got, h.to_f32(), &format!("f16 {:#06x} -> f32", h.to_bits()));
    }
    let inputs = rounding_inputs(|b| f16::from_bits(b).to_f32());
    let narrow: Vec<f16> = convert("selftest_convert_f32_f16", &inputs);
    for (&x, got) in inputs.iter().zip(&narrow) {
        let want = f16::from_f32(x);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "f32 {x:e} -> f16: {got} vs {want}"
        );
    }
}

#[test]
fn bf16_conversions_match_the_half_crate_on_every_bit_pattern() {
    let all: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let wide: Vec<f32> = convert("selftest_convert_bf16_f32", &all);
    for (h, &got) in all.iter().zip(&wide) {
        assert_same_or_both_nan(
            got,
            h.to_f32(),
            &format!("bf16 {:#06x} -> f32", h.to_bits()),
        );
    }
    let inputs = rounding_inputs(|b| bf16::from_bits(b).to_f32());
    let narrow: Vec<bf16> = convert("selftest_convert_f32_bf16", &inputs);
    for (&x, got) in inputs.iter().zip(&narrow) {
        let want = bf16::from_f32(x);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "f32 {x:e} -> bf16: {got} vs {want}"
        );
    }
}

#[test]
fn packed_f16x2_puts_lo_in_the_low_half() {
    let x = random_f32(2 * 300, 5);
    let (packed, back) = (vec![0u32; 300], vec![0f32; 600]);
    run!("selftest_pack_f16x2", LaunchCfg::linear(300, 128); dev(&x), dev(&packed), dev(&back), 300i32).unwrap();
    for k in 0..300 {
        let (lo, hi) = (f16::from_f32(x[2 * k]), f16::from_f32(x[2 * k + 1]));
        assert_eq!(
            packed[k],
            u32::from(lo.to_bits()) | u32::from(hi.to_bits()) << 16,
            "pair {k}"
        );
        assert_eq!(
            (back[2 * k], back[2 * k + 1]),
            (lo.to_f32(), hi.to_f32()),
            "pair {k}"
        );
    }
}

/// GroupNorm + SiLU on the host in f64: the oracle for the self-test kernel.
fn groupnorm_silu(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let len = c / groups * hw;
    for chunk in 0..n * groups {
        let s = &x[chunk * len..(chunk + 1) * len];
        let mean = s.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
        let var = s
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / len as f64;
        for (i, &v) in s.iter().enumerate() {
            let ch = (chunk % groups) * (c / groups) + i / hw;
            let t = (f64::from(v) - mean) / (var + 1e-5).sqrt() * f64::from(gamma[ch])
                + f64::from(beta[ch]);
            y[chunk * len + i] = (t / (1.0 + (-t).exp())) as f32;
        }
    }
    y
}

/// Runs the GroupNorm-shaped self-test kernel and checks it; returns the launch time.
fn check_groupnorm(n: usize, c: usize, hw: usize, groups: usize) -> std::time::Duration {
    let x = random_f32(n * c * hw, 6);
    let (gamma, beta) = (random_f32(c, 7), random_f32(c, 8));
    let y = vec![0f32; x.len()];
    let cfg = LaunchCfg::new([groups as u32, n as u32, 1], [256, 1, 1]);
    let start = Instant::now();
    run!("selftest_groupnorm_silu_f32", cfg; dev(&x), dev(&gamma), dev(&beta), dev(&y), c as i32, hw as i32, 1e-5f32)
        .unwrap();
    let took = start.elapsed();
    let want = groupnorm_silu(&x, n, c, hw, groups, &gamma, &beta);
    let worst = y
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-4,
        "GroupNorm+SiLU {n}x{c}x{hw}: max abs error {worst}"
    );
    took
}

#[test]
fn groupnorm_shaped_kernel_under_every_schedule() {
    for schedule in Schedule::ALL {
        set_schedule(schedule);
        check_groupnorm(2, 64, 10 * 10, 32);
    }
}

#[test]
fn groupnorm_shaped_kernel_at_sd_size() {
    // SD's first UNet GroupNorm: 2x320x64x64, 32 groups. Prints the time (`--nocapture`).
    let took = check_groupnorm(2, 320, 64 * 64, 32);
    eprintln!("emulated GroupNorm+SiLU 2x320x64x64: {took:?}");
}
