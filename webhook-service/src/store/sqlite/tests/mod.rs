//! Unit tests of the SQLite store on in-memory databases; the file-based tests (durability,
//! migrations, corrupt rows) and the throughput measurement are in `tests/it/sqlite_store.rs`.

mod deliveries;
mod fixtures;
mod jobs;
mod secrets;
