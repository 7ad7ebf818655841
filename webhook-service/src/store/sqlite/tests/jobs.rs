//! Jobs: round trip, idempotency, queue and finishing.

use super::fixtures::*;
use crate::domain::{DeliveryStatus, JobStatus, NextStep};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

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
    assert_eq!(
        got.job.webhook.secret.as_ref().unwrap().expose(),
        "bearer-s3cret"
    );
    assert_eq!(got.job.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(got.job.vendor_context, new.vendor_context);
    assert_eq!(got.job.created_at_ms, 123);
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!(
        (got.started_at_ms, got.finished_at_ms, got.image_count),
        (None, None, 0)
    );
    assert!(store.get_job("nope").await.unwrap().is_none());

    store.set_progress("j1", 3, 30, "sd15").await.unwrap();
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(
        (got.progress_step, got.progress_total, got.model.as_str()),
        (3, 30, "sd15")
    );
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
        assert!(
            !store
                .insert_job(job(id, None, 3))
                .await
                .unwrap()
                .deduplicated
        );
    }
}

#[tokio::test]
async fn queue_is_claimed_oldest_first_and_requeued() {
    let store = SqliteStore::open_in_memory().unwrap();
    for (id, created) in [("late", 30), ("early", 10), ("middle", 20)] {
        store.insert_job(job(id, None, created)).await.unwrap();
    }
    let first = store
        .claim_next_job("replica-a", 500, 500 + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.job.id, "early");
    // Dispatched, but queued until the inference server starts it.
    assert_eq!(
        (first.status, first.dispatched_at_ms, first.started_at_ms),
        (JobStatus::Queued, Some(500), None)
    );
    store.set_queue_position("early", 3).await.unwrap();
    assert_eq!(
        store
            .get_job("early")
            .await
            .unwrap()
            .unwrap()
            .queue_position,
        Some(3)
    );
    store.mark_started("early", 550).await.unwrap();
    let started = store.get_job("early").await.unwrap().unwrap();
    assert_eq!(
        (
            started.status,
            started.started_at_ms,
            started.queue_position
        ),
        (JobStatus::Running, Some(550), None)
    );
    // A later part's start keeps the first.
    store.mark_started("early", 580).await.unwrap();
    assert_eq!(
        store.get_job("early").await.unwrap().unwrap().started_at_ms,
        Some(550)
    );
    assert_eq!(
        store
            .claim_next_job("replica-a", 501, 501 + 60_000)
            .await
            .unwrap()
            .unwrap()
            .job
            .id,
        "middle"
    );
    assert_eq!(
        store
            .claim_next_job("replica-a", 502, 502 + 60_000)
            .await
            .unwrap()
            .unwrap()
            .job
            .id,
        "late"
    );
    assert!(
        store
            .claim_next_job("replica-a", 503, 503 + 60_000)
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(store.requeue_running_jobs(0).await.unwrap(), 3);
    assert_eq!(
        store.get_job("middle").await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        store
            .claim_next_job("replica-a", 600, 600 + 60_000)
            .await
            .unwrap()
            .unwrap()
            .job
            .id,
        "early"
    );
}

#[tokio::test]
async fn finish_job_writes_everything_once_and_atomically() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store
        .claim_next_job("replica-a", 200, 200 + 60_000)
        .await
        .unwrap();
    store.mark_started("j1", 200).await.unwrap();

    // A duplicate delivery id fails the transaction: nothing of it may remain.
    let bad = finish("j1", 1000, vec![delivery("d1", URL), delivery("d1", URL)]);
    assert!(matches!(
        store.finish_job(bad).await,
        Err(StoreError::Database(_))
    ));
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!((got.status, got.image_count), (JobStatus::Running, 0));
    assert!(store.list_images("j1").await.unwrap().is_empty());

    let done = finish("j1", 1000, vec![delivery("d1", URL), delivery("d2", URL)]);
    assert!(store.finish_job(done.clone()).await.unwrap());
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Completed);
    assert_eq!(
        (got.started_at_ms, got.finished_at_ms, got.image_count),
        (Some(950), Some(1000), 2)
    );
    assert_eq!(store.list_images("j1").await.unwrap(), done.images);
    assert_eq!(
        store.get_image("j1", 1).await.unwrap(),
        Some(done.images[1].png.clone())
    );
    assert_eq!(store.get_image("j1", 7).await.unwrap(), None);
    let listed = store.list_deliveries("j1").await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d1", "d2"]
    );
    for d in &listed {
        assert_eq!(
            (d.status, d.next_attempt_at_ms, d.created_at_ms),
            (DeliveryStatus::Pending, Some(1000), 1000)
        );
        assert!(d.attempts.is_empty() && d.last_error.is_none());
    }

    // Already final: a late cancel writes nothing.
    let mut cancel = finish("j1", 2000, vec![delivery("d3", URL)]);
    cancel.status = JobStatus::Canceled;
    cancel.images.clear();
    assert!(!store.finish_job(cancel).await.unwrap());
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.finished_at_ms, got.image_count),
        (JobStatus::Completed, Some(1000), 2)
    );
    assert_eq!(store.list_deliveries("j1").await.unwrap().len(), 2);
    assert!(store.get_delivery("d3").await.unwrap().is_none());
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    store.insert_job(job("j1", None, 1)).await.unwrap();
    for file in ["jobs.db", "jobs.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} is {mode:o}");
    }
}

