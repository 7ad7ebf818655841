//! Tests of the SQLite store through the `Store` trait, plus raw SQL where a test needs to
//! tamper with the file.

use std::path::Path;
use std::time::Instant;

use sdserve_proto::v1::GenerationParams;
use webhook_service::domain::{
    AttemptRecord, DeliveryStatus, EventKind, Format, JobFinish, JobStatus, NewDelivery, NewJob,
    NextStep, Secret, StoredImage, WebhookTarget,
};
use webhook_service::store::sqlite::SqliteStore;
use webhook_service::store::{Store, StoreError};

const URL: &str = "https://hooks.example.com/in";

fn job(id: &str, key: Option<&str>, created_at_ms: i64) -> NewJob {
    NewJob {
        id: id.to_owned(),
        params: GenerationParams {
            prompt: "a (red:1.2) fox".into(),
            negative_prompt: "blurry".into(),
            seed: Some(42),
            steps: Some(30),
            cfg_scale: Some(6.5),
            init_image: vec![0, 1, 2, 255],
            styles: vec!["cinematic".into(), "noir".into()],
            ..Default::default()
        },
        webhook: WebhookTarget {
            url: URL.to_owned(),
            secret: Some(Secret::new("bearer-s3cret")),
            format: Format::Runpod,
            events: vec![EventKind::Completed, EventKind::Failed],
            signing_secret: Some(Secret::new("whsec_c2lnbmluZw==")),
        },
        idempotency_key: key.map(str::to_owned),
        vendor_context: serde_json::json!({"input": {"api_name": "txt2img"}, "n": [1, 2]}),
        created_at_ms,
    }
}

