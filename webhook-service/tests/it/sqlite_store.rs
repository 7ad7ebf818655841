//! File-based tests of the SQLite store (durability across reopen, migrations, corrupt rows);
//! throughput is measured by `benches/delivery.rs`. The in-memory unit tests live in
//! `src/store/sqlite/tests/`, whose fixtures this file shares, and what both stores must do is in
//! the store contract (`store_contract/`).

use webhook_service::domain::{DeliveryTask, JobStatus};
use webhook_service::store::sqlite::SqliteStore;
use webhook_service::store::{Store, StoreError};

use crate::store_contract::fixtures::*;

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
    assert_eq!(
        store.get_job("j1").await.unwrap().unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(1000));
    let ids = |tasks: Vec<DeliveryTask>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.claim_due_deliveries(1000, 9000, 10).await.unwrap()),
        ["d2"]
    );
    assert_eq!(
        ids(store.claim_due_deliveries(5000, 9000, 10).await.unwrap()),
        ["d1"]
    );
}

#[tokio::test]
async fn reopening_is_fine_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    SqliteStore::open(&path)
        .unwrap()
        .insert_job(job("j1", None, 1))
        .await
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.get_job("j1").await.unwrap().is_some());
    drop(store);

    raw(
        &path,
        &format!("PRAGMA user_version = {}", SqliteStore::SCHEMA_VERSION + 1),
    );
    match SqliteStore::open(&path) {
        Err(StoreError::Open {
            path: shown,
            detail,
        }) => {
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
    assert_eq!(
        corrupt(store.get_job("j3").await.map(drop)),
        "jobs.vendor_context"
    );
    assert_eq!(
        corrupt(store.get_delivery("d2").await.map(drop)),
        "deliveries.status"
    );
    assert!(store.get_delivery("d1").await.unwrap().is_some());
}
