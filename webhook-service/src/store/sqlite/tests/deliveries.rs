//! Deliveries, what only SQLite has: attempts written by one group commit. What both stores
//! do is in the store contract (`tests/it/store_contract/deliveries.rs`).

use super::fixtures::*;
use crate::domain::{DeliveryStatus, NextStep};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

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
