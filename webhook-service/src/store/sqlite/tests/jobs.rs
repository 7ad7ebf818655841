//! Jobs, what only SQLite has: a new file's mode and reads beside a held write lock. What
//! both stores do is in the store contract (`tests/it/store_contract/jobs.rs`).

use super::fixtures::*;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

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
