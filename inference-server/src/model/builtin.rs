//! `sdserve-shapes`, the model built into the binary: a tiny SD 1.x checkpoint (CLIP text
//! encoder, UNet, VAE; f16 single file with the original key names) trained by
//! `tools/train-default-model` to draw one coloured shape on a plain background at 64×64, e.g.
//! "a small green star in the top left corner on a black background". See
//! `inference-server/data/sdserve-shapes.md` for its card.
//!
//! The `inference-server` binary embeds the file (`include_bytes!` in `main.rs`, so new weights
//! rebuild only the binary, not this library). Checkpoints are memory-mapped from files, so the
//! embedded bytes are written once to a cache file named after their content hash and opened
//! from there like any single-file checkpoint ([`materialize_in`]).

use std::path::{Path, PathBuf};

use super::weights::WeightsError;

/// The name the built-in model is served under (`ListModels`, the infotext's `Model:`).
pub const BUILTIN_MODEL_NAME: &str = "sdserve-shapes";

/// The image side the built-in model was trained at (pixels).
pub const BUILTIN_MODEL_SIZE: usize = 64;

/// Where the committed weights are in the source tree, relative to this crate's root.
pub const BUILTIN_MODEL_SOURCE: &str = "data/sdserve-shapes.safetensors";

/// FNV-1a (64 bit) of `bytes`: names the cache file, so a binary with other weights never
/// reads a stale copy.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where the built-in model is written: `$SDSERVE_CACHE_DIR`, else `$XDG_CACHE_HOME/sdserve`,
/// else `$HOME/.cache/sdserve`, else the system temporary folder's `sdserve`.
pub fn cache_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SDSERVE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("sdserve")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("sdserve")))
        .unwrap_or_else(|| std::env::temp_dir().join("sdserve"))
}

/// Writes the checkpoint `bytes` under `root` (unless an identical copy is there) and returns
/// its path, `root/<hash>/sdserve-shapes.safetensors` (so the model is named
/// [`BUILTIN_MODEL_NAME`]). The file appears whole: it is written to a private temporary name
/// and renamed into place.
pub fn materialize_in(root: &Path, bytes: &[u8]) -> Result<PathBuf, WeightsError> {
    let dir = root.join(format!("{:016x}", fnv1a(bytes)));
    let path = dir.join(format!("{BUILTIN_MODEL_NAME}.safetensors"));
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| WeightsError::io(&dir, e))?;
    let tmp = dir.join(format!(".{BUILTIN_MODEL_NAME}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| WeightsError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| WeightsError::io(&path, e))?;
    Ok(path)
}
