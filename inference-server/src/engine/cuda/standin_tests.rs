//! The GPU code path without a GPU: `driver.rs` and `lt.rs` through cudarc, kernels compiled
//! by the real NVRTC and loaded as PTX, on the standin (`emu/standin/`: libcuda, cuBLAS and
//! cuBLASLt written from NVIDIA's documentation, which run kernels through the emulator and
//! check what the real libraries check). Under `cuda-emu` alone, those two files never run.
//!
//! cudarc opens the libraries by name through the loader's search path, which is fixed when a
//! process starts, so each test reruns this test binary with the standin first on
//! `LD_LIBRARY_PATH` and `SDSERVE_TEST_DEVICE=cuda:0`, running the device and pipeline suites
//! there, and reads the child's result. On a real GPU (`scripts/gpu-check.sh` sets
//! `SDSERVE_TEST_DEVICE`) these tests step aside: the suites run on the hardware itself.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The folder build.rs linked the standin into (`libcuda.so` etc. point at it).
const STANDIN_DIR: &str = env!("SDSERVE_STANDIN_DIR");

/// The device and pipeline suites, as test-name filters.
const SUITES: [&str; 2] = [
    "engine::cuda::device_tests::",
    "engine::cuda::pipeline_tests::",
];

/// False when these tests should not run: inside a child (or on a real GPU), or without NVRTC
/// outside CI (a loud skip, as the NVRTC tests do; in CI NVRTC is required).
fn should_run(test: &str) -> bool {
    std::env::var_os("SDSERVE_TEST_DEVICE").is_none() && super::nvrtc::tests::nvrtc_or_skip(test)
}

