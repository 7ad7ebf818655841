//! Deliveries: leases, attempts, gone URLs and redelivery.

use webhook_service::domain::{DeliveryStatus, NextStep};
use webhook_service::store::Redelivery;

use super::fixtures::{URL, attempt, delivery, finish, job, status, with_deliveries};
use super::{Backend, ids};

contract!(
    leases_expire_and_the_same_delivery_is_claimed_again,
    record_attempt_applies_each_next_step,
    gone_marks_the_url_and_redeliver_clears_it,
    a_late_attempt_after_redeliver_is_kept_but_does_not_change_state,
);

async fn leases_expire_and_the_same_delivery_is_claimed_again(b: Backend) {
    let store = b.store.as_ref();
    with_deliveries(store).await;
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
    assert_eq!(status(store, "d1").await, DeliveryStatus::Sending);

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

async fn record_attempt_applies_each_next_step(b: Backend) {
    let store = b.store.as_ref();
    with_deliveries(store).await;
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

async fn gone_marks_the_url_and_redeliver_clears_it(b: Backend) {
    let store = b.store.as_ref();
    with_deliveries(store).await;
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
    assert_eq!(status(store, "d1").await, DeliveryStatus::Gone);

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
        status(store, "d2").await,
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

async fn a_late_attempt_after_redeliver_is_kept_but_does_not_change_state(b: Backend) {
    let store = b.store.as_ref();
    with_deliveries(store).await;
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
