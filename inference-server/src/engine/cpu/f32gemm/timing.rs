//! Throughput of the `gemm` crate against the AVX-512 path on Stable Diffusion shapes, and a
//! sweep of the AVX-512 blockings (both `#[ignore]`d: run them in release builds).

use super::tests::{Run, compute, values};
use super::*;

/// Best-of-3 seconds of `f` after one warm-up run.
fn best(f: &mut dyn FnMut()) -> f64 {
    f();
    let time = |_| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    (0..3).map(time).fold(f64::INFINITY, f64::min)
}

/// A Stable Diffusion GEMM to time: a name, m, n, k, whether rhs is a transposed view, and
/// the row stride of rhs and dst when they are interleaved (Winograd's V and M), else 0.
type Shape = (&'static str, usize, usize, usize, bool, usize);

/// The shapes [`throughput`] times.
const SHAPES: [Shape; 8] = [
    ("linear 4096x1280x1280", 4096, 1280, 1280, false, 0),
    ("linear 4096x1280x1280 rhs^T", 4096, 1280, 1280, true, 0),
    ("linear 8192x320x320 rhs^T", 8192, 320, 320, true, 0),
    ("attn QK^T 4096x4096x40", 4096, 4096, 40, true, 0),
    ("matmul 1280x1024x1280", 1280, 1024, 1280, false, 0),
    ("winograd 640x512x640", 640, 512, 640, false, 36 * 512),
    ("attn tile QK^T 128x256x40", 128, 256, 40, true, 0),
    ("attn tile PV 128x40x256", 128, 40, 256, false, 0),
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
    for (label, r) in runs {
        let s = best(&mut || compute(*r, g, &mut c, par));
        line += &format!(" | {label} {:6.1}", gf(s));
    }
    eprintln!("{line}");
}

#[test]
#[ignore = "timing: cargo test --release -p inference-server --lib f32gemm::timing::throughput -- --ignored --nocapture"]
fn throughput() {
    eprintln!(
        "GFLOP/s, best of 3 (Auto = all {} rayon threads)",
        rayon::current_num_threads()
    );
    let mut runs = vec![("gemm crate".to_string(), Run::Path(Isa::Avx2))];
    if cpu_has_avx512f() {
        runs.push(("own avx512".to_string(), Run::Path(Isa::Avx512)));
    }
    for shape in SHAPES {
        for par in [Par::Serial, Par::Auto] {
            time_shape(shape, par, &runs);
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
    let base = |micro| Cfg {
        micro,
        ..choose(1280)
    };
    let mut runs = vec![];
    for (name, micro) in [
        ("6x64", K6X64),
        ("8x48", K8X48),
        ("12x32", K12X32),
        ("14x32", K14X32),
    ] {
        runs.push((name.to_string(), Run::Blocked(base(micro))));
    }
    for kc in [128, 384, 512] {
        runs.push((format!("kc{kc}"), Run::Blocked(Cfg { kc, ..base(K6X64) })));
    }
    for mc in [96, 384, 768] {
        runs.push((format!("mc{mc}"), Run::Blocked(Cfg { mc, ..base(K6X64) })));
    }
    runs.push((
        "packA".to_string(),
        Run::Blocked(Cfg {
            pack_a: true,
            ..base(K6X64)
        }),
    ));
    runs.push((
        "Aouter".to_string(),
        Run::Blocked(Cfg {
            a_outer: true,
            ..base(K6X64)
        }),
    ));
    for shape in SHAPES {
        for par in [Par::Serial, Par::Auto] {
            time_shape(shape, par, &runs);
        }
    }
}
