//! Shared test support: a scripted inference server, the service harness and (from the
//! client work) a scriptable webhook receiver.
#![allow(dead_code, missing_docs)]

pub mod inference;
pub mod service;
pub mod receiver;