fn delivery(id: &str, url: &str) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        event: EventKind::Completed,
        url: url.to_owned(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

fn finish(job_id: &str, at: i64, deliveries: Vec<NewDelivery>) -> JobFinish {
    JobFinish {
        job_id: job_id.to_owned(),
        status: JobStatus::Completed,
        error: None,
        images: (0..2)
            .map(|i| StoredImage {
                index: i,
                seed: 42 + i64::from(i),
                infotext: format!("a fox\nSeed: {}", 42 + i),
                png: vec![0x89, b'P', b'N', b'G', i as u8],
            })
            .collect(),
        info_json: "{\"seed\":42}".into(),
        started_at_ms: Some(at - 50),
        finished_at_ms: at,
        deliveries,
    }
}

fn attempt(delivery_id: &str, number: u32, at_ms: i64, next: NextStep) -> AttemptRecord {
    let ok = next == NextStep::Succeeded;
    AttemptRecord {
        delivery_id: delivery_id.to_owned(),
        number,
        at_ms,
        status_code: Some(if ok { 200 } else if next == NextStep::Gone { 410 } else { 503 }),
        error: (!ok).then(|| "HTTP 503".to_owned()),
        duration_ms: 12,
        response_excerpt: "body".into(),
        next,
    }
}

/// A store holding job `j1` finished at 1000 with deliveries `d1`, `d2` to [`URL`].
async fn with_deliveries(store: &SqliteStore) {
    store.insert_job(job("j1", None, 100)).await.unwrap();
    let done = finish("j1", 1000, vec![delivery("d1", URL), delivery("d2", URL)]);
    assert!(store.finish_job(done).await.unwrap());
}

async fn status(store: &SqliteStore, id: &str) -> DeliveryStatus {
    store.get_delivery(id).await.unwrap().unwrap().status
}

fn raw(path: &Path, sql: &str) {
    rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn job_round_trips_with_every_field() {
    let store = SqliteStore::open_in_memory().unwrap();
    let new = job("j1", Some("key-1"), 123);
    let inserted = store.insert_job(new.clone()).await.unwrap();
    assert_eq!((inserted.id.as_str(), inserted.deduplicated), ("j1", false));
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.job.id, "j1");
    assert_eq!(got.job.params, new.params);
    assert_eq!(got.job.webhook, new.webhook);
    assert_eq!(got.job.webhook.secret.as_ref().unwrap().expose(), "bearer-s3cret");
    assert_eq!(got.job.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(got.job.vendor_context, new.vendor_context);
    assert_eq!(got.job.created_at_ms, 123);
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!((got.started_at_ms, got.finished_at_ms, got.image_count), (None, None, 0));
    assert!(store.get_job("nope").await.unwrap().is_none());

    store.set_progress("j1", 3, 30, "sd15").await.unwrap();
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!((got.progress_step, got.progress_total, got.model.as_str()), (3, 30, "sd15"));
}

#[tokio::test]
async fn idempotency_key_returns_the_earlier_job() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.insert_job(job("j1", Some("k"), 1)).await.unwrap();
    let again = store.insert_job(job("j2", Some("k"), 2)).await.unwrap();
    assert_eq!((again.id.as_str(), again.deduplicated), ("j1", true));
    assert!(store.get_job("j2").await.unwrap().is_none());
    // No key: never deduplicated.
    for id in ["j3", "j4"] {
        assert!(!store.insert_job(job(id, None, 3)).await.unwrap().deduplicated);
    }
}

#[tokio::test]
async fn queue_is_claimed_oldest_first_and_requeued() {
    let store = SqliteStore::open_in_memory().unwrap();
    for (id, created) in [("late", 30), ("early", 10), ("middle", 20)] {
        store.insert_job(job(id, None, created)).await.unwrap();
    }
    let first = store.claim_next_job(500).await.unwrap().unwrap();
    assert_eq!(first.job.id, "early");
    assert_eq!((first.status, first.started_at_ms), (JobStatus::Running, Some(500)));
    assert_eq!(store.claim_next_job(501).await.unwrap().unwrap().job.id, "middle");
    assert_eq!(store.claim_next_job(502).await.unwrap().unwrap().job.id, "late");
    assert!(store.claim_next_job(503).await.unwrap().is_none());

    assert_eq!(store.requeue_running_jobs().await.unwrap(), 3);
    assert_eq!(store.get_job("middle").await.unwrap().unwrap().status, JobStatus::Queued);
    assert_eq!(store.claim_next_job(600).await.unwrap().unwrap().job.id, "early");
}

#[tokio::test]
async fn finish_job_writes_everything_once_and_atomically() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store.claim_next_job(200).await.unwrap();

    // A duplicate delivery id fails the transaction: nothing of it may remain.
    let bad = finish("j1", 1000, vec![delivery("d1", URL), delivery("d1", URL)]);
    assert!(matches!(store.finish_job(bad).await, Err(StoreError::Database(_))));
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!((got.status, got.image_count), (JobStatus::Running, 0));
    assert!(store.list_images("j1").await.unwrap().is_empty());

    let done = finish("j1", 1000, vec![delivery("d1", URL), delivery("d2", URL)]);
    assert!(store.finish_job(done.clone()).await.unwrap());
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Completed);
    assert_eq!((got.started_at_ms, got.finished_at_ms, got.image_count), (Some(950), Some(1000), 2));
    assert_eq!(store.list_images("j1").await.unwrap(), done.images);
    assert_eq!(store.get_image("j1", 1).await.unwrap(), Some(done.images[1].png.clone()));
    assert_eq!(store.get_image("j1", 7).await.unwrap(), None);
    let listed = store.list_deliveries("j1").await.unwrap();
    assert_eq!(listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d1", "d2"]);
    for d in &listed {
        assert_eq!((d.status, d.next_attempt_at_ms, d.created_at_ms), (DeliveryStatus::Pending, Some(1000), 1000));
        assert!(d.attempts.is_empty() && d.last_error.is_none());
    }

    // Already final: a late cancel writes nothing.
    let mut cancel = finish("j1", 2000, vec![delivery("d3", URL)]);
    cancel.status = JobStatus::Canceled;
    cancel.images.clear();
    assert!(!store.finish_job(cancel).await.unwrap());
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!((got.status, got.finished_at_ms, got.image_count), (JobStatus::Completed, Some(1000), 2));
    assert_eq!(store.list_deliveries("j1").await.unwrap().len(), 2);
    assert!(store.get_delivery("d3").await.unwrap().is_none());
}

