use super::*;
use crate::engine::cpu::gemm_testing::{self, operand, values};
use half::bf16;

/// The error against f64 with the inputs rounded to bf16, as the products take them.
fn error_ratio(g: Gemm<'_>, c0: &[f32], got: &[f32]) -> f64 {
    gemm_testing::error_ratio(g, c0, got, |x| half::bf16::from_f32(x).to_f64())
}

/// Runs `path` on an m × n × k case with operand layouts `lay`, multiplying only the first
/// `k_used` terms, and returns `error_ratio` against all k; checks `dst`'s padding is kept.
fn run(
    path: Bf16Path,
    (m, n, k): (usize, usize, usize),
    lay: (u8, u8),
    acc: bool,
    par: Par,
    k_used: usize,
) -> f64 {
    let (a, ars, acs) = operand(m, k, lay.0, 1 + m as u64);
    let (b, brs, bcs) = operand(k, n, lay.1, 2 + n as u64);
    let (lhs, rhs) = (
        Mat {
            data: &a,
            rs: ars,
            cs: acs,
        },
        Mat {
            data: &b,
            rs: brs,
            cs: bcs,
        },
    );
    let g = Gemm::new(m, n, k, lhs, rhs, n + 3, acc);
    let c0 = values(m * g.dst_rs, 3);
    let mut got = c0.clone();
    sgemm_bf16_on(path, Gemm { k: k_used, ..g }, &mut got, par);
    for i in 0..m {
        let pad = i * g.dst_rs + n..(i + 1) * g.dst_rs;
        assert_eq!(got[pad.clone()], c0[pad], "{path:?}: padding of row {i}");
    }
    error_ratio(g, &c0, &got)
}

/// The paths this CPU can run: portable always, AVX-512 BF16 where the CPU has it.
fn paths() -> Vec<Bf16Path> {
    if cpu_has_avx512bf16() {
        return vec![Bf16Path::Portable, Bf16Path::Avx512Bf16];
    }
    eprintln!("note: this CPU lacks avx512bf16; only the portable path is checked");
    vec![Bf16Path::Portable]
}

#[test]
fn both_paths_match_the_bf16_reference() {
    // Odd sizes, and ones crossing the KC (k = 301), MC (m = 700) and NC (n = 2100) blocks;
    // Par::Auto splits 130×70×301 and 700×40×20 by rows, 40×300×64 and 20×2100×6 by columns.
    // n = 300 and 2100 take the 6 × 64 kernel, the other n the 8 × 48 one.
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (33, 47, 65),
        (130, 70, 301),
        (40, 300, 64),
    ];
    let big = [(700, 40, 20), (20, 2100, 6)];
    for path in paths() {
        for (s, &mnk) in shapes.iter().chain(&big).enumerate() {
            for lay in [(0, 0), (1, 1), (0, 1), (1, 0), (2, 2)] {
                if s >= shapes.len() && lay != (0, 1) {
                    continue;
                }
                for (acc, par) in [
                    (false, Par::Serial),
                    (true, Par::Serial),
                    (false, Par::Auto),
                    (true, Par::Auto),
                ] {
                    let e = run(path, mnk, lay, acc, par, mnk.2);
                    assert!(
                        e <= 1.0,
                        "{path:?} {mnk:?} {lay:?} acc={acc}: error {e} × bound"
                    );
                }
            }
        }
    }
}

#[test]
fn bound_catches_wrong_results() {
    let mnk = (130, 70, 301);
    for path in paths() {
        let e = run(path, mnk, (0, 1), false, Par::Serial, mnk.2 - 1);
        assert!(
            e > 1.0,
            "{path:?}: dropping the last k stays within the bound ({e})"
        );
    }
    // Unrounded f32 products fail too: the bound is tight enough to see the bf16 rounding.
    let (a, b, mut got) = (
        values(130 * 301, 5),
        values(301 * 70, 6),
        vec![0f32; 130 * 70],
    );
    let (lhs, rhs) = (Mat::rows(&a, 301), Mat::rows(&b, 70));
    sgemm(130, 70, 301, lhs, rhs, &mut got, 70, false, Par::Serial);
    let e = error_ratio(Gemm::new(130, 70, 301, lhs, rhs, 70, false), &[], &got);
    assert!(e > 1.0, "f32 products stay within the bf16 bound ({e})");
}

