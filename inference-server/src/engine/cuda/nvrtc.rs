//! Run-time compilation of the kernel sources to PTX with NVRTC, and a disk cache so a second
//! start compiles nothing.
//!
//! Every kernel family (`kernels/<family>.cu`) is embedded with `include_str!` and compiled as
//! `prelude.cuh` + file: the prelude defines `f16`/`bf16` and their conversions itself, so NVRTC
//! needs no `cuda_fp16.h` and no include path. cudarc loads libnvrtc by name at first use and
//! *panics* when it is missing, so [`nvrtc_present`] is checked before any NVRTC call.

// Until the CUDA backend (storage, dispatch) calls these, only the tests do: no dead-code
// warnings in the library build meanwhile. Remove once the backend is wired in.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::CudaError;

/// The header prepended to every kernel file.
pub(crate) const PRELUDE: &str = include_str!("kernels/prelude.cuh");

/// Every kernel family and its source (without the prelude), in a stable order.
pub(crate) fn kernel_sources() -> &'static [(&'static str, &'static str)] {
    &[
        ("elementwise", include_str!("kernels/elementwise.cu")),
        ("reduce", include_str!("kernels/reduce.cu")),
        ("norm", include_str!("kernels/norm.cu")),
        ("layout", include_str!("kernels/layout.cu")),
        ("cast", include_str!("kernels/cast.cu")),
        ("conv", include_str!("kernels/conv.cu")),
        ("conv_igemm", include_str!("kernels/conv_igemm.cu")),
        ("attention", include_str!("kernels/attention.cu")),
        ("attention_mma", include_str!("kernels/attention_mma.cu")),
    ]
}

/// The complete NVRTC input of `family`: the prelude, then the family's file (whose `#line`
/// directive makes NVRTC's log name the file and its own line numbers).
pub(crate) fn ptx_source(family: &str) -> Result<String, CudaError> {
    let (_, src) = kernel_sources()
        .iter()
        .find(|(f, _)| *f == family)
        .ok_or_else(|| CudaError::Unsupported(format!("no kernel family `{family}`")))?;
    Ok(format!("{PRELUDE}\n#line 1 \"{family}.cu\"\n{src}"))
}

/// The library name cudarc looks for (by name only, through the loader's search path).
const NVRTC_LIB: &str = "libnvrtc.so.12";

/// Ok when libnvrtc can be loaded; otherwise an error naming the library and how to provide it.
/// Must pass before any other function here touches NVRTC: cudarc panics on a missing library.
pub(crate) fn nvrtc_present() -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen the candidate names and drops the handle; no symbol is used.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::LibraryMissing {
            library: NVRTC_LIB.into(),
            hint: "install NVRTC (CUDA toolkit, or `pip install nvidia-cuda-nvrtc-cu12`) and add the folder holding \
                   libnvrtc.so.12 (e.g. <site-packages>/nvidia/cuda_nvrtc/lib) to LD_LIBRARY_PATH; for CUDA 13 \
                   (libnvrtc.so.13), a folder on LD_LIBRARY_PATH with a link named libnvrtc.so to it"
                .into(),
        })
    }
}

/// NVRTC's (major, minor) version.
pub(crate) fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    nvrtc_present()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Nvrtc {
            file: "(nvrtcVersion)".into(),
            log: format!("{rc:?}"),
        });
    }
    Ok((major, minor))
}

/// The virtual architecture NVRTC compiles PTX for: `sm_86` and `compute_86` both give
/// `compute_86` (PTX is JIT-compiled by the driver for the exact GPU when loaded).
fn virtual_arch(arch: &str) -> Result<String, CudaError> {
    let digits = arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"))
        .unwrap_or(arch);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CudaError::Unsupported(format!(
            "GPU architecture `{arch}` (expected sm_NN or compute_NN)"
        )));
    }
    Ok(format!("compute_{digits}"))
}

/// The NVRTC options every family is compiled with. `--use_fast_math` is passed verbatim:
/// cudarc's `use_fast_math` field only emits `--fmad=true`.
pub(super) fn nvrtc_options(arch: &str) -> Result<Vec<String>, CudaError> {
    Ok(vec![
        format!("--gpu-architecture={}", virtual_arch(arch)?),
        "--use_fast_math".into(),
        "-std=c++17".into(),
    ])
}

