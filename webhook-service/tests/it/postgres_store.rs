//! The PostgreSQL store against a real server (`SDSERVE_TEST_POSTGRES`, see
//! `support/postgres.rs`; skipped without it, failing in CI): the SQLite store's unit tests
//! ported (what callers rely on, whichever store they use), then what only sharing a database
//! needs: leases between replicas, concurrent claims, concurrent migrations, change
//! notifications and the shared key. Fixtures are the SQLite tests' own.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast;
use webhook_service::domain::{
    ApiKeyRecord, DeliveryStatus, JobStatus, KeyLimits, KeyWebhook, NewApiKey, NextStep, Secret,
};
use webhook_service::store::postgres::PostgresStore;
use webhook_service::store::secrets::{SecretBox, SecretsKey};
use webhook_service::store::{Redelivery, Store, StoreChange, StoreError};

use crate::support::postgres::database;

// The SQLite tests' fixtures, loaded a second time: `sqlite_store` keeps its copy private.
#[allow(clippy::duplicate_mod)]
#[path = "../../src/store/sqlite/tests/fixtures.rs"]
mod fixtures;

use fixtures::{URL, attempt, delivery, finish, job};

/// A database and a store on it, or return (skipped).
macro_rules! setup {
    ($test:literal) => {{
        let Some(db) = database($test).await else {
            return;
        };
        let store = db.store().await;
        (db, store)
    }};
}

/// Job `j1` finished at 1000 with deliveries `d1`, `d2` to [`URL`].
async fn with_deliveries(store: &PostgresStore) {
    store.insert_job(job("j1", None, 100)).await.unwrap();
    let done = finish("j1", 1000, vec![delivery("d1", URL), delivery("d2", URL)]);
    assert!(store.finish_job(done).await.unwrap());
}

async fn status(store: &PostgresStore, id: &str) -> DeliveryStatus {
    store.get_delivery(id).await.unwrap().unwrap().status
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|t| id(t).to_owned()).collect()
}

// ---- jobs -------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_job_round_trips_with_every_field() {
    let (_db, store) = setup!("postgres_job_round_trips_with_every_field");
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

