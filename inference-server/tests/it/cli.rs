//! The `inference-server` binary: `make-test-model` writes a model `inspect` recognises, and
//! `inspect` fails with the tensor's name on a damaged file.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inference-server"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("binary runs")
}

#[test]
fn make_test_model_then_inspect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tiny.safetensors");
    let file = file.to_str().expect("utf-8 path");
    let made = run(&[
        "make-test-model",
        "--out",
        file,
        "--variant",
        "sd2",
        "--layout",
        "single-file",
        "--dtype",
        "f16",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let inspected = run(&["inspect", "--model", file]);
    let stdout = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    assert!(stdout.contains("layout: SingleFile"), "{stdout}");
    assert!(stdout.contains("variant: Sd2"), "{stdout}");
    assert!(stdout.contains("\"hidden_act\":\"gelu\""), "{stdout}");

    let bytes = std::fs::read(file).expect("read model");
    std::fs::write(file, &bytes[..bytes.len() / 2]).expect("truncate model");
    let broken = run(&["inspect", "--model", file]);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success());
    assert!(
        stderr.contains("truncated") || stderr.contains("tensor"),
        "{stderr}"
    );
}