#[test]
fn k_zero_nan_empty_and_the_public_entry() {
    let one = [1.0f32; 8];
    let (lhs, rhs) = (Mat::rows(&one, 1), Mat::rows(&one, 3));
    for path in paths() {
        for acc in [false, true] {
            let mut d = [7.0f32; 8];
            let g = Gemm::new(2, 3, 0, lhs, rhs, 4, acc);
            sgemm_bf16_on(path, g, &mut d, Par::Auto);
            let want = if acc {
                [7.0; 8]
            } else {
                [0., 0., 0., 7., 0., 0., 0., 7.]
            };
            assert_eq!(d, want, "{path:?} acc={acc}");
        }
        sgemm_bf16_on(
            path,
            Gemm::new(0, 3, 1, lhs, rhs, 3, false),
            &mut [],
            Par::Auto,
        );
        let (mut a, b, mut d) = (values(3 * 5, 7), values(5 * 4, 8), vec![0f32; 12]);
        a[5] = f32::NAN; // row 1
        let (lhs, rhs) = (Mat::rows(&a, 5), Mat::rows(&b, 4));
        sgemm_bf16_on(
            path,
            Gemm::new(3, 4, 5, lhs, rhs, 4, false),
            &mut d,
            Par::Serial,
        );
        assert!(d[4..8].iter().all(|x| x.is_nan()), "{path:?}: {d:?}");
        assert!(
            d[..4].iter().chain(&d[8..]).all(|x| x.is_finite()),
            "{path:?}: {d:?}"
        );
    }
    let forced = std::env::var("SDSERVE_CPU_BF16").is_ok_and(|v| v == "portable");
    assert_eq!(bf16_native(), cpu_has_avx512bf16() && !forced);
    assert_eq!(bf16_native(), bf16_path() == Bf16Path::Avx512Bf16);
    let (a, b, mut d) = (values(9 * 17, 9), values(17 * 11, 10), vec![0f32; 9 * 11]);
    let (lhs, rhs) = (Mat::rows(&a, 17), Mat::rows(&b, 11));
    sgemm_bf16(9, 11, 17, lhs, rhs, &mut d, 11, false, Par::Auto);
    let e = error_ratio(Gemm::new(9, 11, 17, lhs, rhs, 11, false), &[], &d);
    assert!(
        e <= 1.0,
        "sgemm_bf16 on {:?}: error {e} × bound",
        bf16_path()
    );
}

#[test]
fn rounding_is_nearest_even_and_matches_half() {
    let (one, f) = (1f32.to_bits(), f32::from_bits);
    assert_eq!(
        round_bf16(f(one | 0x8000)),
        1.0,
        "1 + 2^-8 is a tie: to even (down)"
    );
    assert_eq!(
        round_bf16(f(one | 0x1_8000)),
        f(one | 0x2_0000),
        "1 + 3·2^-8: to even (up)"
    );
    assert_eq!(
        round_bf16(f(one | 0x8001)),
        f(one | 0x1_0000),
        "above the tie: up"
    );
    assert_eq!(round_bf16(f(one | 0x7fff)), 1.0, "below the tie: down");
    let mut xs = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -f32::MAX,
    ];
    xs.extend([
        f32::MIN_POSITIVE,
        1e-40,
        -3e-39,
        65504.0,
        f(0x3f80_8000),
        f(0xbf81_8000),
    ]);
    let mut s = 0x1234_5678u32;
    for _ in 0..4000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        // Every fourth value is an exact tie (low 16 bits 0x8000).
        xs.push(f(if s.is_multiple_of(4) {
            (s & !0xffff) | 0x8000
        } else {
            s
        }));
    }
    let want = |x: f32| half::bf16::from_f32(x).to_bits() as u32;
    for &x in &xs {
        assert_eq!(bf16_bits(x), want(x), "{x:e} ({:#x})", x.to_bits());
    }
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx512bf16() {
        // Both vector packers; the hardware flushes subnormal inputs to zero (DAZ).
        let n = xs.len();
        let (mut along_k, mut across) = (vec![0u32; n.div_ceil(2)], vec![0u32; n]);
        let row = crate::engine::cpu::gemm::Src::new(&xs, 0, 1, 1, n);
        let col = crate::engine::cpu::gemm::Src::new(&xs, 1, 0, n, 1);
        // SAFETY: the CPU has the features (checked above); the views lie in `xs`.
        unsafe {
            avx512::pack(row, 0, 1, 0, n.div_ceil(2), &mut along_k);
            avx512::pack(col, 0, n, 0, 1, &mut across);
        }
        for (i, &x) in xs.iter().enumerate() {
            let sub = x != 0.0 && x.abs() < f32::MIN_POSITIVE;
            for got in [(along_k[i / 2] >> (16 * (i % 2))) & 0xffff, across[i]] {
                assert!(
                    got == want(x) || sub && got & 0x7fff == 0,
                    "{x:e}: {got:#x}"
                );
            }
        }
    }
}