#[tokio::test]
async fn postgres_idempotency_keys_are_scoped_per_owner_and_compare_content() {
    let (_db, store) = setup!("postgres_idempotency_keys_are_scoped_per_owner");
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

#[tokio::test]
async fn postgres_queue_is_claimed_oldest_first_and_requeued() {
    let (_db, store) = setup!("postgres_queue_is_claimed_oldest_first_and_requeued");
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

#[tokio::test]
async fn postgres_requeue_leaves_jobs_under_a_live_lease_alone() {
    let (_db, store) = setup!("postgres_requeue_leaves_jobs_under_a_live_lease_alone");
    for (id, created) in [("held", 1), ("expired", 2), ("waiting", 3)] {
        store.insert_job(job(id, None, created)).await.unwrap();
    }
    // "held" is run by a live replica until 10_000; "expired"'s replica died at 2_000.
    store.claim_next_job("a", 100, 10_000).await.unwrap();
    store.mark_started("held", 150).await.unwrap();
    store.claim_next_job("b", 100, 2_000).await.unwrap();
    store.mark_started("expired", 150).await.unwrap();

    assert_eq!(store.requeue_running_jobs(5_000).await.unwrap(), 1);
    let held = store.get_job("held").await.unwrap().unwrap();
    assert_eq!(
        (held.status, held.started_at_ms, held.dispatched_at_ms),
        (JobStatus::Running, Some(150), Some(100)),
        "another replica is running it"
    );
    assert!(store.renew_job_lease("held", "a", 20_000).await.unwrap());
    let expired = store.get_job("expired").await.unwrap().unwrap();
    assert_eq!(
        (
            expired.status,
            expired.started_at_ms,
            expired.dispatched_at_ms
        ),
        (JobStatus::Queued, None, None)
    );
    let waiting = store.get_job("waiting").await.unwrap().unwrap();
    assert_eq!(
        waiting.dispatched_at_ms, None,
        "never dispatched: untouched"
    );
    assert!(
        !store.renew_job_lease("expired", "b", 20_000).await.unwrap(),
        "b's claim is gone"
    );
}

#[tokio::test]
async fn postgres_an_expired_lease_is_taken_over_and_its_first_holder_stops() {
    let (_db, store) = setup!("postgres_an_expired_lease_is_taken_over");
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

#[tokio::test]
async fn postgres_finish_job_writes_everything_once_and_atomically() {
    let (_db, store) = setup!("postgres_finish_job_writes_everything_once_and_atomically");
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

#[tokio::test]
async fn postgres_retention_purges_old_settled_jobs_with_their_images_and_deliveries() {
    let (_db, store) = setup!("postgres_retention_purges_old_settled_jobs");
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

// ---- deliveries -------------------------------------------------------------------------

#[tokio::test]
async fn postgres_leases_expire_and_the_same_delivery_is_claimed_again() {
    let (_db, store) = setup!("postgres_leases_expire_and_the_same_delivery_is_claimed_again");
    with_deliveries(&store).await;
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(1000));
    assert!(
        store
            .claim_due_deliveries(999, 5000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let first = store.claim_due_deliveries(1000, 5000, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let task = &first[0];
    assert_eq!(
        (task.id.as_str(), task.job_id.as_str(), task.url.as_str()),
        ("d1", "j1", URL)
    );
    assert_eq!(task.payload, b"{\"id\":\"d1\"}");
    assert_eq!(task.secret.as_ref().unwrap().expose(), "bearer-s3cret");
    assert_eq!(
        task.signing_secret.as_ref().unwrap().expose(),
        "whsec_c2lnbmluZw=="
    );
    assert_eq!((task.attempts_made, task.round_attempts), (0, 0));
    assert_eq!(status(&store, "d1").await, DeliveryStatus::Sending);

    let second = store.claim_due_deliveries(1001, 6000, 10).await.unwrap();
    assert_eq!(ids(&second, |t| &t.id), ["d2"]);
    assert!(
        store
            .claim_due_deliveries(4999, 9000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(5000));

    let again = store.claim_due_deliveries(5000, 9000, 10).await.unwrap();
    assert_eq!(ids(&again, |t| &t.id), ["d1"]);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(6000));
}

#[tokio::test]
async fn postgres_record_attempt_applies_each_next_step() {
    let (_db, store) = setup!("postgres_record_attempt_applies_each_next_step");
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();

    store
        .record_attempt(attempt("d1", 1, 1000, NextStep::RetryAt(3000)))
        .await
        .unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!(
        (d1.status, d1.next_attempt_at_ms),
        (DeliveryStatus::Pending, Some(3000))
    );
    assert_eq!(d1.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        d1.attempts,
        vec![attempt("d1", 1, 1000, NextStep::RetryAt(3000))]
    );
    assert!(
        store
            .claim_due_deliveries(2999, 9000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let task = store
        .claim_due_deliveries(3000, 9000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (task.id.as_str(), task.attempts_made, task.round_attempts),
        ("d1", 1, 1)
    );

    store
        .record_attempt(attempt("d1", 2, 3000, NextStep::Exhausted))
        .await
        .unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!(
        (d1.status, d1.next_attempt_at_ms, d1.attempts.len()),
        (DeliveryStatus::Exhausted, None, 2)
    );
    assert_eq!(d1.attempts[1].next, NextStep::Exhausted);

    store
        .record_attempt(attempt("d2", 1, 1000, NextStep::Succeeded))
        .await
        .unwrap();
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!(
        (d2.status, d2.next_attempt_at_ms),
        (DeliveryStatus::Succeeded, None)
    );
    assert_eq!(d2.attempts[0].status_code, Some(200));
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
    // An attempt for an unknown delivery is refused, writing nothing.
    assert!(
        store
            .record_attempt(attempt("no-such-delivery", 1, 1000, NextStep::Succeeded))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn postgres_gone_marks_the_url_and_redeliver_clears_it() {
    let (_db, store) = setup!("postgres_gone_marks_the_url_and_redeliver_clears_it");
    with_deliveries(&store).await;
    let other = "https://other.example.com/hook";
    store.insert_job(job("j2", None, 100)).await.unwrap();
    assert!(
        store
            .finish_job(finish("j2", 1000, vec![delivery("o1", other)]))
            .await
            .unwrap()
    );
    store.claim_due_deliveries(1000, 5000, 1).await.unwrap(); // d1 only
    store
        .record_attempt(attempt("d1", 1, 1000, NextStep::Gone))
        .await
        .unwrap();
    assert_eq!(status(&store, "d1").await, DeliveryStatus::Gone);

    // d2 (same URL) goes to gone instead of being handed out; o1 is unaffected.
    let tasks = store.claim_due_deliveries(1001, 100_000, 10).await.unwrap();
    assert_eq!(ids(&tasks, |t| &t.id), ["o1"]);
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!(
        (d2.status, d2.next_attempt_at_ms),
        (DeliveryStatus::Gone, None)
    );
    assert!(d2.last_error.unwrap().contains("410 Gone"));

    let Redelivery::Gone(kept) = store.redeliver("d2", 7000, false).await.unwrap() else {
        panic!("not refused")
    };
    assert_eq!(kept.status, DeliveryStatus::Gone);
    assert_eq!(
        status(&store, "d2").await,
        DeliveryStatus::Gone,
        "nothing changed"
    );
    let Redelivery::Redelivered(again) = store.redeliver("d2", 7000, true).await.unwrap() else {
        panic!("not redelivered")
    };
    assert_eq!(
        (again.id.as_str(), again.status, again.next_attempt_at_ms),
        ("d2", DeliveryStatus::Pending, Some(7000))
    );
    assert!(matches!(
        store.redeliver("missing", 7000, true).await.unwrap(),
        Redelivery::NotFound
    ));
    let task = store
        .claim_due_deliveries(7000, 9000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((task.id.as_str(), task.round_attempts), ("d2", 0));
    // The URL is no longer gone: d1, redelivered without force, is handed out as well.
    store.redeliver("d1", 7001, false).await.unwrap();
    let task = store
        .claim_due_deliveries(7001, 9000, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (task.id.as_str(), task.attempts_made, task.round_attempts),
        ("d1", 1, 0)
    );
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!(d1.attempts.len(), 1, "its history is kept");
}

#[tokio::test]
async fn postgres_a_late_attempt_after_redeliver_is_kept_but_does_not_change_state() {
    let (_db, store) = setup!("postgres_a_late_attempt_after_redeliver");
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();
    store.redeliver("d1", 1500, false).await.unwrap();
    store
        .record_attempt(attempt("d1", 1, 1000, NextStep::Gone))
        .await
        .unwrap();
    let d1 = store.get_delivery("d1").await.unwrap().unwrap();
    assert_eq!(
        (d1.status, d1.next_attempt_at_ms, d1.attempts.len()),
        (DeliveryStatus::Pending, Some(1500), 1)
    );
    let tasks = store.claim_due_deliveries(1500, 9000, 10).await.unwrap();
    let task = tasks
        .iter()
        .find(|t| t.id == "d1")
        .expect("not marked gone");
    assert_eq!((task.attempts_made, task.round_attempts), (1, 0));
}

// ---- keys and secrets -------------------------------------------------------------------

fn api_key(id: &str, name: &str, secret: Option<&str>) -> NewApiKey {
    NewApiKey {
        record: ApiKeyRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            prefix: "sk_live_ab".into(),
            created_at_ms: id.len() as i64,
            revoked_at_ms: None,
            limits: KeyLimits {
                max_in_flight: Some(4),
                per_minute: None,
            },
            webhook: secret.map(|s| KeyWebhook {
                url: URL.into(),
                secret: Some(Secret::new(s)),
            }),
        },
        hash: [id.len() as u8; 32],
    }
}

#[tokio::test]
async fn postgres_keys_are_inserted_found_listed_and_revoked() {
    let (_db, store) = setup!("postgres_keys_are_inserted_found_listed_and_revoked");
    let first = api_key("key_1", "ci", Some("leonardo-cb-key"));
    let second = api_key("key_22", "laptop", None);
    store.insert_key(first.clone()).await.unwrap();
    store.insert_key(second.clone()).await.unwrap();
    assert!(
        store.insert_key(first.clone()).await.is_err(),
        "a duplicate id or hash is refused"
    );
    assert_eq!(
        store.find_key(first.hash).await.unwrap(),
        Some(first.record.clone())
    );
    assert_eq!(store.find_key([0; 32]).await.unwrap(), None);
    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed, vec![first.record.clone(), second.record.clone()]);

    assert!(store.revoke_key("laptop", 99).await.unwrap(), "by name");
    assert!(
        !store.revoke_key("key_22", 100).await.unwrap(),
        "already revoked"
    );
    assert!(store.revoke_key("key_1", 101).await.unwrap(), "by id");
    assert!(!store.revoke_key("nobody", 102).await.unwrap());
    let revoked = store.find_key(second.hash).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at_ms,
        Some(99),
        "a revoked key is still found"
    );
}

#[tokio::test]
async fn postgres_secrets_are_stored_sealed_and_another_key_is_refused() {
    let (db, store) = setup!("postgres_secrets_are_stored_sealed");
    store.insert_job(job("j1", None, 100)).await.unwrap();
    store
        .insert_key(api_key("key_1", "ci", Some("leonardo-cb-key")))
        .await
        .unwrap();
    let raw = db.raw().await;
    let mut columns = Vec::new();
    for sql in [
        "SELECT webhook_secret FROM jobs",
        "SELECT signing_secret FROM jobs",
        "SELECT webhook_secret FROM api_keys",
    ] {
        for row in raw.query(sql, &[]).await.unwrap() {
            columns.push(row.get::<_, String>(0));
        }
    }
    assert_eq!(columns.len(), 3);
    for value in &columns {
        assert!(
            value.starts_with("enc1:"),
            "stored without the enc1: prefix"
        );
        for clear in ["bearer-s3cret", "whsec_c2lnbmluZw==", "leonardo-cb-key"] {
            assert!(!value.contains(clear), "a secret is stored in clear");
        }
    }
    let got = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(got.job.webhook.secret.unwrap().expose(), "bearer-s3cret");
    // A store with another secrets key refuses to start, naming the column.
    let other = SecretBox::new(&SecretsKey::from_bytes([9; 32]));
    match PostgresStore::connect(&db.url, other).await {
        Err(StoreError::Corrupt { what, .. }) => assert!(what.ends_with("secret"), "{what}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a store with the wrong key started"),
    }
}

#[tokio::test]
async fn postgres_ping_passes_and_a_held_table_lock_is_busy() {
    let (db, store) = setup!("postgres_ping_passes_and_a_held_table_lock_is_busy");
    store.ping().await.unwrap();
    let mut raw = db.raw().await;
    let tx = raw.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    match store.ping().await {
        Err(StoreError::Busy(_)) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ping is bounded"
    );
    tx.rollback().await.unwrap();
    store.ping().await.unwrap();
}

// ---- replicas sharing the database ------------------------------------------------------

/// Claims deliveries in a loop until none is left, returning the ids it got.
async fn drain_deliveries(store: PostgresStore) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let tasks = store
            .claim_due_deliveries(10_000, i64::MAX / 2, 7)
            .await
            .unwrap();
        if tasks.is_empty() {
            return got;
        }
        got.extend(tasks.into_iter().map(|t| t.id));
    }
}

/// Asserts every id of `expected` was claimed exactly once across `claims`.
fn claimed_once(claims: Vec<Vec<String>>, expected: usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in claims.into_iter().flatten() {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(seen.len(), expected, "every row was claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_claim_each_delivery_exactly_once() {
    let Some(db) = database("postgres_two_replicas_claim_each_delivery_exactly_once").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    for j in 0..20 {
        let id = format!("j{j}");
        a.insert_job(job(&id, None, j)).await.unwrap();
        let deliveries = (0..10)
            .map(|d| delivery(&format!("{id}-d{d}"), URL))
            .collect();
        assert!(
            a.finish_job(finish(&id, 1_000 + j, deliveries))
                .await
                .unwrap()
        );
    }
    // Two claimers per replica, all at once.
    let claimers: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|store| tokio::spawn(drain_deliveries(store.clone())))
        .collect();
    let mut claims = Vec::new();
    for claimer in claimers {
        claims.push(claimer.await.unwrap());
    }
    assert!(
        claims.iter().filter(|c| !c.is_empty()).count() >= 2,
        "the claimers ran concurrently"
    );
    claimed_once(claims, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_claim_each_job_exactly_once() {
    let Some(db) = database("postgres_two_replicas_claim_each_job_exactly_once").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    for j in 0..50 {
        a.insert_job(job(&format!("j{j}"), None, j)).await.unwrap();
    }
    let claimers: Vec<_> = [("a", &a), ("b", &b), ("a", &a), ("b", &b)]
        .into_iter()
        .map(|(replica, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(job) = store
                    .claim_next_job(replica, 1_000, 1_000_000)
                    .await
                    .unwrap()
                {
                    got.push(job.job.id);
                }
                got
            })
        })
        .collect();
    let mut claims = Vec::new();
    for claimer in claimers {
        claims.push(claimer.await.unwrap());
    }
    claimed_once(claims, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_migrate_a_new_database_at_once_and_a_newer_schema_is_refused() {
    let Some(db) = database("postgres_replicas_migrate_a_new_database_at_once").await else {
        return;
    };
    let (a, b, c) = tokio::join!(db.store(), db.store(), db.store());
    a.insert_job(job("j1", None, 1)).await.unwrap();
    assert!(b.get_job("j1").await.unwrap().is_some());
    drop((a, b, c));
    let raw = db.raw().await;
    let version: i64 = raw
        .query_one("SELECT version FROM sdserve_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, PostgresStore::SCHEMA_VERSION);

    let newer = PostgresStore::SCHEMA_VERSION + 1;
    raw.execute("UPDATE sdserve_schema SET version = $1", &[&newer])
        .await
        .unwrap();
    match PostgresStore::connect(&db.url, crate::support::postgres::secret_box()).await {
        Err(StoreError::Open { path, detail }) => {
            assert!(
                detail.contains(&format!("schema version {newer}"))
                    && detail
                        .contains(&format!("the {} this build", PostgresStore::SCHEMA_VERSION)),
                "{detail}"
            );
            assert!(
                !path.contains("sdserve:"),
                "the password is not shown: {path}"
            );
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

/// Waits up to 5 s for `wanted` on `changes`, skipping other changes.
async fn expect_change(changes: &mut broadcast::Receiver<StoreChange>, wanted: StoreChange) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match changes.recv().await {
                Ok(change) if change == wanted => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the change channel closed"),
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "{wanted:?} was not announced within 5 s");
}

#[tokio::test]
async fn postgres_another_replica_hears_of_queued_jobs_progress_and_due_deliveries() {
    let Some(db) = database("postgres_another_replica_hears_of_changes").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let mut changes = b.changes().expect("a shared store announces changes");
    a.insert_job(job("j1", None, 1)).await.unwrap();
    expect_change(&mut changes, StoreChange::JobQueued).await;
    a.set_progress("j1", 2, 30, "sd15").await.unwrap();
    expect_change(&mut changes, StoreChange::Job("j1".into())).await;
    a.finish_job(finish("j1", 1_000, vec![delivery("d1", URL)]))
        .await
        .unwrap();
    expect_change(&mut changes, StoreChange::DeliveryDue).await;
}

#[tokio::test]
async fn postgres_a_dropped_listen_connection_reconnects_and_announces_what_it_may_have_missed() {
    let Some(db) = database("postgres_a_dropped_listen_connection_reconnects").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let mut changes = b.changes().unwrap();
    // Cut every LISTEN connection to the database (both stores').
    let killed: i64 = db
        .admin()
        .await
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND query LIKE 'LISTEN%'",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 2, "terminated {killed} listening connections");
    // Reconnected: both wake-ups are sent at once, then notifications flow again.
    expect_change(&mut changes, StoreChange::JobQueued).await;
    expect_change(&mut changes, StoreChange::DeliveryDue).await;
    let mut waited = 0;
    loop {
        a.insert_job(job(&format!("j{waited}"), None, 1))
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        if matches!(heard, Ok(Ok(StoreChange::JobQueued))) {
            break;
        }
        waited += 1;
        assert!(
            waited < 10,
            "notifications did not resume after reconnecting"
        );
    }
}

#[tokio::test]
async fn postgres_replicas_share_one_key() {
    let Some(db) = database("postgres_replicas_share_one_key").await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let (ka, kb) = tokio::join!(a.shared_key("media"), b.shared_key("media"));
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka.len(), 32);
    assert_eq!(ka, kb, "both replicas sign with the same key");
    assert_eq!(a.shared_key("media").await.unwrap(), ka, "and it stays");
    assert_ne!(a.shared_key("other").await.unwrap(), ka);
}
