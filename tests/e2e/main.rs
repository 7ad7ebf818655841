//! End-to-end tests of the product: both services in-process on port 0 (a real
//! inference-server on the tiny random model, a real webhook-service with API keys required),
//! a local webhook receiver, and each vendor's request as its document shows, from request to
//! callback. `cargo test --test e2e`.

mod harness;

mod a1111;
mod cerebrium;
mod diffute;
mod door;
mod isolation;
mod leonardo;
mod reflection;
mod runpod;