#[test]
#[ignore = "timing: cargo test --release -p inference-server --lib bf16gemm -- --ignored --nocapture"]
fn throughput() {
    // Best-of-3 seconds of `f` after one warm-up run.
    let best = |f: &mut dyn FnMut()| {
        f();
        let time = |_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        };
        (0..3).map(time).fold(f64::INFINITY, f64::min)
    };
    for (m, n, k) in [(4096, 1280, 1280), (4096, 4096, 40), (1280, 1024, 1280)] {
        let (a, b, mut c) = (values(m * k, 1), values(k * n, 2), vec![0f32; m * n]);
        let (lhs, rhs) = (Mat::rows(&a, k), Mat::rows(&b, n));
        let g = Gemm::new(m, n, k, lhs, rhs, n, false);
        let gf = |s: f64| format!("{:6.1}", 2.0 * (m * n * k) as f64 / s / 1e9);
        eprintln!("{m}x{n}x{k}, GFLOP/s (Auto = all rayon threads):");
        for par in [Par::Auto, Par::Serial] {
            let s = best(&mut || sgemm(m, n, k, lhs, rhs, &mut c, n, false, par));
            let p = best(&mut || sgemm_bf16_on(Bf16Path::Portable, g, &mut c, par));
            let par = if par == Par::Auto { "Auto  " } else { "Serial" };
            eprintln!("  {par} f32 sgemm {} | bf16 portable {}", gf(s), gf(p));
        }
        #[cfg(target_arch = "x86_64")]
        if cpu_has_avx512bf16() {
            use avx512::*;
            // The same product with rhs a transposed view (as the linear layers pass weights).
            let gt = Gemm::new(m, n, k, lhs, Mat::rows_t(&b, k), n, false);
            let kernels = [
                ("6x64", K6X64),
                ("8x48", K8X48),
                ("14x32", K14X32),
                ("12x32", K12X32),
            ];
            for (i, (name, u)) in kernels.into_iter().enumerate() {
                // SAFETY: the CPU has the features (checked above); the views fit their slices.
                let mut t = |g, par| best(&mut || unsafe { gemm(u, g, &mut c, par) });
                eprint!("  bf16 avx512 {name}: Auto {}", gf(t(g, Par::Auto)));
                if i < 2 {
                    eprint!(" | Serial {}", gf(t(g, Par::Serial)));
                    eprint!(" | Auto, rhs transposed {}", gf(t(gt, Par::Auto)));
                }
                eprintln!();
            }
        }
    }
}

#[test]
fn stored_bf16_weights_give_the_view_path_bit_for_bit() {
    if !bf16_native() {
        eprintln!("note: no native bf16 path here; sgemm_bf16_weight declines");
        let w = [bf16::ONE; 4];
        let x = [1.0f32; 4];
        let (l, r) = (Operand::Bf16(&w), Operand::View(Mat::rows(&x, 2)));
        assert!(!sgemm_bf16_weight(
            2,
            2,
            2,
            l,
            r,
            &mut [0.0; 4],
            2,
            false,
            Par::Serial
        ));
        return;
    }
    // The weight as A (a convolution's [o, k]) and as Bᵀ (a linear layer's [n_out, n_in]), with
    // sizes crossing the KC (k = 300), MC (m = 700) and NC (n = 2100) blocks; the same products
    // in the same order as packing its f32 widening, so the results are identical.
    for (m, n, k) in [
        (7, 13, 6),
        (130, 70, 300),
        (700, 40, 20),
        (20, 2100, 6),
        (33, 48, 64),
    ] {
        for weight_is_lhs in [true, false] {
            let rows = if weight_is_lhs { m } else { n };
            let w: Vec<bf16> = values(rows * k, 9)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let wide: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
            let x = values(if weight_is_lhs { k * n } else { m * k }, 10);
            for (acc, par) in [(false, Par::Serial), (true, Par::Auto)] {
                let c0 = values(m * (n + 1), 11);
                let (mut got, mut want) = (c0.clone(), c0);
                let (lw, rw, lv, rv) = match weight_is_lhs {
                    true => (
                        Operand::Bf16(&w),
                        Operand::View(Mat::rows(&x, n)),
                        Mat::rows(&wide, k),
                        Mat::rows(&x, n),
                    ),
                    false => (
                        Operand::View(Mat::rows(&x, k)),
                        Operand::Bf16(&w),
                        Mat::rows(&x, k),
                        Mat::rows_t(&wide, k),
                    ),
                };
                assert!(sgemm_bf16_weight(
                    m,
                    n,
                    k,
                    lw,
                    rw,
                    &mut got,
                    n + 1,
                    acc,
                    par
                ));
                sgemm_bf16(m, n, k, lv, rv, &mut want, n + 1, acc, par);
                let what = format!("{:?} weight_is_lhs={weight_is_lhs} acc={acc}", (m, n, k));
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}"
                );
            }
        }
    }
    // An odd k would split pairs across rows: declined, nothing written.
    let w = [bf16::ONE; 6];
    let x = [1.0f32; 6];
    let mut d = [5.0f32; 4];
    let (l, r) = (Operand::Bf16(&w), Operand::View(Mat::rows(&x, 2)));
    assert!(!sgemm_bf16_weight(
        2,
        2,
        3,
        l,
        r,
        &mut d,
        2,
        false,
        Par::Serial
    ));
    assert_eq!(d, [5.0; 4]);
}

