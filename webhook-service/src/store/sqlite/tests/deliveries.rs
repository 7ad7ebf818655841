//! Deliveries: leases, attempts, gone URLs and redelivery.

use super::fixtures::*;
use crate::domain::{DeliveryStatus, NextStep};
use crate::store::sqlite::SqliteStore;
use crate::store::{Redelivery, Store};

#[tokio::test]
async fn leases_expire_and_the_same_delivery_is_claimed_again() {
    let store = SqliteStore::open_in_memory().unwrap();
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
    assert_eq!(
        second.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["d2"]
    );
    assert!(
        store
            .claim_due_deliveries(4999, 9000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(5000));

    let again = store.claim_due_deliveries(5000, 9000, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["d1"]
    );
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(6000));
}

#[tokio::test]
async fn record_attempt_applies_each_next_step() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();

    // RetryAt: pending again, due then, attempt counted.
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

    // Exhausted.
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

    // Succeeded keeps the last failure for inspection and clears the due time.
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
}

#[tokio::test]
async fn gone_marks_the_url_and_redeliver_clears_it() {
    let store = SqliteStore::open_in_memory().unwrap();
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
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["o1"]
    );
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!(
        (d2.status, d2.next_attempt_at_ms),
        (DeliveryStatus::Gone, None)
    );
    assert!(d2.last_error.unwrap().contains("410 Gone"));

    // Not forced: the gone mark holds and nothing changes.
    let Redelivery::Gone(kept) = store.redeliver("d2", 7000, false).await.unwrap() else {
        panic!("not refused")
    };
    assert_eq!(kept.status, DeliveryStatus::Gone);
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
    // The URL is no longer gone: d1, redelivered too, is handed out as well.
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
    assert_eq!(
        store
            .get_delivery("d1")
            .await
            .unwrap()
            .unwrap()
            .attempts
            .len(),
        1
    );
}

#[tokio::test]
async fn a_late_attempt_after_redeliver_is_kept_but_does_not_change_state() {
    let store = SqliteStore::open_in_memory().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_commit_together_and_a_bad_one_spoils_none() {
    let store = SqliteStore::open_in_memory().unwrap();
    with_deliveries(&store).await;
    store.claim_due_deliveries(1000, 5000, 10).await.unwrap();

    let (d1, unknown, d2) = tokio::join!(
        store.record_attempt(attempt("d1", 1, 1000, NextStep::Succeeded)),
        store.record_attempt(attempt("no-such-delivery", 1, 1000, NextStep::Succeeded)),
        store.record_attempt(attempt("d2", 1, 1000, NextStep::RetryAt(3000))),
    );
    d1.unwrap();
    d2.unwrap();
    assert!(
        unknown.is_err(),
        "an attempt for an unknown delivery is refused"
    );
    assert_eq!(status(&store, "d1").await, DeliveryStatus::Succeeded);
    assert_eq!(status(&store, "d2").await, DeliveryStatus::Pending);
    let d2 = store.get_delivery("d2").await.unwrap().unwrap();
    assert_eq!((d2.attempts.len(), d2.next_attempt_at_ms), (1, Some(3000)));
}
