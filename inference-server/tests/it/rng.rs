//! Seeds → initial noise against the committed goldens (`goldens/rng.json`, written by
//! `parity/rng_goldens.py` from torch 2.x on CPU and a restatement of A1111's
//! `modules/rng_philox.py`).
//!
//! Tolerances: the CPU generator (MT19937 + torch's AVX2 Box-Muller, restated fma for fma)
//! and Philox (double-precision Box-Muller rounded to f32) must match **bit for bit**; the
//! subseed slerp (torch reduces in f32, we in f64) within 1e-5 absolute.

use inference_server::sampling::rng::{
    Generator, GeneratorKind, RANDOM_SEED_BOUND, RngError, batch_noise, image_noise, randn,
    resolve_seed,
};
use serde_json::Value;

fn goldens() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/goldens/rng.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read rng.json")).expect("json")
}

fn source(case: &Value) -> GeneratorKind {
    GeneratorKind::parse(case["source"].as_str().expect("source")).expect("known source")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("shape")
        .iter()
        .map(|x| x.as_u64().expect("dim") as usize)
        .collect()
}

/// Bit-exact comparison; reports the number of differing values and the largest difference.
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    let max = bad
        .iter()
        .map(|&i| (got[i] - want[i]).abs())
        .fold(0f32, f32::max);
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ (max |Δ| {max:e}), first at {}: {} vs {}",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

#[test]
fn randn_matches_goldens_bit_for_bit() {
    let g = goldens();
    let cases = g["cases"].as_array().expect("cases");
    assert!(cases.len() >= 48);
    for case in cases {
        let src = source(case);
        let seed = case["seed"].as_u64().expect("seed");
        let shape = shape(&case["shape"]);
        let what = format!("{src} seed {seed} shape {shape:?}");
        let got = randn(src, seed, &shape).expect("randn");
        if case.get("values").is_some() {
            assert_bits(&got, &floats(&case["values"]), &what);
        } else {
            let first = floats(&case["first"]);
            let last = floats(&case["last"]);
            assert_bits(&got[..first.len()], &first, &format!("{what} first"));
            assert_bits(
                &got[got.len() - last.len()..],
                &last,
                &format!("{what} last"),
            );
            let sum: f64 = got.iter().map(|&x| f64::from(x)).sum();
            let want = case["sum"].as_f64().expect("sum");
            assert!((sum - want).abs() < 1e-6, "{what}: sum {sum} vs {want}");
        }
    }
}

#[test]
fn philox_matches_rng_philox_docstring() {
    // modules/rng_philox.py: Generator(seed=0).randn(shape=(3, 4)).
    let want: [f64; 12] = [
        -0.924_662_6,
        -0.425_344_15,
        -2.643_845_7,
        0.145_183_88,
        -0.120_866_47,
        -0.579_725_64,
        -0.622_851_2,
        -0.328_387_1,
        -1.074_542_3,
        -0.363_144_07,
        -1.671_050_7,
        2.265_505,
    ];
    let got = randn(GeneratorKind::Philox, 0, &[3, 4]).expect("randn");
    for (g, w) in got.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs {w}");
    }
}

#[test]
fn subseed_slerp_matches_a1111() {
    let g = goldens();
    for case in g["subseeds"].as_array().expect("subseeds") {
        let src = source(case);
        let seed = case["seed"].as_u64().expect("seed");
        let subseed = case["subseed"].as_u64().expect("subseed");
        let strength = case["strength"].as_f64().expect("strength") as f32;
        let shape = shape(&case["shape"]);
        let batch = case["batch"].as_array().expect("batch");
        let got = batch_noise(src, seed, subseed, strength, batch.len(), &shape).expect("noise");
        let per: usize = shape.iter().product();
        for (i, item) in batch.iter().enumerate() {
            let want = floats(item);
            let max = got[i * per..(i + 1) * per]
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max <= 1e-5,
                "{src} seed {seed}+{i} subseed {subseed}: max |Δ| {max:e}"
            );
        }
    }
}