/// `x · wᵀ + bias` by the general bf16 path (bias first, f32 out), then rounded to bf16.
fn linear_general(
    x: &[bf16],
    w: &[bf16],
    bias: Option<&[f32]>,
    (m, n, k): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    if let Some(b) = bias {
        out.chunks_mut(n).for_each(|r| r.copy_from_slice(b));
    }
    let done = sgemm_bf16_weight(
        m,
        n,
        k,
        Operand::Bf16(x),
        Operand::Bf16(w),
        &mut out,
        n,
        bias.is_some(),
        Par::Auto,
    );
    assert!(done);
    out.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

#[test]
fn fused_linear_matches_f64_and_the_general_path() {
    let shapes = [
        (1, 1, 2),
        (7, 70, 36),
        (500, 130, 320),
        (13, 200, 1280),
        (64, 64, 64),
        (20, 70, 5120),
    ];
    if !bf16_native() {
        eprintln!("note: no native bf16 path here; linear_bf16_out declines");
        assert!(
            linear_bf16_out(
                &[bf16::ONE; 4],
                Operand::Bf16(&[bf16::ONE; 4]),
                None,
                (2, 2, 2),
                false
            )
            .is_none()
        );
        return;
    }
    // Declines what it does not keep in cache, and odd k.
    let big = vec![bf16::ONE; 5122];
    assert!(linear_bf16_out(&big, Operand::Bf16(&big), None, (1, 1, 5122), false).is_none());
    assert!(linear_bf16_out(&big[..3], Operand::Bf16(&big[..3]), None, (1, 1, 3), false).is_none());
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        let to_bf16 = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        let x = to_bf16(values(m * k, 10 + s as u64));
        let w = to_bf16(values(n * k, 20 + s as u64));
        let bias = values(n, 30 + s as u64);
        for bias in [None, Some(&bias[..])] {
            let got =
                linear_bf16_out(&x, Operand::Bf16(&w), bias, (m, n, k), false).expect("native");
            // The same weight as an f32 view packs to the same pairs: identical results.
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let view = Operand::View(Mat::rows_t(&wf, k));
            assert_eq!(
                got,
                linear_bf16_out(&x, view, bias, (m, n, k), false).unwrap(),
                "{m}x{n}x{k} view"
            );
            let general = linear_general(&x, &w, bias, (m, n, k));
            let mut differ = 0;
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|p| x[i * k + p].to_f64() * w[j * k + p].to_f64())
                        .sum::<f64>()
                        + bias.map_or(0.0, |b| b[j] as f64);
                    let (g, at) = (got[i * n + j].to_f64(), i * n + j);
                    // One bf16 rounding (2^-8 relative) plus f32 sums over k (tiny here).
                    let scale = (0..k)
                        .map(|p| (x[i * k + p].to_f64() * w[j * k + p].to_f64()).abs())
                        .sum::<f64>()
                        + 1.0;
                    assert!(
                        (g - exact).abs() <= 4e-3 * exact.abs() + 1e-5 * scale,
                        "{m}x{n}x{k} [{i},{j}]: {g} vs {exact}"
                    );
                    // Against the general path: equal, or one bf16 step apart.
                    let want_general = general[at] as f64;
                    if g != want_general {
                        differ += 1;
                        assert!(
                            (g - want_general).abs() <= 8e-3 * want_general.abs().max(1e-3),
                            "{m}x{n}x{k} [{i},{j}]: {g} vs general {want_general}"
                        );
                    }
                }
            }
            assert!(
                differ * 20 <= m * n,
                "{m}x{n}x{k}: {differ} of {} differ from the general path",
                m * n
            );
        }
    }
}