#[tokio::test]
async fn leases_expire_and_the_same_delivery_is_claimed_again() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(1000));
    assert!(store.claim_due_deliveries(999, 5000, 10).await.unwrap().is_empty());

    let first = store.claim_due_deliveries(1000, 5000, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let task = &first[0];
    assert_eq!((task.id.as_str(), task.job_id.as_str(), task.url.as_str()), ("d1", "j1", URL));
    assert_eq!(task.payload, b"{\"id\":\"d1\"}");
    assert_eq!(task.secret.as_ref().unwrap().expose(), "bearer-s3cret");
    assert_eq!(task.signing_secret.as_ref().unwrap().expose(), "whsec_c2lnbmluZw==");
    assert_eq!((task.attempts_made, task.round_attempts), (0, 0));
    assert_eq!(status(&store, "d1").await, DeliveryStatus::Sending);

    let second = store.claim_due_deliveries(1001, 6000, 10).await.unwrap();
    assert_eq!(second.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["d2"]);
    assert!(store.claim_due_deliveries(4999, 9000, 10).await.unwrap().is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(5000));

    let again = store.claim_due_deliveries(5000, 9000, 10).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["d1"]);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(6000));
}

#[tokio::test]
async fn record_attempt_applies_each_next_step() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();

    // RetryAt: pending again, due then, attempt counted.
    store.record_attempt(attempt("d1", 1, 1000, NextStep::RetryAt(3000))).await.unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!((d1.status, d1.next_attempt_at_ms), (DeliveryStatus::Pending, Some(3000)));
    assert_eq!(d1.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(d1.attempts, vec![attempt("d1", 1, 1000, NextStep::RetryAt(3000))]);
    assert!(store.claim_due_deliveries(2999, 9000, 10).await.unwrap().is_empty());
    let task = store.claim_due_deliveries(3000, 9000, 10).await.unwrap().remove(0);
    assert_eq!((task.id.as_str(), task.attempts_made, task.round_attempts), ("d1", 1, 1));

    // Exhausted.
    store.record_attempt(attempt("d1", 2, 3000, NextStep::Exhausted)).await.unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!((d1.status, d1.next_attempt_at_ms, d1.attempts.len()), (DeliveryStatus::Exhausted, None, 2));
    assert_eq!(d1.attempts[1].next, NextStep::Exhausted);

    // Succeeded keeps the last failure for inspection and clears the due time.
    store.record_attempt(attempt("d2", 1, 1000, NextStep::Succeeded)).await.unwrap();
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!((d2.status, d2.next_attempt_at_ms), (DeliveryStatus::Succeeded, None));
    assert_eq!(d2.attempts[0].status_code, Some(200));
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test]
async fn gone_marks_the_url_and_redeliver_clears_it() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    let other = "https://other.example.com/hook";
    store.insert_job(job("j2", None, 100)).await.unwrap();
    assert!(store.finish_job(finish("j2", 1000, vec![delivery("o1", other)])).await.unwrap());

    store.claim_due_deliveries(1000, 5000, 1).await.unwrap(); // d1 only
    store.record_attempt(attempt("d1", 1, 1000, NextStep::Gone)).await.unwrap();
    assert_eq!(status(&store, "d1").await, DeliveryStatus::Gone);

    // d2 (same URL) goes to gone instead of being handed out; o1 is unaffected.
    let tasks = store.claim_due_deliveries(1001, 100_000, 10).await.unwrap();
    assert_eq!(tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["o1"]);
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!((d2.status, d2.next_attempt_at_ms), (DeliveryStatus::Gone, None));
    assert!(d2.last_error.unwrap().contains("410 Gone"));

    let again = store.redeliver("d2", 7000).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.status, again.next_attempt_at_ms), ("d2", DeliveryStatus::Pending, Some(7000)));
    assert!(store.redeliver("missing", 7000).await.unwrap().is_none());
    let task = store.claim_due_deliveries(7000, 9000, 10).await.unwrap().remove(0);
    assert_eq!((task.id.as_str(), task.round_attempts), ("d2", 0));
    // The URL is no longer gone: d1, redelivered too, is handed out as well.
    store.redeliver("d1", 7001).await.unwrap();
    let task = store.claim_due_deliveries(7001, 9000, 10).await.unwrap().remove(0);
    assert_eq!((task.id.as_str(), task.attempts_made, task.round_attempts), ("d1", 1, 0));
    assert_eq!(store.get_delivery("d1").await.unwrap().unwrap().attempts.len(), 1);
}

