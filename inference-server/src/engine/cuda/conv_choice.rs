//! Which kernel runs a convolution shape on a CUDA device: im2col + GEMM (cuBLAS), or our
//! implicit GEMM (`kernels/conv_igemm.cu`, bias and residual fused, no im2col buffer). Neither
//! wins everywhere: the library GEMM is faster on large channel counts, the implicit GEMM saves
//! the 9× im2col traffic and the separate bias and residual passes. So the first time a device
//! sees a shape it runs both, times them, and keeps the faster. The choice is appended to a file
//! beside the kernel cache, keyed by the GPU's name and architecture, so a restart uses the same
//! kernels (and makes the same images) without measuring again.
//!
//! `SDSERVE_CUDA_CONV=im2col|implicit` forces one path (to compare them); `auto`, the default on
//! a GPU, measures. The emulator defaults to im2col: timing the emulator says nothing about a
//! GPU, and its tests force each path explicitly.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::device::Runtime;
use super::error::CudaError;

/// A way to run a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ConvPath {
    /// im2col tiles + the library GEMM, then bias and residual passes.
    Im2col,
    /// Our implicit-GEMM kernel with the bias and residual in its epilogue.
    Implicit,
}

impl ConvPath {
    /// The name `SDSERVE_CUDA_CONV` and the choices file use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ConvPath::Im2col => "im2col",
            ConvPath::Implicit => "implicit",
        }
    }

    fn parse(s: &str) -> Option<ConvPath> {
        match s {
            "im2col" => Some(ConvPath::Im2col),
            "implicit" => Some(ConvPath::Implicit),
            _ => None,
        }
    }
}

/// How a device picks a path per shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvPolicy {
    /// Time both the first time a shape is seen; keep the faster.
    Measure,
    /// Always this path.
    Always(ConvPath),
}

impl ConvPolicy {
    /// `SDSERVE_CUDA_CONV` (`auto`, `im2col`, `implicit`), else `default`. An unknown value is
    /// logged and ignored.
    pub(crate) fn from_env(default: ConvPolicy) -> ConvPolicy {
        match std::env::var("SDSERVE_CUDA_CONV").ok().as_deref() {
            None | Some("") => default,
            Some("auto") => ConvPolicy::Measure,
            Some(v) => match ConvPath::parse(v) {
                Some(p) => ConvPolicy::Always(p),
                None => {
                    let msg = "SDSERVE_CUDA_CONV must be auto, im2col or implicit; ignored";
                    tracing::warn!(value = v, "{msg}");
                    default
                }
            },
        }
    }
}

/// A device's policy and the paths chosen so far, by shape key.
pub(crate) struct ConvChoices {
    policy: ConvPolicy,
    file: Option<PathBuf>,
    chosen: Mutex<HashMap<String, ConvPath>>,
}