#[test]
#[ignore = "timing: cargo test --release -p inference-server --lib fused_linear_timing -- --ignored --nocapture"]
fn fused_linear_timing() {
    if !bf16_native() {
        return;
    }
    let best = |f: &mut dyn FnMut()| {
        f();
        (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    // The UNet's linear layers at batch 2 (rows, n_out, n_in).
    for (m, n, k) in [
        (8192, 2560, 320),
        (8192, 320, 320),
        (2048, 5120, 640),
        (512, 10240, 1280),
        (512, 1280, 1280),
    ] {
        let x: Vec<bf16> = values(m * k, 1).into_iter().map(bf16::from_f32).collect();
        let w: Vec<bf16> = values(n * k, 2).into_iter().map(bf16::from_f32).collect();
        let bias = values(n, 3);
        let gf = |s: f64| 2.0 * (m * n * k) as f64 / s / 1e9;
        let fused = best(&mut || {
            linear_bf16_out(&x, Operand::Bf16(&w), Some(&bias), (m, n, k), false).unwrap();
        });
        let general = best(&mut || {
            let out = linear_general(&x, &w, Some(&bias), (m, n, k));
            std::hint::black_box(out);
        });
        eprintln!(
            "linear {m}x{n}x{k}: fused {:6.1} GFLOP/s, general (+ bf16 rounding pass) {:6.1}",
            gf(fused),
            gf(general)
        );
    }
}

#[test]
fn fused_geglu_matches_f64_and_the_unfused_path() {
    if !bf16_native() {
        let one = [bf16::ONE; 4];
        assert!(linear_bf16_out(&one, Operand::Bf16(&one), None, (2, 2, 2), true).is_none());
        return;
    }
    // n/2 not a multiple of the 32 outputs per panel, several row blocks, SD's 320 → 2560.
    for (s, &(m, n, k)) in [(5, 2, 4), (37, 150, 64), (450, 2560, 320)]
        .iter()
        .enumerate()
    {
        let to_bf16 = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        let x = to_bf16(values(m * k, 40 + s as u64));
        let w = to_bf16(values(n * k, 50 + s as u64));
        let bias = values(n, 60 + s as u64);
        let h = n / 2;
        let got = linear_bf16_out(&x, Operand::Bf16(&w), Some(&bias), (m, n, k), true).unwrap();
        assert_eq!(got.len(), m * h);
        // Unfused: the product rounded to bf16, then the gate on those values, rounded.
        let full = linear_bf16_out(&x, Operand::Bf16(&w), Some(&bias), (m, n, k), false).unwrap();
        // The engine's f32 GELU (relative error below 5e-6), far inside the bf16 bounds below.
        let gelu = |v: f64| crate::engine::cpu::elementwise::gelu(v as f32) as f64;
        for i in 0..m {
            for j in 0..h {
                let dot = |r: usize| {
                    (0..k)
                        .map(|p| x[i * k + p].to_f64() * w[r * k + p].to_f64())
                        .sum::<f64>()
                        + bias[r] as f64
                };
                let exact = dot(j) * gelu(dot(h + j));
                let g = got[i * h + j].to_f64();
                // One bf16 rounding of the result; the f32 sums and GELU's erfc (5e-6) are far
                // below it. Against the unfused path, its two extra roundings of a and gate.
                assert!(
                    (g - exact).abs() <= 4e-3 * exact.abs() + 1e-4,
                    "{m}x{n}x{k} [{i},{j}]: {g} vs {exact}"
                );
                let (a, gate) = (full[i * n + j].to_f64(), full[i * n + h + j].to_f64());
                let unfused = a * gelu(gate);
                let tol = 1.6e-2 * unfused.abs() + 1e-3 * (a.abs() + gate.abs());
                assert!(
                    (g - unfused).abs() <= tol,
                    "{m}x{n}x{k} [{i},{j}]: {g} vs unfused {unfused}"
                );
            }
        }
    }
}
