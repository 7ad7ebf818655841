//! The inference server: loads Stable Diffusion checkpoints and streams generations over the
//! `sdserve.v1.Inference` gRPC service (contract in `proto/sdserve/v1/inference.proto`).
//!
//! The tensor engine, models, samplers and the service itself arrive with the issues that
//! follow the foundation; this crate holds their place in the workspace so that the contract
//! and the layout are settled first.

pub mod model;
