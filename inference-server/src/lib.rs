//! The inference server: loads Stable Diffusion checkpoints and streams generations over the
//! `sdserve.v1.Inference` gRPC service (contract in `proto/sdserve/v1/inference.proto`).
//!
//! Layers, bottom up: `engine` (tensors and ops on a run-time device), `nn` (layers loaded
//! from checkpoints), `model` (tokenizer, checkpoint loading, the networks), `sampling` (seeded
//! noise, samplers), `pipeline` (prompt handling, generation), `service` (the gRPC service,
//! its queue and the loaded models).

pub mod engine;
pub mod model;
pub mod nn;
pub mod sampling;
pub mod pipeline;
pub mod service;
