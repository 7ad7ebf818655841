//! Checkpoint loading: safetensors through mmap, diffusers folders and single-file checkpoints.
//!
//! [`Checkpoint::open`] reads only headers and configs; every tensor is a [`RawTensor`] whose
//! bytes stay inside the file's memory map. Tensors are always named as in diffusers /
//! transformers (`text_model.encoder.layers.0.self_attn.q_proj.weight`, `down_blocks.0...`);
//! single files are translated on open (OpenCLIP's fused q/k/v split by row ranges, the VAE's
//! 1×1-conv attention projections reshaped to linear), both without copying.
//!
//! A single file's configs come from its `__metadata__["sdserve.config"]` when present (JSON
//! object with `text_encoder`, `unet`, `vae`, `scheduler` diffusers configs; the test models
//! write it). Otherwise [`infer`] reads the architecture from tensor names and shapes and fills
//! in what shapes cannot say with the SD rules (CLIP and SD 2 UNet heads 64 wide, SD 1 UNet 8
//! heads, 32 norm groups, SD 1.5's noise schedule with epsilon prediction): real SD 1.5 and
//! SD 2.1 files give their published diffusers configs. SD 2's text encoder uses the
//! penultimate OpenCLIP layer, so its config has one layer fewer than the file holds.
//!
//! [`params`] lists every parameter of each network; `tests/parity/make_goldens.py` checks
//! those lists, the test models and the single-file mapping against transformers / diffusers.

mod checkpoint;
mod component;
pub mod config;
mod diffusers;
mod error;
mod file;
pub mod infer;
pub mod params;
pub mod single_file;
mod source;
mod validate;
mod write;

pub use checkpoint::{CONFIG_METADATA_KEY, Checkpoint, Layout, Variant, WeightSet};
pub use config::{ClipTextConfig, HiddenAct, PerBlock, UNetConfig, VaeConfig};
pub use error::WeightsError;
pub use file::{MappedBytes, RawTensor, SafetensorsFile, StoredDType};
pub use params::{Param, clip_params, unet_params, vae_params};
pub use write::{OwnedTensor, write_safetensors};