/// Runs this test binary on the standin with `filters` and the standin settings in `env`, with
/// a kernel cache of its own (so NVRTC really compiles), and returns its output.
fn rerun(filters: &[&str], env: &[(&str, &str)]) -> Output {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let cache = std::env::temp_dir().join(format!(
        "sdserve-standin-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let search = match std::env::var("LD_LIBRARY_PATH") {
        Ok(rest) if !rest.is_empty() => format!("{STANDIN_DIR}:{rest}"),
        _ => STANDIN_DIR.to_string(),
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(filters)
        .args(["--test-threads", "2"])
        .env("SDSERVE_TEST_DEVICE", "cuda:0")
        .env("LD_LIBRARY_PATH", search)
        .env("XDG_CACHE_HOME", &cache);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("rerun the test binary");
    let _ = std::fs::remove_dir_all(&cache);
    out
}

/// (passed, failed) from libtest's "test result:" line.
fn counts(out: &Output) -> (usize, usize) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_else(|| panic!("no test result in the child's output:\n{}", tail(out)));
    let number = |word: &str| {
        line.split(';')
            .find(|part| part.trim_end().ends_with(word))
            .and_then(|part| part.split_whitespace().rev().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no `{word}` count in {line:?}"))
    };
    (number("passed"), number("failed"))
}

/// The end of the child's stdout and stderr, for failure messages.
fn tail(out: &Output) -> String {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut start = all.len().saturating_sub(6000);
    while !all.is_char_boundary(start) {
        start += 1;
    }
    all[start..].to_string()
}

#[test]
fn device_and_pipeline_suites_pass_through_the_driver_on_the_standin() {
    if !should_run("device_and_pipeline_suites_pass_through_the_driver_on_the_standin") {
        return;
    }
    let log = std::env::temp_dir().join(format!("sdserve-launches-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = rerun(
        &SUITES,
        &[
            ("SDSERVE_STANDIN_SM", "80"),
            (
                "SDSERVE_STANDIN_LAUNCH_LOG",
                log.to_str().expect("a UTF-8 temp path"),
            ),
        ],
    );
    let (passed, failed) = counts(&out);
    assert!(
        out.status.success() && failed == 0,
        "on the standin (sm_80):\n{}",
        tail(&out)
    );
    // Every op test and both pipelines: a filter that matched nothing must not pass.
    assert!(passed >= 8, "only {passed} tests ran:\n{}", tail(&out));

    // Every kernel, at every block size the suites launched it with, within the registers a
    // block may use on sm_80 and sm_90 (what ptxas allocates; see launch_fit.rs).
    let launches = std::fs::read_to_string(&log).expect("the standin's launch log");
    let _ = std::fs::remove_file(&log);
    let (problems, kernels) = super::launch_fit::check_launches(&launches, &["sm_80", "sm_90"])
        .unwrap_or_else(|e| panic!("ptxas report: {e}"));
    assert!(
        problems.is_empty(),
        "launches that fail on a GPU:\n{}",
        problems.join("\n")
    );
    assert!(
        kernels >= 20,
        "only {kernels} kernels were launched:\n{launches}"
    );
}

/// Runs the device suite on the standin set up by `env` and checks every test in it passed.
fn device_suite_passes(env: &[(&str, &str)], setting: &str) {
    let out = rerun(&SUITES[..1], env);
    let (passed, failed) = counts(&out);
    assert!(
        out.status.success() && failed == 0 && passed >= 6,
        "{setting}:\n{}",
        tail(&out)
    );
}

#[test]
fn without_tensor_cores_the_plain_kernels_pass_through_the_driver() {
    if should_run("without_tensor_cores_the_plain_kernels_pass_through_the_driver") {
        device_suite_passes(&[("SDSERVE_STANDIN_SM", "75")], "on the standin (sm_75)");
    }
}

#[test]
fn without_cublaslt_kernels_biased_gemms_fall_back_to_cublas_and_a_bias_add() {
    // The standin's cuBLASLt then finds no algorithm for any problem (as the real one may for
    // some shapes): every linear layer takes driver.rs's fallback path.
    if should_run("without_cublaslt_kernels_biased_gemms_fall_back_to_cublas_and_a_bias_add") {
        device_suite_passes(
            &[("SDSERVE_STANDIN_LT_ALGOS", "0")],
            "without cuBLASLt kernels",
        );
    }
}

#[test]
fn a_driver_older_than_nvrtc_is_a_start_up_error_naming_both_versions() {
    if !should_run("a_driver_older_than_nvrtc_is_a_start_up_error_naming_both_versions") {
        return;
    }
    // CUDA 12.0's driver JIT-compiles PTX ISA 8.0 at most; every NVRTC CI installs is newer.
    let out = rerun(
        &["engine::cuda::device_tests::nn_ops"],
        &[("SDSERVE_STANDIN_DRIVER", "12.0")],
    );
    let text = tail(&out);
    assert!(!out.status.success(), "the device opened:\n{text}");
    assert!(
        text.contains("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")
            && text.contains("newer than this driver (CUDA 12.0)")
            && text.contains("compiled by NVRTC 1"),
        "the error does not name the versions:\n{text}"
    );
}

#[test]
fn a_driver_that_cannot_capture_graphs_leaves_every_step_to_run_as_it_comes() {
    if !should_run("a_driver_that_cannot_capture_graphs_leaves_every_step_to_run_as_it_comes") {
        return;
    }
    // Both tests read SDSERVE_STANDIN_GRAPHS and then expect nothing to be recorded.
    let out = rerun(
        &[
            "engine::cuda::pipeline_tests::the_recorded_unet_step",
            "engine::cuda::device_tests::a_recording_that",
        ],
        &[("SDSERVE_STANDIN_GRAPHS", "0")],
    );
    let (passed, failed) = counts(&out);
    assert!(
        out.status.success() && failed == 0 && passed == 2,
        "with graph capture refused:\n{}",
        tail(&out)
    );
}

#[test]
fn under_profile_the_driver_times_kernels_with_events() {
    if should_run("under_profile_the_driver_times_kernels_with_events") {
        let out = rerun(
            &["engine::cuda::device_tests::under_profile"],
            &[("SDSERVE_PROFILE", "1")],
        );
        let (passed, failed) = counts(&out);
        assert!(
            out.status.success() && failed == 0 && passed == 1,
            "under SDSERVE_PROFILE=1:\n{}",
            tail(&out)
        );
    }
}
