//! The PostgreSQL store against a real server (`SDSERVE_TEST_POSTGRES`, see
//! `support/postgres.rs`; skipped without it, failing in CI): what only sharing a database
//! needs: requeueing beside live leases, a held lock, concurrent claims between replicas,
//! concurrent migrations, change notifications and the shared key. What callers rely on
//! whichever store they use is in the store contract (`store_contract/`), which runs against
//! PostgreSQL too.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast;
use webhook_service::domain::JobStatus;
use webhook_service::store::postgres::PostgresStore;
use webhook_service::store::{Store, StoreChange, StoreError};

use crate::store_contract::fixtures::{URL, delivery, finish, job};
use crate::support::postgres::database;

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

// ---- jobs -------------------------------------------------------------------------------

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
