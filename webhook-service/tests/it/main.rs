//! webhook-service's integration tests, one test binary (`cargo test --test it`): a module per
//! area, the scripted inference server, service harness and webhook receiver in [`support`].
//! Fixtures stay in `tests/fixtures/`.

mod support;

// The store fixtures (`src/store/sqlite/tests/fixtures.rs`, shared with the unit tests)
// name `crate::domain` and `crate::store`.
use webhook_service::{domain, store};

mod a1111;
mod api;
mod auth;
mod cerebrium;
mod chaos;
mod client;
mod delivery;
mod diffute;
mod ends;
mod formats;
mod fuzz;
mod leonardo;
mod postgres_store;
mod replicas;
mod restart;
mod runpod;
mod scaleout;
mod secrets;
mod sqlite_store;
mod store_contract;
