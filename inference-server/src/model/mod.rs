//! Stable Diffusion model components: everything needed to turn a checkpoint and a prompt into
//! tensors. So far only the CLIP text tokenizer.

pub mod tokenizer;