impl ConvChoices {
    /// Choices under `policy`, remembered in `file` (read now; `None`: in memory only).
    pub(crate) fn new(policy: ConvPolicy, file: Option<PathBuf>) -> ConvChoices {
        let mut chosen = HashMap::new();
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            // Lines are `<path>\t<shape key>`; anything else (a torn last line) is skipped.
            for line in text.lines() {
                if let Some((p, key)) = line.split_once('\t')
                    && let Some(p) = ConvPath::parse(p)
                {
                    chosen.insert(key.to_string(), p);
                }
            }
        }
        ConvChoices {
            policy,
            file,
            chosen: Mutex::new(chosen),
        }
    }

    /// Runs the convolution `key` names with `run(path)`: on the forced or remembered path, or,
    /// the first time, after timing each path twice (the first run of each pays one-time costs:
    /// library heuristics, cold caches) and keeping the faster. Every run writes the whole
    /// output, and the chosen path runs last, so the output is the chosen path's.
    pub(crate) fn run(
        &self,
        key: &str,
        rt: &dyn Runtime,
        mut run: impl FnMut(ConvPath) -> Result<(), CudaError>,
    ) -> Result<ConvPath, CudaError> {
        let known = match self.policy {
            ConvPolicy::Always(p) => Some(p),
            ConvPolicy::Measure => self.lock().get(key).copied(),
        };
        if let Some(p) = known {
            run(p)?;
            return Ok(p);
        }
        let mut time = |p: ConvPath| -> Result<Duration, CudaError> {
            rt.synchronize()?;
            let mut best = Duration::MAX;
            for _ in 0..2 {
                let t = Instant::now();
                run(p)?;
                rt.synchronize()?;
                best = best.min(t.elapsed());
            }
            Ok(best)
        };
        let im2col = time(ConvPath::Im2col)?;
        let implicit = time(ConvPath::Implicit)?;
        let p = if implicit < im2col {
            ConvPath::Implicit
        } else {
            ConvPath::Im2col
        };
        tracing::debug!(
            shape = key,
            ?im2col,
            ?implicit,
            chosen = p.name(),
            "conv2d path"
        );
        self.remember(key, p);
        run(p)?;
        Ok(p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConvPath>> {
        self.chosen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `p` for `key`, in memory and (best effort: a cache that cannot be written only
    /// costs a measurement next start) in the file.
    fn remember(&self, key: &str, p: ConvPath) {
        self.lock().insert(key.to_string(), p);
        let Some(file) = &self.file else { return };
        let append = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)?;
            // One write per line, so concurrent servers interleave whole lines.
            f.write_all(format!("{}\t{key}\n", p.name()).as_bytes())
        };
        if let Err(e) = append() {
            tracing::warn!(file = %file.display(), error = %e, "could not save a conv2d choice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime whose only use here is `synchronize`.
    struct NoSync;
    impl crate::engine::cuda::launch::Launcher for NoSync {
        fn launch(
            &self,
            kernel: &str,
            _: crate::engine::cuda::launch::LaunchCfg,
            _: &mut [*mut std::ffi::c_void],
        ) -> Result<(), CudaError> {
            Err(CudaError::UnknownKernel {
                name: kernel.into(),
            })
        }
    }
    impl Runtime for NoSync {
        fn alloc(&self, _: usize) -> Result<u64, CudaError> {
            unreachable!("not used")
        }
        fn free(&self, _: u64, _: usize) {}
        fn htod(&self, _: u64, _: &[u8]) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn dtoh(&self, _: u64, _: &mut [u8]) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn gemm(&self, _: &super::super::device::Gemm) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn tensor_cores(&self) -> bool {
            false
        }
        fn synchronize(&self) -> Result<(), CudaError> {
            Ok(())
        }
        fn model(&self) -> String {
            "test".into()
        }
        fn dtod(&self, _: u64, _: u64, _: usize) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn begin_capture(&self) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn end_capture(&self) -> Result<u64, CudaError> {
            unreachable!("not used")
        }
        fn launch_graph(&self, _: u64) -> Result<(), CudaError> {
            unreachable!("not used")
        }
        fn destroy_graph(&self, _: u64) {}
        fn kernel_times(&self) -> Option<Result<Vec<crate::engine::cuda::KernelTime>, CudaError>> {
            None
        }
    }

    #[test]
    fn measures_once_keeps_the_faster_and_remembers_it_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("choices.txt");
        let c = ConvChoices::new(ConvPolicy::Measure, Some(file.clone()));
        let mut runs = Vec::new();
        // The implicit path is slower here: it must lose, and run last only if chosen.
        let p = c
            .run("k1", &NoSync, |p| {
                runs.push(p);
                if p == ConvPath::Implicit {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(p, ConvPath::Im2col);
        use ConvPath::*;
        assert_eq!(runs, [Im2col, Im2col, Implicit, Implicit, Im2col]);
        // Known now: one run.
        runs.clear();
        c.run("k1", &NoSync, |p| {
            runs.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(runs, [Im2col]);
        // A new process reads the file and does not measure.
        let again = ConvChoices::new(ConvPolicy::Measure, Some(file));
        runs.clear();
        again
            .run("k1", &NoSync, |p| {
                runs.push(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(runs, [Im2col]);
    }

    #[test]
    fn a_forced_path_runs_alone_and_errors_reach_the_caller() {
        let c = ConvChoices::new(ConvPolicy::Always(ConvPath::Implicit), None);
        let mut runs = Vec::new();
        c.run("k", &NoSync, |p| {
            runs.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(runs, [ConvPath::Implicit]);
        let m = ConvChoices::new(ConvPolicy::Measure, None);
        let err = m
            .run("k", &NoSync, |_| Err(CudaError::Unsupported("boom".into())))
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        // A failed measurement chose nothing.
        assert!(m.lock().is_empty());
    }
}