#[test]
fn subseed_strength_edges() {
    let shape = [4, 8, 8];
    for src in [GeneratorKind::TorchCpu, GeneratorKind::Philox] {
        let a = randn(src, 5, &shape).expect("randn");
        let b = randn(src, 6, &shape).expect("randn");
        assert_eq!(image_noise(src, 5, 6, 0.0, &shape).expect("noise"), a);
        let full = image_noise(src, 5, 6, 1.0, &shape).expect("noise");
        let max = full
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "strength 1 gives the subseed's noise ({max:e})");
        // Same seed and subseed: A1111's linear fallback, which returns the noise itself.
        let same = image_noise(src, 5, 5, 0.4, &shape).expect("noise");
        let max = same
            .iter()
            .zip(&a)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-6);
    }
}

#[test]
fn batch_items_use_consecutive_seeds() {
    let shape = [4, 8, 8];
    let batch = batch_noise(GeneratorKind::TorchCpu, 41, 0, 0.0, 3, &shape).expect("batch");
    for i in 0..3 {
        let one = randn(GeneratorKind::TorchCpu, 41 + i as u64, &shape).expect("randn");
        assert_eq!(&batch[i * 256..(i + 1) * 256], &one[..]);
    }
}

#[test]
fn random_seed_is_reported_and_reproducible() {
    let seeds: Vec<u64> = (0..8).map(|_| resolve_seed(-1)).collect();
    assert!(seeds.iter().all(|&s| s < RANDOM_SEED_BOUND));
    assert!(
        seeds.windows(2).any(|w| w[0] != w[1]),
        "random seeds differ"
    );
    let s = seeds[0];
    for src in [GeneratorKind::TorchCpu, GeneratorKind::Philox] {
        let a = image_noise(src, s, 0, 0.0, &[4, 8, 8]).expect("noise");
        let b = randn(src, s, &[4, 8, 8]).expect("randn");
        assert_eq!(a, b, "noise reproducible from the reported seed");
    }
    assert_eq!(resolve_seed(42), 42);
    assert_eq!(
        resolve_seed(-3),
        u64::MAX - 2,
        "other negatives wrap as in PyTorch"
    );
}

#[test]
fn names_and_bad_input() {
    assert_eq!(GeneratorKind::parse("CPU"), Some(GeneratorKind::TorchCpu));
    assert_eq!(GeneratorKind::parse("GPU"), Some(GeneratorKind::Philox));
    assert_eq!(GeneratorKind::parse("NV"), Some(GeneratorKind::Philox));
    assert_eq!("philox".parse::<GeneratorKind>(), Ok(GeneratorKind::Philox));
    assert!(matches!(
        "tpu".parse::<GeneratorKind>(),
        Err(RngError::UnknownSource(_))
    ));
    let huge = [usize::MAX, 2];
    assert!(matches!(
        randn(GeneratorKind::TorchCpu, 0, &huge),
        Err(RngError::TooLarge(_))
    ));
    assert!(matches!(
        image_noise(GeneratorKind::Philox, 0, 1, 0.5, &[16]),
        Err(RngError::SubseedRank(_))
    ));
    assert!(image_noise(GeneratorKind::Philox, 0, 1, f32::NAN, &[4, 2, 2]).is_err());
    assert_eq!(
        randn(GeneratorKind::TorchCpu, 0, &[0, 4]).expect("empty"),
        Vec::<f32>::new()
    );
    // CPU seeds are truncated to 32 bits, as PyTorch's mt19937 does.
    assert_eq!(
        randn(GeneratorKind::TorchCpu, 5, &[20]).expect("a"),
        randn(GeneratorKind::TorchCpu, (1 << 32) + 5, &[20]).expect("b")
    );
}

/// Consecutive draws from one generator (what ancestral samplers take after the initial
/// latent) equal consecutive `torch.randn(n, generator=g)` / `rng_philox` calls, bit for bit,
/// including sizes that are not a multiple of 16 and the cached normal of the small-size path.
#[test]
fn consecutive_draws_continue_the_generator() {
    let g = goldens();
    let sequences = g["sequences"].as_array().expect("sequences");
    assert_eq!(sequences.len(), 4);
    for case in sequences {
        let seed = case["seed"].as_u64().expect("seed");
        let mut generator = Generator::new(source(case), seed);
        for (k, (size, want)) in shape(&case["sizes"])
            .into_iter()
            .zip(case["draws"].as_array().expect("draws"))
            .enumerate()
        {
            let got = generator.randn(&[size]).expect("draw");
            assert_bits(
                &got,
                &floats(want),
                &format!("{} seed {seed} draw {k} ({size})", case["source"]),
            );
        }
    }
}