#[tokio::test]
async fn retention_purges_old_settled_jobs_with_their_images_and_deliveries() {
    let store = SqliteStore::open_in_memory().unwrap();
    for id in ["old-settled", "old-pending", "recent"] {
        store.insert_job(job(id, None, 100)).await.unwrap();
    }
    let at = |id: &str| if id == "recent" { 9_000 } else { 1_000 };
    for id in ["old-settled", "old-pending", "recent"] {
        let delivery = delivery(&format!("d-{id}"), URL);
        store
            .finish_job(finish(id, at(id), vec![delivery]))
            .await
            .unwrap();
    }
    // The old job's delivery succeeded; the other old one's is still being retried.
    store.claim_due_deliveries(1_000, 2_000, 10).await.unwrap();
    store
        .record_attempt(attempt("d-old-settled", 1, 1_000, NextStep::Succeeded))
        .await
        .unwrap();
    store
        .record_attempt(attempt(
            "d-old-pending",
            1,
            1_000,
            NextStep::RetryAt(50_000),
        ))
        .await
        .unwrap();

    assert_eq!(store.purge_finished(5_000).await.unwrap(), 1);
    assert!(store.get_job("old-settled").await.unwrap().is_none());
    assert!(store.list_images("old-settled").await.unwrap().is_empty());
    assert!(store.get_delivery("d-old-settled").await.unwrap().is_none());
    assert!(
        store.get_job("old-pending").await.unwrap().is_some(),
        "a job whose callback is still retried stays"
    );
    assert!(store.get_job("recent").await.unwrap().is_some());
}

#[tokio::test]
async fn reads_do_not_wait_for_a_held_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    store.insert_job(job("j1", None, 1)).await.unwrap();
    // Another process holds the write lock (an open write transaction).
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; UPDATE jobs SET model = 'held' WHERE id = 'j1';")
        .unwrap();
    let started = std::time::Instant::now();
    let read = store.get_job("j1").await.unwrap().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the read waited {:?}",
        started.elapsed()
    );
    assert_eq!(read.model, "", "the uncommitted write is not visible");
    other.execute_batch("ROLLBACK;").unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_first_holder_stops() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.insert_job(job("j", None, 10)).await.unwrap();
    assert_eq!(
        store
            .claim_next_job("a", 100, 1_100)
            .await
            .unwrap()
            .unwrap()
            .job
            .id,
        "j"
    );
    store.mark_started("j", 150).await.unwrap();
    // Held and renewed: nobody else takes it.
    assert!(store.renew_job_lease("j", "a", 2_000).await.unwrap());
    assert!(
        store
            .claim_next_job("b", 1_500, 2_500)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store.renew_job_lease("j", "b", 3_000).await.unwrap(),
        "b does not hold it"
    );
    // a stops renewing (it died): after the lease, b takes the job, and it starts over.
    let taken = store
        .claim_next_job("b", 2_001, 3_001)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            taken.job.id.as_str(),
            taken.status,
            taken.started_at_ms,
            taken.dispatched_at_ms
        ),
        ("j", JobStatus::Queued, None, Some(2_001))
    );
    assert!(
        !store.renew_job_lease("j", "a", 4_000).await.unwrap(),
        "a lost it"
    );
    assert!(store.renew_job_lease("j", "b", 4_000).await.unwrap());
    // An ended job's lease cannot be renewed.
    store
        .finish_job(finish("j", 2_500, Vec::new()))
        .await
        .unwrap();
    assert!(!store.renew_job_lease("j", "b", 5_000).await.unwrap());
    assert!(
        store
            .claim_next_job("c", 9_000, 10_000)
            .await
            .unwrap()
            .is_none()
    );
}
