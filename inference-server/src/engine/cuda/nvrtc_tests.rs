//! Tests of the NVRTC compile path: every kernel family compiles for the architectures we
//! target, and the disk cache turns a second compile into a read.

use super::*;

/// The architectures the project targets (Ampere datacenter/consumer, Ada, Hopper).
const TARGET_ARCHS: [&str; 4] = ["sm_80", "sm_86", "sm_89", "sm_90"];

/// True when NVRTC can be loaded. Without it: a failure when `CI` is set (CI installs it, see
/// `.ci/run`), otherwise a loud skip line.
pub(in crate::engine::cuda) fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc_present() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {e} (CI is set, so NVRTC is required)")
        }
        Err(e) => {
            eprintln!("\n*** SKIPPED {test}: {e} ***\n");
            false
        }
    }
}

#[test]
fn every_family_compiles_for_every_target_arch() {
    if !nvrtc_or_skip("every_family_compiles_for_every_target_arch") {
        return;
    }
    for (family, _) in kernel_sources() {
        for arch in TARGET_ARCHS {
            let ptx = compile(family, arch).unwrap_or_else(|e| panic!("{family} for {arch}: {e}"));
            assert!(
                ptx.contains(&format!(".target {}", arch)),
                "{family}/{arch}: PTX for another target"
            );
            assert!(
                ptx.contains(".entry"),
                "{family}/{arch}: no kernel in the PTX"
            );
        }
    }
}

#[test]
fn every_exported_kernel_is_in_the_ptx() {
    if !nvrtc_or_skip("every_exported_kernel_is_in_the_ptx") {
        return;
    }
    // Spot-check names the wrappers build with format!: a rename on one side shows here.
    let expect = [
        (
            "elementwise",
            &[
                "silu_f16",
                "gelu_bf16",
                "affine_f32",
                "clamp_f16",
                "add_f32",
                "div_contig_bf16",
                "geglu_f16",
            ][..],
        ),
        ("reduce", &["sum_middle_f32", "softmax_last_bf16"][..]),
        ("norm", &["layer_norm_f16", "group_norm_f32"][..]),
        (
            "layout",
            &[
                "upsample_nearest2x_f16",
                "pad2d_f32",
                "strided_copy_bf16",
                "copy_block_f16",
                "index_select_f32",
            ][..],
        ),
        (
            "cast",
            &["cast_f32_f16", "cast_bf16_f16", "cast_f16_f16"][..],
        ),
        ("conv", &["im2col_f16", "add_channel_bias_f32"][..]),
        (
            "conv_igemm",
            &[
                "conv_igemm_f32",
                "conv_igemm_f16",
                "conv_igemm_bf16",
                "conv_igemm_mma_f16",
            ][..],
        ),
        (
            "attention",
            &["attention_f32", "attention_f16", "attention_bf16"][..],
        ),
        ("attention_mma", &["attention_mma_f16"][..]),
    ];
    for (family, names) in expect {
        let ptx = compile(family, "sm_80").unwrap();
        for name in names {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{family}: no entry {name}"
            );
        }
    }
    for family in ["attention_mma", "conv_igemm"] {
        let mma = compile(family, "sm_80").unwrap();
        assert!(
            mma.contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
            "{family}: tensor-core path missing from the PTX"
        );
    }
}

#[test]
fn second_compile_is_a_cache_hit() {
    if !nvrtc_or_skip("second_compile_is_a_cache_hit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path().join("kernels"));
    let (first, hit) = cache.get_or_compile("cast", "sm_86").unwrap();
    assert!(!hit, "an empty cache cannot hit");
    let (second, hit) = cache.get_or_compile("cast", "sm_86").unwrap();
    assert!(hit, "the second call must read the cache");
    assert_eq!(first, second);
    // Another architecture is another entry; no temporary file is left behind.
    let (_, hit) = cache.get_or_compile("cast", "sm_90").unwrap();
    assert!(!hit);
    let names: Vec<String> = std::fs::read_dir(&cache.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("cast-") && n.ends_with(".ptx")),
        "{names:?}"
    );
}

#[test]
fn compile_errors_name_the_problem() {
    assert!(matches!(ptx_source("nope"), Err(CudaError::Unsupported(_))));
    assert!(matches!(
        compile("cast", "volta!"),
        Err(CudaError::Unsupported(_))
    ));
    if !nvrtc_or_skip("compile_errors_name_the_problem") {
        return;
    }
    // An architecture NVRTC does not know is NVRTC's error, with its log.
    let err = compile("cast", "sm_1").unwrap_err();
    assert!(matches!(err, CudaError::Nvrtc { .. }), "{err}");
    assert!(err.to_string().contains("cast.cu"), "{err}");
}

#[test]
fn sources_and_keys() {
    let src = ptx_source("norm").unwrap();
    assert!(src.starts_with(PRELUDE) && src.contains("group_norm_"));
    assert!(
        kernel_sources()
            .iter()
            .all(|(_, s)| !s.contains("#include")),
        "kernel files must not #include"
    );
    assert_eq!(virtual_arch("sm_89").unwrap(), "compute_89");
    assert_eq!(virtual_arch("compute_90").unwrap(), "compute_90");
    assert_ne!(stable_hash(&["a", "bc"]), stable_hash(&["ab", "c"]));
    assert_eq!(stable_hash(&["x"]), stable_hash(&["x"]));
    let dir = KernelCache::default_dir();
    if std::env::var_os("HOME").is_some() {
        assert!(dir.unwrap().ends_with("sdserve/kernels"));
    }
}
