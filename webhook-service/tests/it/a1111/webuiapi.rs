//! `webuiapi`, the PyPI client of A1111's API, used unchanged against the service:
//! `scripts/webuiapi_check.py` run with the Python named by `SDSERVE_WEBUIAPI_PYTHON`
//! (default `python3`). Without a Python that can `import webuiapi` the test is skipped with a
//! message, unless `CI` is set: there it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::A1111;

/// The longest the script may run.
const LIMIT: Duration = Duration::from_secs(180);

fn python() -> String {
    std::env::var("SDSERVE_WEBUIAPI_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether `python` can import webuiapi.
fn has_webuiapi(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import webuiapi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` to its end or `LIMIT` (then kills it); exit success and the output.
fn run_bounded(mut command: Command) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll python").is_some() {
            break;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("python output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webuiapi_works_unchanged_against_the_service() {
    let python = python();
    if !has_webuiapi(&python) {
        let hint = "python3 -m venv .venv-webuiapi && .venv-webuiapi/bin/pip install webuiapi, then SDSERVE_WEBUIAPI_PYTHON=.venv-webuiapi/bin/python";
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but {python:?} cannot import webuiapi; {hint}");
        }
        eprintln!(
            "SKIPPED webuiapi_works_unchanged_against_the_service: {python:?} cannot import webuiapi ({hint})"
        );
        return;
    }
    let a = A1111::start().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/webuiapi_check.py");
    let mut command = Command::new(&python);
    command
        .arg(script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &a.service.http.port().to_string(),
            "--steps",
            "3",
        ])
        .env("SDSERVE_API_KEY", &a.key);
    let (ok, output) = tokio::task::spawn_blocking(move || run_bounded(command))
        .await
        .unwrap();
    assert!(ok, "scripts/webuiapi_check.py failed:\n{output}");
    assert!(output.contains("every check passed"), "{output}");
    assert!(
        a.fake.seen.lock().unwrap().len() >= 3,
        "txt2img, img2img and txt2img after switching the model ran"
    );
}
