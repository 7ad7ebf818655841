//! Checkpoint loading: safetensors through mmap, diffusers folders and single-file checkpoints.
