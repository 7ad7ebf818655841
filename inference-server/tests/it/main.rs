//! inference-server's integration tests, one test binary (`cargo test --test it`): a module per
//! area, shared helpers in [`support`]. The engine, nn, UNet, VAE and pipeline tests take a
//! `&Device` and run through [`test_device!`] on every available device. Goldens and the
//! scripts that make them stay in `tests/goldens/` and `tests/parity/`.

#[macro_use]
mod support;

mod cli;
mod clip;
mod engine_nn;
mod engine_ops;
mod engine_pad;
mod gpu_service;
mod init_image;
mod nn_blocks;
mod pipeline;
mod prompt;
mod rng;
mod samplers;
mod service;
mod shapes_oracle;
mod tokenizer;
mod unet;
mod vae;
mod weights;
