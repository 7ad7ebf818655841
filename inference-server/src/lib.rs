//! The inference server: loads Stable Diffusion checkpoints and streams generations over the
//! `sdserve.v1.Inference` gRPC service.
//!
//! The tensor engine, models, samplers and the service itself arrive with the issues that
//! follow the foundation (see `docs/ROADMAP.md`); this crate holds their place in the workspace
//! so the contract in `proto/` and the workspace layout are settled first.
