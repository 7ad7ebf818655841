//! Throughput of the portable kernel and the `gemm` crate against the AVX-512 path on Stable Diffusion shapes, and a
//! sweep of the AVX-512 blockings (both `#[ignore]`d: run them in release builds).

use super::tests::{Run, compute};
use super::*;
use crate::engine::cpu::gemm_testing::values;

/// Rounds of timings per shape: `SDSERVE_BENCH_BEST` (3 unless set).
fn rounds() -> usize {
    let v = std::env::var("SDSERVE_BENCH_BEST").ok();
    v.and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// A Stable Diffusion GEMM to time: a name, m, n, k, whether rhs is a transposed view, and
/// the row stride of rhs and dst when they are interleaved (Winograd's V and M), else 0.
type Shape = (&'static str, usize, usize, usize, bool, usize);

/// The shapes [`throughput`] times.
const SHAPES: [Shape; 20] = [
    ("linear 4096x1280x1280", 4096, 1280, 1280, false, 0),
    ("linear 4096x1280x1280 rhs^T", 4096, 1280, 1280, true, 0),
    ("linear 8192x320x320 rhs^T", 8192, 320, 320, true, 0),
    ("linear 1024x640x640 rhs^T", 1024, 640, 640, true, 0),
    ("linear 256x1280x1280 rhs^T", 256, 1280, 1280, true, 0),
    ("linear 64x1280x1280 rhs^T", 64, 1280, 1280, true, 0),
    ("linear CLIP 154x768x768 rhs^T", 154, 768, 768, true, 0),
    ("matmul 256x1280x1280", 256, 1280, 1280, false, 0),
    ("conv im2col 320x4096x2880", 320, 4096, 2880, false, 0),
    ("attn QK^T 4096x4096x40", 4096, 4096, 40, true, 0),
    ("attn QK^T 1024x1024x80", 1024, 1024, 80, true, 0),
    ("attn QK^T 256x256x160", 256, 256, 160, true, 0),
    ("matmul 1280x1024x1280", 1280, 1024, 1280, false, 0),
    ("winograd 640x512x640", 640, 512, 640, false, 36 * 512),
    ("attn tile QK^T 128x256x40", 128, 256, 40, true, 0),
    ("attn tile PV 128x40x256", 128, 40, 256, false, 0),
    ("attn tile QK^T 128x256x80", 128, 256, 80, true, 0),
    ("attn tile PV 128x80x256", 128, 80, 256, false, 0),
    ("attn tile QK^T 128x256x160", 128, 256, 160, true, 0),
    ("attn tile PV 128x160x256", 128, 160, 256, false, 0),
];

/// Times `runs` (name, computation) on `shape` with `par`, printing GFLOP/s of each.
fn time_shape(shape: Shape, par: Par, runs: &[(String, Run)]) {
    let (name, m, n, k, rhs_t, stride) = shape;
    let (a, b) = (values(m * k, 1), values(stride.max(n) * (k - 1) + n, 2));
    let lhs = Mat::rows(&a, k);
    let (rhs, dst_rs) = match (rhs_t, stride) {
        (true, _) => (Mat::rows_t(&b[..n * k], k), n),
        (false, 0) => (Mat::rows(&b, n), n),
        (false, s) => (
            Mat {
                data: &b,
                rs: s,
                cs: 1,
            },
            s,
        ),
    };
    let mut c = vec![0f32; dst_rs * (m - 1) + n];
    let g = Gemm {
        m,
        n,
        k,
        lhs,
        rhs,
        dst_rs,
        acc: false,
    };
    let gf = |s: f64| 2.0 * (m * n * k) as f64 / s / 1e9;
    let mut line = format!(
        "{name:28} {:6}",
        if par == Par::Auto { "Auto" } else { "Serial" }
    );
    // One warm-up each, then rounds that time every run once, so a slow spell of the (shared)
    // machine hits all of them alike; the best time of each counts.
    let mut best = vec![f64::INFINITY; runs.len()];
    for round in 0..=rounds() {
        for ((_, r), best) in runs.iter().zip(&mut best) {
            let t = std::time::Instant::now();
            compute(*r, g, &mut c, par);
            if round > 0 {
                *best = best.min(t.elapsed().as_secs_f64());
            }
        }
    }
    for ((label, _), s) in runs.iter().zip(best) {
        line += &format!(" | {label} {:6.1}", gf(s));
    }
    eprintln!("{line}");
}

#[test]
#[ignore = "timing: cargo test --release -p inference-server --lib f32gemm::timing::throughput -- --ignored --nocapture"]
fn throughput() {
    eprintln!(
        "GFLOP/s, best of {} (Auto = all {} rayon threads)",
        rounds(),
        rayon::current_num_threads()
    );
    let mut runs = vec![
        ("portable".to_string(), Run::Path(Isa::Portable)),
        ("gemm crate".to_string(), Run::Path(Isa::Avx2)),
    ];
    if cpu_has_avx512f() {
        runs.push(("own avx512".to_string(), Run::Path(Isa::Avx512)));
        // The AVX-512 kernels even where `sgemm_own` leaves n to the gemm crate.
        #[cfg(target_arch = "x86_64")]
        runs.push(("avx512 kernels".to_string(), Run::Tweaked(|c| c)));
    }
    for shape in SHAPES {
        for par in [Par::Serial, Par::Auto] {
            // The attention tiles are multiplied with Par::Serial (attention parallelises).
            if par == Par::Serial || !shape.0.starts_with("attn tile") {
                time_shape(shape, par, &runs);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "timing: cargo test --release -p inference-server --lib f32gemm::timing::blocking_sweep -- --ignored --nocapture"]
fn blocking_sweep() {
    use avx512::*;
    if !cpu_has_avx512f() {
        return;
    }
    use avx512::Cfg;
    let runs: Vec<(String, Run)> = [
        ("chosen", (|c| c) as fn(Cfg) -> Cfg),
        ("flip order", |c| Cfg {
            a_outer: !c.a_outer,
            ..c
        }),
        ("kc/2", |c| Cfg {
            kc: c.kc.div_ceil(2),
            ..c
        }),
        ("mc192", |c| Cfg { mc: 192, ..c }),
        ("nc1024", |c| Cfg { nc: 1024, ..c }),
        ("8x48", |c| Cfg { micro: K8X48, ..c }),
        ("6x64", |c| Cfg { micro: K6X64, ..c }),
    ]
    .into_iter()
    .map(|(name, f)| (name.to_string(), Run::Tweaked(f)))
    .collect();
    for shape in SHAPES {
        for par in [Par::Serial, Par::Auto] {
            time_shape(shape, par, &runs);
        }
    }
}
