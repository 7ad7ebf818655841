//! Every job ends: a stalled inference server, an unreachable one, and a job that runs too
//! long each end the job (failed or timed out) with its callback, after bounded attempts.

use std::time::Duration;

use crate::support;
use support::receiver::Receiver;
use support::service::{Service, submit_request, test_config};
use webhook_service::jobs::dispatch::DispatchPolicy;

fn quick_policy() -> DispatchPolicy {
    DispatchPolicy {
        stall_timeout: Duration::from_millis(500),
        queue_timeout: Duration::from_secs(5),
        max_attempts: 2,
        default_execution_timeout: None,
        preview_every: 0,
        lease: Duration::from_secs(30),
    }
}

async fn start(inference: std::net::SocketAddr, policy: DispatchPolicy) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_service::Config {
        dispatch: policy,
        ..test_config(&dir, inference)
    };
    Service::start(config, dir).await
}

/// Submits `prompt` and returns the callback the receiver got for it.
async fn callback_for(service: &Service, receiver: &Receiver, prompt: &str) -> serde_json::Value {
    let request = submit_request(prompt, &receiver.url("/hook"), "standard", "");
    service.jobs().await.submit_job(request).await.unwrap();
    receiver
        .wait_for(1, Duration::from_secs(30))
        .await
        .remove(0)
        .json()
}

#[tokio::test]
async fn a_stalled_inference_server_fails_the_job_after_its_attempts() {
    let (inference, fake) = support::inference::start().await;
    let service = start(inference, quick_policy()).await;
    let receiver = Receiver::http().await;
    let callback = callback_for(&service, &receiver, "hang").await;
    assert_eq!(callback["type"], "job.failed", "{callback}");
    let error = callback["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("failed 2 times") && error.contains("no event from the inference server"),
        "{error}"
    );
    assert_eq!(
        fake.calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one call per attempt, no more"
    );
    service.stop().await;
}

#[tokio::test]
async fn an_unreachable_inference_server_fails_the_job_after_its_attempts() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let service = start(closed, quick_policy()).await;
    let receiver = Receiver::http().await;
    let callback = callback_for(&service, &receiver, "p").await;
    assert_eq!(callback["type"], "job.failed", "{callback}");
    assert!(
        callback["data"]["error"]
            .as_str()
            .unwrap()
            .contains("failed 2 times"),
        "{callback}"
    );
    service.stop().await;
}

#[tokio::test]
async fn the_default_execution_timeout_ends_a_long_job_as_timed_out() {
    let (inference, _) = support::inference::start().await;
    let policy = DispatchPolicy {
        default_execution_timeout: Some(Duration::from_secs(1)),
        ..quick_policy()
    };
    let policy = DispatchPolicy {
        stall_timeout: Duration::from_secs(10),
        ..policy
    };
    let service = start(inference, policy).await;
    let receiver = Receiver::http().await;
    let callback = callback_for(&service, &receiver, "slow").await;
    assert_eq!(callback["type"], "job.failed", "{callback}");
    assert_eq!(callback["data"]["status"], "timed_out", "{callback}");
    service.stop().await;
}

#[tokio::test]
async fn a_store_failure_keeps_the_result_and_does_not_generate_again() {
    let (inference, fake) = support::inference::start().await;
    let service = start(
        inference,
        DispatchPolicy {
            stall_timeout: Duration::from_secs(10),
            ..quick_policy()
        },
    )
    .await;
    let receiver = Receiver::http().await;
    // Simulate a full disk for results: every image insert fails until the trigger is dropped.
    let db = rusqlite::Connection::open(service.dir.path().join("jobs.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    // The service creates the schema as it starts.
    for _ in 0..200 {
        if db.prepare("SELECT 1 FROM images").is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let request = submit_request("p", &receiver.url("/hook"), "standard", "");
    let id = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        receiver.requests().is_empty(),
        "nothing is delivered while the result cannot be stored"
    );
    db.execute_batch("DROP TRIGGER full_disk;").unwrap();
    let callback = receiver
        .wait_for(1, Duration::from_secs(30))
        .await
        .remove(0)
        .json();
    assert_eq!(
        (
            callback["type"].as_str(),
            callback["data"]["job_id"].as_str()
        ),
        (Some("job.completed"), Some(id.as_str()))
    );
    assert_eq!(
        fake.calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the image was generated once"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_full_inference_queue_is_waited_out_without_spending_attempts() {
    let (inference, fake) = support::inference::start().await;
    let service = start(inference, quick_policy()).await;
    let receiver = Receiver::http().await;
    // Three refusals with a full queue, two attempts allowed: the job still completes.
    let callback = callback_for(&service, &receiver, "busy").await;
    assert_eq!(callback["type"], "job.completed", "{callback}");
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    service.stop().await;
}

/// A store that does not stall: while another process holds the database's write lock, reads
/// are answered at once and writes get 503 with `Retry-After` after a bounded wait.
#[tokio::test]
async fn a_held_write_lock_gives_503_with_retry_after_and_reads_still_answer() {
    let (inference, _) = support::inference::start().await;
    let service = start(inference, quick_policy()).await;
    let body = serde_json::json!({"params": {"prompt": "p", "steps": 2}, "webhook": {"url": "https://hooks.example.com/in", "format": "standard"}});
    let url = format!("http://{}/v1/jobs", service.http);
    let accepted: serde_json::Value = support::http()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["job_id"].as_str().unwrap().to_owned();

    let db = rusqlite::Connection::open(service.dir.path().join("jobs.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let started = std::time::Instant::now();
    let read = support::http()
        .get(format!("{url}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a read waited {:?} for the write lock",
        started.elapsed()
    );
    let write = support::http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(write.status(), 503);
    assert_eq!(write.headers()["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the write waited {:?}",
        started.elapsed()
    );
    db.execute_batch("ROLLBACK;").unwrap();
    service.stop().await;
}

#[tokio::test]
async fn a_result_that_cannot_be_stored_survives_a_restart_without_generating_again() {
    let (inference, fake) = support::inference::start().await;
    let service = start(
        inference,
        DispatchPolicy {
            stall_timeout: Duration::from_secs(10),
            ..quick_policy()
        },
    )
    .await;
    let receiver = Receiver::http().await;
    let db_path = service.dir.path().join("jobs.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for _ in 0..200 {
        if db.prepare("SELECT 1 FROM images").is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    db.execute_batch("CREATE TRIGGER full_disk BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;")
        .unwrap();
    let request = submit_request("p", &receiver.url("/hook"), "standard", "");
    let id = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let kept = service.dir.path().join(format!("jobs.db.spool/{id}.json"));
    for _ in 0..200 {
        if kept.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        kept.exists(),
        "the result is kept on disk while the store refuses it"
    );
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let dir = service.stop().await;

    // The disk has room again; the next run stores the kept result and generates nothing.
    db.execute_batch("DROP TRIGGER full_disk;").unwrap();
    let (inference, fresh) = support::inference::start().await;
    let config = webhook_service::Config {
        dispatch: quick_policy(),
        ..support::service::test_config(&dir, inference)
    };
    let service = Service::start(config, dir).await;
    let callback = receiver
        .wait_for(1, Duration::from_secs(30))
        .await
        .remove(0)
        .json();
    assert_eq!(
        (
            callback["type"].as_str(),
            callback["data"]["job_id"].as_str()
        ),
        (Some("job.completed"), Some(id.as_str()))
    );
    assert_eq!(
        fresh.calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was generated again"
    );
    assert!(!kept.exists(), "the kept result is gone once stored");
    service.stop().await;
}
