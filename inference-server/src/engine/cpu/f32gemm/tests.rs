use super::*;
use crate::engine::cpu::gemm_testing::{self, operand, values};

/// The error against f64 with the inputs taken as they are (f32 products).
fn error_ratio(g: Gemm<'_>, c0: &[f32], got: &[f32]) -> f64 {
    gemm_testing::error_ratio(g, c0, got, |x| x as f64)
}

/// One way to compute a product: a path of `sgemm_own`, or the AVX-512 code with a blocking.
#[derive(Clone, Copy)]
pub(super) enum Run {
    /// `sgemm_own_on` with this path.
    Path(Isa),
    /// The AVX-512 code with this blocking (only where the CPU has avx512f).
    #[cfg(target_arch = "x86_64")]
    Blocked(avx512::Cfg),
    /// The AVX-512 code with the blocking `choose` picks, changed by this function.
    #[cfg(target_arch = "x86_64")]
    Tweaked(fn(avx512::Cfg) -> avx512::Cfg),
}

/// `g` into `dst` by `r`.
pub(super) fn compute(r: Run, g: Gemm<'_>, dst: &mut [f32], par: Par) {
    match r {
        Run::Path(isa) => sgemm_own_on(isa, g, dst, par),
        #[cfg(target_arch = "x86_64")]
        Run::Tweaked(f) => compute(Run::Blocked(f(avx512::choose(g.n, g.k))), g, dst, par),
        #[cfg(target_arch = "x86_64")]
        Run::Blocked(cfg) => {
            assert!(cpu_has_avx512f(), "Run::Blocked needs avx512f");
            if g.has_work(dst) {
                // SAFETY: the CPU has avx512f and `has_work` checked the views and m, n, k > 0.
                unsafe { avx512::gemm(cfg, g, dst, par) };
            }
        }
    }
}

/// Computes an m × n × k case with operand layouts `lay` by `r`, multiplying only the first
/// `k_used` terms, and returns `error_ratio` against all k; checks `dst`'s padding is kept.
fn check(
    r: Run,
    (m, n, k): (usize, usize, usize),
    lay: (u8, u8),
    acc: bool,
    par: Par,
    k_used: usize,
) -> f64 {
    let (a, ars, acs) = operand(m, k, lay.0, 1 + m as u64);
    let (b, brs, bcs) = operand(k, n, lay.1, 2 + n as u64);
    let lhs = Mat {
        data: &a,
        rs: ars,
        cs: acs,
    };
    let rhs = Mat {
        data: &b,
        rs: brs,
        cs: bcs,
    };
    let g = Gemm::new(m, n, k, lhs, rhs, n + 3, acc);
    let c0 = values(m * g.dst_rs, 3);
    let mut got = c0.clone();
    compute(r, Gemm { k: k_used, ..g }, &mut got, par);
    for i in 0..m {
        let pad = i * g.dst_rs + n..(i + 1) * g.dst_rs;
        assert_eq!(got[pad.clone()], c0[pad], "padding of row {i}");
    }
    error_ratio(g, &c0, &got)
}

/// The paths this CPU can run: the `gemm` crate and our portable kernel always, AVX-512 where
/// the CPU has it.
fn paths() -> Vec<Isa> {
    if cpu_has_avx512f() {
        return vec![Isa::Avx2, Isa::Portable, Isa::Avx512];
    }
    eprintln!("note: this CPU lacks avx512f; only the gemm crate and portable paths are checked");
    vec![Isa::Avx2, Isa::Portable]
}

/// Every (accumulate, parallelism) pair.
const MODES: [(bool, Par); 4] = [
    (false, Par::Serial),
    (true, Par::Serial),
    (false, Par::Auto),
    (true, Par::Auto),
];

/// Every operand layout pair the tests use (row-major, transposed, both strided).
const LAYOUTS: [(u8, u8); 5] = [(0, 0), (1, 1), (0, 1), (1, 0), (2, 2)];