#[tokio::test]
async fn a_late_attempt_after_redeliver_is_kept_but_does_not_change_state() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();
    store.redeliver("d1", 1500).await.unwrap();
    store.record_attempt(attempt("d1", 1, 1000, NextStep::Gone)).await.unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!((d1.status, d1.next_attempt_at_ms, d1.attempts.len()), (DeliveryStatus::Pending, Some(1500), 1));
    let tasks = store.claim_due_deliveries(1500, 9000, 10).await.unwrap();
    let task = tasks.iter().find(|t| t.id == "d1").expect("not marked gone");
    assert_eq!((task.attempts_made, task.round_attempts), (1, 0));
}

#[tokio::test]
async fn pending_deliveries_survive_dropping_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        with_deliveries(&store).await;
        store.claim_due_deliveries(1000, 5000, 1).await.unwrap(); // d1 leased, then "crash"
    } // dropped without any shutdown call
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_job("j1").await.unwrap().unwrap().status, JobStatus::Completed);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(1000));
    let ids = |tasks: Vec<webhook_service::domain::DeliveryTask>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(store.claim_due_deliveries(1000, 9000, 10).await.unwrap()), ["d2"]);
    assert_eq!(ids(store.claim_due_deliveries(5000, 9000, 10).await.unwrap()), ["d1"]);
}

#[tokio::test]
async fn reopening_is_fine_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    SqliteStore::open(&path).unwrap().insert_job(job("j1", None, 1)).await.unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.get_job("j1").await.unwrap().is_some());
    drop(store);

    raw(&path, &format!("PRAGMA user_version = {}", SqliteStore::SCHEMA_VERSION + 1));
    match SqliteStore::open(&path) {
        Err(StoreError::Open { path: shown, detail }) => {
            assert!(shown.ends_with("store.db"), "{shown}");
            assert!(detail.contains("newer"), "{detail}");
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
}

#[tokio::test]
async fn undecodable_values_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    with_deliveries(&store).await;
    store.insert_job(job("j2", None, 2)).await.unwrap();
    store.insert_job(job("j3", None, 3)).await.unwrap();
    raw(
        &path,
        "UPDATE jobs SET status = 'exploded' WHERE id = 'j1';
         UPDATE jobs SET params = X'FFFFFFFF' WHERE id = 'j2';
         UPDATE jobs SET vendor_context = '{not json' WHERE id = 'j3';
         UPDATE deliveries SET status = 'lost' WHERE id = 'd2';",
    );
    let corrupt = |r: Result<_, StoreError>| match r {
        Err(StoreError::Corrupt { what, .. }) => what,
        other => panic!("expected Corrupt, got {:?}", other.map(|_: ()| ())),
    };
    assert_eq!(corrupt(store.get_job("j1").await.map(drop)), "jobs.status");
    assert_eq!(corrupt(store.get_job("j2").await.map(drop)), "jobs.params");
    assert_eq!(corrupt(store.get_job("j3").await.map(drop)), "jobs.vendor_context");
    assert_eq!(corrupt(store.get_delivery("d2").await.map(drop)), "deliveries.status");
    assert!(store.get_delivery("d1").await.unwrap().is_some());
}

/// Claim + record throughput; run with `cargo test -p webhook-service --test store --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement"]
async fn delivery_throughput() {
    const JOBS: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("perf.db")).unwrap();
    for i in 0..JOBS {
        let id = format!("job-{i:05}");
        store.insert_job(job(&id, None, i as i64)).await.unwrap();
        let mut done = finish(&id, 1000, vec![delivery(&format!("msg-{i:05}"), URL)]);
        done.images.clear();
        store.finish_job(done).await.unwrap();
    }
    let started = Instant::now();
    let mut delivered = 0;
    loop {
        let tasks = store.claim_due_deliveries(2000, 60_000, 64).await.unwrap();
        if tasks.is_empty() {
            break;
        }
        for task in tasks {
            let next = NextStep::Succeeded;
            store.record_attempt(attempt(&task.id, task.attempts_made + 1, 2000, next)).await.unwrap();
            delivered += 1;
        }
    }
    let rate = delivered as f64 / started.elapsed().as_secs_f64();
    println!("{delivered} deliveries claimed and recorded at {rate:.0}/s");
    assert_eq!(delivered, JOBS);
    assert!(rate >= 2000.0, "{rate:.0}/s");
}
