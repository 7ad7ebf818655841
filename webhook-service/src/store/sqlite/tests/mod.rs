//! Unit tests of what only the SQLite store has (locking, file modes, group commit, re-sealing
//! clear values); the file-based tests (durability, migrations, corrupt rows) are in
//! `tests/it/sqlite_store.rs`, and what both stores do is in the store contract
//! (`tests/it/store_contract/`).

mod deliveries;
mod fixtures;
mod jobs;
mod secrets;