#[test]
fn every_path_matches_the_f64_reference() {
    // Odd sizes; k = 301 crosses KC, m = 700 crosses MC and n = 2100 crosses NC. Par::Auto
    // splits 130×70×301 and 700×40×20 by rows, 40×300×64 and 20×2100×6 by columns; n = 40 and
    // 70 take the 8 × 48 kernel, the others 6 × 64.
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (33, 47, 65),
        (130, 70, 301),
        (40, 300, 64),
    ];
    let big = [(700, 40, 20), (20, 2100, 6)];
    for isa in paths() {
        for (s, &mnk) in shapes.iter().chain(&big).enumerate() {
            for lay in LAYOUTS {
                if s >= shapes.len() && lay != (0, 1) {
                    continue;
                }
                for (acc, par) in MODES {
                    let e = check(Run::Path(isa), mnk, lay, acc, par, mnk.2);
                    let what = format!("{isa:?} {mnk:?} {lay:?} acc={acc}");
                    assert!(e <= 1.0, "{what}: error {e} × bound");
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn every_kernel_and_blocking_matches_the_f64_reference() {
    use avx512::*;
    if !cpu_has_avx512f() {
        eprintln!("note: this CPU lacks avx512f; the AVX-512 blockings are not checked");
        return;
    }
    // Tiny blocks, so small shapes cross every block boundary: several KC steps (C re-read),
    // MC blocks with a partial last A panel, one or two B panels per NC block; A packed or read
    // in place; both loop orders.
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (33, 47, 65),
        (130, 70, 301),
        (40, 300, 64),
    ];
    for (name, micro) in [
        ("6x64", K6X64),
        ("8x48", K8X48),
        ("12x32", K12X32),
        ("14x32", K14X32),
    ] {
        for (kc, mc, nc, pack_a, a_outer) in [
            (16, 30, 64, false, false),
            (7, 13, 100, true, true),
            (64, 1, 1, false, true),
        ] {
            let cfg = Cfg {
                micro,
                kc,
                mc,
                nc,
                pack_a,
                a_outer,
            };
            for &mnk in &shapes {
                for lay in LAYOUTS {
                    for (acc, par) in MODES {
                        let e = check(Run::Blocked(cfg), mnk, lay, acc, par, mnk.2);
                        let what = format!(
                            "{name} kc={kc} mc={mc} nc={nc} pack_a={pack_a} a_outer={a_outer} {mnk:?} {lay:?} acc={acc}"
                        );
                        assert!(e <= 1.0, "{what}: error {e} × bound");
                    }
                }
            }
        }
    }
}

#[test]
fn bound_catches_a_dropped_k() {
    let mnk = (130, 70, 301);
    for isa in paths() {
        for lay in [(0, 1), (1, 0)] {
            let e = check(Run::Path(isa), mnk, lay, false, Par::Serial, mnk.2 - 1);
            assert!(
                e > 1.0,
                "{isa:?}: dropping the last k stays within the bound ({e})"
            );
        }
    }
}

#[test]
fn k_zero_empty_nan_and_the_public_entry() {
    let one = [1.0f32; 8];
    let (lhs, rhs) = (Mat::rows(&one, 1), Mat::rows(&one, 3));
    for isa in paths() {
        for acc in [false, true] {
            let mut d = [7.0f32; 8];
            sgemm_own_on(isa, Gemm::new(2, 3, 0, lhs, rhs, 4, acc), &mut d, Par::Auto);
            let want = if acc {
                [7.0; 8]
            } else {
                [0., 0., 0., 7., 0., 0., 0., 7.]
            };
            assert_eq!(d, want, "{isa:?} acc={acc}");
        }
        sgemm_own_on(
            isa,
            Gemm::new(0, 3, 1, lhs, rhs, 3, false),
            &mut [],
            Par::Auto,
        );
        sgemm_own_on(
            isa,
            Gemm::new(2, 0, 1, lhs, rhs, 3, false),
            &mut [],
            Par::Auto,
        );
        let (mut a, b, mut d) = (values(3 * 5, 7), values(5 * 4, 8), vec![0f32; 12]);
        a[5] = f32::NAN; // row 1
        let (lhs, rhs) = (Mat::rows(&a, 5), Mat::rows(&b, 4));
        sgemm_own_on(
            isa,
            Gemm::new(3, 4, 5, lhs, rhs, 4, false),
            &mut d,
            Par::Serial,
        );
        assert!(d[4..8].iter().all(|x| x.is_nan()), "{isa:?}: {d:?}");
        let finite = d[..4].iter().chain(&d[8..]).all(|x| x.is_finite());
        assert!(finite, "{isa:?}: {d:?}");
    }
    let (a, b, mut d) = (values(9 * 17, 9), values(17 * 11, 10), vec![0f32; 9 * 11]);
    let (lhs, rhs) = (Mat::rows(&a, 17), Mat::rows(&b, 11));
    sgemm_own(9, 11, 17, lhs, rhs, &mut d, 11, false, Par::Auto);
    let e = error_ratio(Gemm::new(9, 11, 17, lhs, rhs, 11, false), &[], &d);
    assert!(e <= 1.0, "sgemm_own on {:?}: error {e} × bound", isa());
}

#[test]
#[should_panic(expected = "lhs view out of bounds")]
fn a_short_view_panics() {
    let (a, b, mut d) = (vec![0f32; 5], vec![0f32; 6], vec![0f32; 6]);
    let g = Gemm {
        m: 2,
        n: 3,
        k: 3,
        lhs: Mat::rows(&a, 3),
        rhs: Mat::rows(&b, 3),
        dst_rs: 3,
        acc: false,
    };
    sgemm_own_on(native_isa(), g, &mut d, Par::Serial);
}

#[test]
fn isa_overrides() {
    let native = native_isa();
    assert_eq!(isa_for(None), native);
    assert_eq!(isa_for(Some("auto")), native);
    assert_eq!(isa_for(Some("portable")), Isa::Portable);
    assert_eq!(isa_for(Some("fast")), native, "unknown names fall back");
    let avx2 = if cpu_has_avx2() { Isa::Avx2 } else { native };
    assert_eq!(isa_for(Some("avx2")), avx2);
    let avx512 = if cpu_has_avx512f() {
        Isa::Avx512
    } else {
        native
    };
    assert_eq!(isa_for(Some("avx512")), avx512);
    assert_eq!(
        isa(),
        isa_for(std::env::var("SDSERVE_CPU_ISA").ok().as_deref())
    );
    let names = [Isa::Avx512, Isa::Avx2, Isa::Portable].map(Isa::name);
    assert_eq!(names, ["avx512", "avx2", "portable"]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_takes_n_it_pads_little() {
    use avx512::{choose, pads_little};
    let takes = |n: usize| pads_little(choose(n, 64), n);
    for n in [64, 96, 320, 512, 640, 1000, 1280, 4096] {
        assert!(takes(n), "n = {n} should run on the AVX-512 kernels");
    }
    for n in [1, 13, 40, 80, 160] {
        assert!(!takes(n), "n = {n} should go to the gemm crate");
    }
}
