//! The inference server: loads Stable Diffusion checkpoints and streams generations over the
//! `sdserve.v1.Inference` gRPC service (contract in `proto/sdserve/v1/inference.proto`).
//!
//! Layers, bottom up: `engine` (tensors and ops on a run-time device), `nn` (layers loaded
//! through its own `WeightSource` trait), `sampling` (seeded noise, the noise schedule config,
//! samplers on flat latents; it imports no other layer), `model` (tokenizer, checkpoint
//! loading, the networks; it names `sampling::SchedulerConfig` as the checkpoint's schedule),
//! `pipeline` (prompt handling, generation), `service` (the gRPC service, its queue and the
//! loaded models). A layer imports only layers below it; `util` (deterministic fills) sits
//! under all of them. docs/inference-server.md has the picture.

pub mod engine;
pub mod model;
pub mod nn;
pub mod pipeline;
pub mod sampling;
pub mod service;
pub mod util;
