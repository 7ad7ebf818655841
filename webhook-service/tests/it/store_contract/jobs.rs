//! Jobs: the round trip, idempotency, the queue and its leases, finishing and retention.

use webhook_service::domain::{DeliveryStatus, JobStatus, NextStep};
use webhook_service::store::StoreError;

use super::fixtures::{URL, attempt, delivery, finish, job};
use super::{Backend, ids};

contract!(
    job_round_trips_with_every_field,
    idempotency_keys_are_scoped_per_owner_and_compare_content,
    queue_is_claimed_oldest_first_and_requeued,
    an_expired_lease_is_taken_over_and_its_first_holder_stops,
    finish_job_writes_everything_once_and_atomically,
    retention_purges_old_settled_jobs_with_their_images_and_deliveries,
);

async fn job_round_trips_with_every_field(b: Backend) {
    let store = b.store.as_ref();
    let mut new = job("j1", Some("key-1"), 123);
    new.owner = "key_owner".into();
    new.execution_timeout_ms = Some(90_000);
    new.extra_parts = vec![new.params.clone()];
    let inserted = store.insert_job(new.clone()).await.unwrap();
    assert_eq!((inserted.id.as_str(), inserted.deduplicated), ("j1", false));
    let got = store.get_job("j1").await.unwrap().unwrap();
    let (g, n) = (&got.job, &new);
    assert_eq!(
        (&g.id, &g.owner, &g.created_at_ms),
        (&n.id, &n.owner, &n.created_at_ms)
    );
    assert_eq!((&g.params, &g.extra_parts), (&n.params, &n.extra_parts));
    assert_eq!(g.execution_timeout_ms, n.execution_timeout_ms);
    assert_eq!(g.webhook, n.webhook);
    assert_eq!(g.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(g.vendor_context, n.vendor_context);
    assert_eq!(
        got.job.webhook.secret.as_ref().unwrap().expose(),
        "bearer-s3cret"
    );
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
    let active = store.active_jobs("key_owner", 10).await.unwrap();
    assert_eq!(ids(&active, |j| &j.job.id), ["j1"]);
    assert_eq!(
        store.count_jobs("key_owner").await.unwrap(),
        vec![(JobStatus::Queued, 1)]
    );
    assert!(store.count_jobs("someone-else").await.unwrap().is_empty());
}

async fn idempotency_keys_are_scoped_per_owner_and_compare_content(b: Backend) {
    let store = b.store.as_ref();
    store.insert_job(job("j1", Some("k"), 1)).await.unwrap();
    let again = store.insert_job(job("j2", Some("k"), 2)).await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.deduplicated, again.same_request),
        ("j1", true, true),
        "the same request again is the earlier job"
    );
    assert!(store.get_job("j2").await.unwrap().is_none());
    // The same key for other content: the earlier job, flagged (the APIs answer 409).
    let mut other = job("j3", Some("k"), 3);
    other.params.prompt = "something else".into();
    let reused = store.insert_job(other).await.unwrap();
    assert_eq!(
        (reused.id.as_str(), reused.deduplicated, reused.same_request),
        ("j1", true, false)
    );
    // Another owner's key of the same text is another key.
    let mut theirs = job("j4", Some("k"), 4);
    theirs.owner = "key_b".into();
    let inserted = store.insert_job(theirs).await.unwrap();
    assert_eq!((inserted.id.as_str(), inserted.deduplicated), ("j4", false));
    // No key: never deduplicated.
    for id in ["j5", "j6"] {
        assert!(
            !store
                .insert_job(job(id, None, 5))
                .await
                .unwrap()
                .deduplicated
        );
    }
}