/// Compiles `family` for `arch` (`sm_NN` or `compute_NN`) and returns the PTX text; a compile
/// error carries NVRTC's log.
pub(crate) fn compile(family: &str, arch: &str) -> Result<String, CudaError> {
    let src = ptx_source(family)?;
    let options = nvrtc_options(arch)?;
    nvrtc_present()?;
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some(format!("{family}.cu")),
        ..Default::default()
    };
    let file = format!("{family}.cu");
    match cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, options, .. }) => {
            Err(CudaError::Nvrtc {
                file,
                log: format!(
                    "{}\n(options: {})",
                    log.to_string_lossy(),
                    options.join(" ")
                ),
            })
        }
        Err(e) => Err(CudaError::Nvrtc {
            file,
            log: e.to_string(),
        }),
    }
}

/// 128-bit FNV-1a over `parts` (each followed by a 0xff separator, which no UTF-8 text
/// contains), as 32 hex digits: a stable cache key (std's hashers may change between releases).
fn stable_hash(parts: &[&str]) -> String {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for p in parts {
        for &b in p.as_bytes().iter().chain(&[0xff]) {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:032x}")
}

/// PTX compiled earlier, on disk: one file per (source, architecture, NVRTC version), so a
/// second start compiles nothing and any change to a kernel, the options or NVRTC misses.
#[derive(Clone, Debug)]
pub(crate) struct KernelCache {
    /// Folder holding `<family>-<key>.ptx` files.
    pub dir: PathBuf,
}

impl KernelCache {
    /// A cache in `dir` (created on the first write).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/sdserve/kernels`, else `$HOME/.cache/sdserve/kernels`; `None` when
    /// neither variable is set (the caller then compiles without caching).
    pub(crate) fn default_dir() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache")
            }
        };
        Some(base.join("sdserve").join("kernels"))
    }

    /// The file that holds (or will hold) `family`'s PTX for `arch`.
    pub(crate) fn path_for(&self, family: &str, arch: &str) -> Result<PathBuf, CudaError> {
        let (major, minor) = nvrtc_version()?;
        let options = nvrtc_options(arch)?.join(" ");
        let key = stable_hash(&[
            &ptx_source(family)?,
            &options,
            &format!("nvrtc {major}.{minor}"),
        ]);
        Ok(self.dir.join(format!("{family}-{key}.ptx")))
    }

    /// `family`'s PTX for `arch`, from the cache or compiled (and then stored); the flag says
    /// whether it came from the cache. A cache that cannot be written is not an error: the PTX
    /// is returned anyway.
    pub(crate) fn get_or_compile(
        &self,
        family: &str,
        arch: &str,
    ) -> Result<(String, bool), CudaError> {
        let path = self.path_for(family, arch)?;
        if let Ok(ptx) = std::fs::read_to_string(&path) {
            return Ok((ptx, true));
        }
        let ptx = compile(family, arch)?;
        if let Err(e) = write_atomically(&path, &ptx) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled kernels");
        }
        Ok((ptx, false))
    }
}

/// Writes `text` to a temporary file next to `path` and renames it into place, so a reader (or
/// a concurrent start) sees either no file or the whole file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Unique per process and call: parallel writers never share a temporary.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
#[path = "nvrtc_tests.rs"]
pub(super) mod tests;

/// Where a GPU's measured convolution choices live: beside the kernel cache, one file per GPU
/// model and version of the convolution kernels (a changed kernel is measured again).
pub(crate) fn conv_choices_file(model: &str) -> Option<PathBuf> {
    let dir = KernelCache::default_dir()?;
    let safe: String = model
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let sources: Vec<&str> = kernel_sources()
        .iter()
        .filter(|(f, _)| f.starts_with("conv"))
        .map(|(_, s)| *s)
        .collect();
    let version = stable_hash(&sources);
    Some(dir.join(format!(
        "conv-choices-{safe}-{}.tsv",
        &version[..16.min(version.len())]
    )))
}
