//! GPU time per kernel, to see where a step's time goes on a GPU (`SDSERVE_PROFILE=1`, as for
//! the CPU backend's per-op profile). Each launch and GEMM is bracketed by two events on the
//! stream, so the time measured is the GPU's own, not the host's issue time; the events cost
//! the host a little, so a profiled run's wall time is not a benchmark. A profiled device does
//! not record CUDA graphs (a graph's kernels cannot be told apart).

use std::collections::HashMap;
use std::sync::Mutex;

use cudarc::driver::sys as drv_sys;

use super::driver::driver_err;
use super::error::CudaError;

/// The GPU time of one kernel (or GEMM shape) over the profiled work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (`group_norm_f16`), or `gemm <dtype> m×n×k` for a library GEMM.
    pub name: String,
    /// Launches.
    pub calls: u64,
    /// Milliseconds of GPU time, summed over the launches.
    pub ms: f64,
}

struct Mark {
    name: String,
    start: drv_sys::CUevent,
    end: drv_sys::CUevent,
}

/// The events of the work issued since the last [`Profiler::take`].
pub(crate) struct Profiler {
    marks: Mutex<Vec<Mark>>,
}

// SAFETY: events are plain driver handles, usable from any thread with the context current
// (every caller has it current); the list is behind a mutex.
unsafe impl Send for Profiler {}
// SAFETY: as above.
unsafe impl Sync for Profiler {}

fn check(call: &str, r: drv_sys::CUresult) -> Result<(), CudaError> {
    r.result().map_err(|e| driver_err(call, e))
}

impl Profiler {
    /// A profiler when profiling is on (`SDSERVE_PROFILE=1`, the CPU profile's switch).
    pub(crate) fn from_env() -> Option<Profiler> {
        crate::engine::profile::enabled().then(|| Profiler {
            marks: Mutex::default(),
        })
    }

    /// Issues `work` on `stream` between two events, counted under `name`. The context is
    /// current.
    pub(crate) fn time<T>(
        &self,
        stream: drv_sys::CUstream,
        name: impl FnOnce() -> String,
        work: impl FnOnce() -> Result<T, CudaError>,
    ) -> Result<T, CudaError> {
        let mut start = std::ptr::null_mut();
        let mut end = std::ptr::null_mut();
        // SAFETY: the events are created here, recorded on the live stream, and destroyed in
        // `take` after the stream has finished with them.
        unsafe {
            check("cuEventCreate", drv_sys::cuEventCreate(&mut start, 0))?;
            check("cuEventCreate", drv_sys::cuEventCreate(&mut end, 0))?;
            check("cuEventRecord", drv_sys::cuEventRecord(start, stream))?;
        }
        let out = work();
        // SAFETY: as above.
        unsafe { check("cuEventRecord", drv_sys::cuEventRecord(end, stream))? };
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks.push(Mark {
            name: name(),
            start,
            end,
        });
        out
    }

    /// Waits for the work timed so far and returns its GPU time by name, largest first; the
    /// next work is timed afresh.
    pub(crate) fn take(&self) -> Result<Vec<KernelTime>, CudaError> {
        let marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut by_name: HashMap<String, (u64, f64)> = HashMap::new();
        let mut first_err = None;
        for m in marks {
            let mut ms = 0f32;
            // SAFETY: both events were recorded in `time`; they are not used after this.
            let r = unsafe {
                let r = drv_sys::cuEventSynchronize(m.end)
                    .result()
                    .and_then(|()| drv_sys::cuEventElapsedTime(&mut ms, m.start, m.end).result());
                drv_sys::cuEventDestroy_v2(m.start);
                drv_sys::cuEventDestroy_v2(m.end);
                r
            };
            match r {
                Ok(()) => {
                    let e = by_name.entry(m.name).or_default();
                    e.0 += 1;
                    e.1 += f64::from(ms);
                }
                Err(e) => {
                    first_err.get_or_insert_with(|| driver_err("cuEventElapsedTime", e));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut times: Vec<KernelTime> = by_name
            .into_iter()
            .map(|(name, (calls, ms))| KernelTime { name, calls, ms })
            .collect();
        times.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
        Ok(times)
    }
}

/// `times` as Markdown: GPU time by kernel family (the kernel name without its dtype; the
/// library GEMMs together), then the 25 largest kernels and GEMM shapes, each with its share.
pub fn kernel_report(times: &[KernelTime]) -> String {
    use std::fmt::Write;
    let total: f64 = times.iter().map(|t| t.ms).sum();
    let share = |ms: f64| 100.0 * ms / total.max(1e-9);
    let family = |name: &str| -> String {
        if name.starts_with("gemm ") {
            return "gemm (cuBLAS, cuBLASLt)".into();
        }
        let cut = ["_f32", "_f16", "_bf16"]
            .iter()
            .find_map(|s| name.strip_suffix(s));
        cut.unwrap_or(name).to_string()
    };
    let mut families: HashMap<String, (u64, f64)> = HashMap::new();
    for t in times {
        let f = families.entry(family(&t.name)).or_default();
        f.0 += t.calls;
        f.1 += t.ms;
    }
    let mut families: Vec<(String, (u64, f64))> = families.into_iter().collect();
    families.sort_by(|a, b| b.1.1.total_cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = format!("GPU time by kernel family ({total:.2} ms in all):\n");
    out.push_str("| kernel family | launches | ms | share |\n|---|---|---|---|\n");
    for (name, (calls, ms)) in &families {
        let _ = writeln!(out, "| {name} | {calls} | {ms:.2} | {:.1}% |", share(*ms));
    }
    out.push_str("\n| kernel or GEMM shape (largest 25) | launches | ms | share |\n");
    out.push_str("|---|---|---|---|\n");
    for t in times.iter().take(25) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.1}% |",
            t.name,
            t.calls,
            t.ms,
            share(t.ms)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{KernelTime, kernel_report};

    #[test]
    fn the_report_sums_families_and_ranks_kernels() {
        let t = |name: &str, calls, ms| KernelTime {
            name: name.into(),
            calls,
            ms,
        };
        let times = [
            t("gemm f16 4096×320×320", 10, 4.0),
            t("group_norm_f16", 20, 3.0),
            t("gemm f16 1024×640×640", 5, 2.0),
            t("group_norm_f32", 2, 1.0),
        ];
        let report = kernel_report(&times);
        assert!(
            report.starts_with("GPU time by kernel family (10.00 ms in all):"),
            "{report}"
        );
        assert!(
            report.contains("| gemm (cuBLAS, cuBLASLt) | 15 | 6.00 | 60.0% |"),
            "{report}"
        );
        assert!(
            report.contains("| group_norm | 22 | 4.00 | 40.0% |"),
            "{report}"
        );
        assert!(
            report.contains("| group_norm_f32 | 2 | 1.00 | 10.0% |"),
            "{report}"
        );
        let gemm = report.find("| gemm (cuBLAS").unwrap();
        assert!(
            gemm < report.find("| group_norm |").unwrap(),
            "largest family first"
        );
    }
}
