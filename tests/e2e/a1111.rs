//! A1111's API checked by its PyPI client, `webuiapi`, used unchanged
//! (`scripts/webuiapi_check.py`) against the real services and the tiny model: txt2img,
//! img2img, models, samplers, schedulers, options, progress, interrupt and png-info. Without a
//! Python that can `import webuiapi` (`SDSERVE_WEBUIAPI_PYTHON`, default `python3`) the test
//! is skipped with a message, unless `CI` is set: there it fails.

use std::process::{Command, Stdio};

use crate::harness::Product;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webuiapi_against_both_services() {
    let python = std::env::var("SDSERVE_WEBUIAPI_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let importable = Command::new(&python)
        .args(["-c", "import webuiapi"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {python:?} cannot import webuiapi (see .ci/run)"
        );
        eprintln!("SKIPPED: {python:?} cannot import webuiapi; see .ci/run for the venv");
        return;
    }
    let product = Product::start().await;
    let key = product.named_key("a1111-user").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/webuiapi_check.py");
    let port = product.http.port().to_string();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .args([
                script,
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--steps",
                "3",
            ])
            .env("SDSERVE_API_KEY", &key)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("webuiapi_check.py finished within 300 s")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("every check passed"),
        "webuiapi_check.py:\n{text}"
    );
}
