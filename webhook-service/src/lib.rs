//! webhook-service: the front door for callers who want their generations as callbacks.
//!
//! It accepts jobs over gRPC ([`api::grpc`]) and HTTP ([`api::http`]), stores them durably
//! ([`store`]), runs them on an inference server ([`jobs`]) and delivers each result to the
//! job's webhook ([`delivery`]) in the JSON shape the caller asked for ([`formats`]).

pub mod domain;
pub mod delivery;
pub mod formats;
pub mod media;
pub mod store;