async fn queue_is_claimed_oldest_first_and_requeued(b: Backend) {
    let store = b.store.as_ref();
    for (id, created) in [("late", 30), ("early", 10), ("middle", 20)] {
        store.insert_job(job(id, None, created)).await.unwrap();
    }
    let first = store
        .claim_next_job("replica-a", 500, 60_500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.job.id, "early");
    assert_eq!(
        (first.status, first.dispatched_at_ms, first.started_at_ms),
        (JobStatus::Queued, Some(500), None),
        "dispatched, but queued until the inference server starts it"
    );
    store.set_queue_position("early", 3).await.unwrap();
    let got = store.get_job("early").await.unwrap().unwrap();
    assert_eq!(got.queue_position, Some(3));
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
    store.mark_started("early", 580).await.unwrap();
    let got = store.get_job("early").await.unwrap().unwrap();
    assert_eq!(
        got.started_at_ms,
        Some(550),
        "a later part's start keeps the first"
    );
    for (now, expected) in [(501, "middle"), (502, "late")] {
        let claimed = store
            .claim_next_job("replica-a", now, now + 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.job.id, expected);
    }
    assert!(
        store
            .claim_next_job("replica-a", 503, 60_503)
            .await
            .unwrap()
            .is_none()
    );
    // Every lease ran out by 100_000: all three go back to the queue.
    assert_eq!(store.requeue_running_jobs(100_000).await.unwrap(), 3);
    let middle = store.get_job("middle").await.unwrap().unwrap();
    assert_eq!(
        (middle.status, middle.dispatched_at_ms),
        (JobStatus::Queued, None)
    );
    let again = store
        .claim_next_job("replica-a", 100_001, 160_001)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.job.id.as_str(), again.started_at_ms),
        ("early", None)
    );
}

async fn an_expired_lease_is_taken_over_and_its_first_holder_stops(b: Backend) {
    let store = b.store.as_ref();
    store.insert_job(job("j", None, 10)).await.unwrap();
    let claimed = store
        .claim_next_job("a", 100, 1_100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.id, "j");
    store.mark_started("j", 150).await.unwrap();
    store.set_progress("j", 5, 30, "sd15").await.unwrap();
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
    // A replica never takes over its own lease.
    assert!(
        store
            .claim_next_job("a", 2_001, 3_001)
            .await
            .unwrap()
            .is_none()
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
            taken.dispatched_at_ms,
            taken.progress_step
        ),
        ("j", JobStatus::Queued, None, Some(2_001), 0)
    );
    assert!(
        !store.renew_job_lease("j", "a", 4_000).await.unwrap(),
        "a lost it"
    );
    assert!(store.renew_job_lease("j", "b", 4_000).await.unwrap());
    // An ended job's lease cannot be renewed, and it is never claimed again.
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

async fn finish_job_writes_everything_once_and_atomically(b: Backend) {
    let store = b.store.as_ref();
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store
        .claim_next_job("replica-a", 200, 60_200)
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
    assert_eq!(
        (
            got.status,
            got.started_at_ms,
            got.finished_at_ms,
            got.image_count
        ),
        (JobStatus::Completed, Some(950), Some(1000), 2)
    );
    assert_eq!(got.info_json, done.info_json);
    assert_eq!(store.list_images("j1").await.unwrap(), done.images);
    assert_eq!(
        store.get_image("j1", 1).await.unwrap(),
        Some(done.images[1].png.clone())
    );
    assert_eq!(store.get_image("j1", 7).await.unwrap(), None);
    let listed = store.list_deliveries("j1").await.unwrap();
    assert_eq!(ids(&listed, |d| &d.id), ["d1", "d2"]);
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
    // A non-final status is refused.
    let mut not_final = finish("j1", 3000, Vec::new());
    not_final.status = JobStatus::Running;
    assert!(store.finish_job(not_final).await.is_err());
    // A job answered at once is stored finished, never queued.
    let inserted = store
        .insert_finished_job(job("now", None, 5), finish("now", 6, Vec::new()))
        .await
        .unwrap();
    assert!(!inserted.deduplicated);
    let now = store.get_job("now").await.unwrap().unwrap();
    assert_eq!((now.status, now.image_count), (JobStatus::Completed, 2));
    assert!(store.claim_next_job("a", 10, 20).await.unwrap().is_none());
}

async fn retention_purges_old_settled_jobs_with_their_images_and_deliveries(b: Backend) {
    let store = b.store.as_ref();
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
