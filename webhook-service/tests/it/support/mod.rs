//! Shared test support: a scripted inference server, the service harness and (from the
//! client work) a scriptable webhook receiver.
#![allow(dead_code, missing_docs)]

pub mod inference;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod rng;
pub mod service;

/// A plain reqwest client for talking to the service under test. reqwest is built without a
/// default TLS provider (the service configures its own), so install ring once for tests.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
