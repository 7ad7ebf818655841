//! Per-op wall time of the CPU backend, for explaining where a generation spends its time.
//!
//! Off unless `SDSERVE_PROFILE=1`: then every CPU op adds its wall time (and, for the products,
//! its multiply-add count) to a bucket named by the op and its shape class, and
//! [`report`] renders the buckets as a Markdown table, largest first. When off, an op pays
//! one relaxed atomic load. CPU ops run synchronously, so wall time is the op's own time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether profiling is on: `SDSERVE_PROFILE` read once at first use, or [`set_enabled`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// One bucket: calls, time, multiply-adds.
#[derive(Clone, Copy, Default, Debug)]
struct Bucket {
    calls: u64,
    time: Duration,
    macs: u64,
}

fn buckets() -> &'static Mutex<HashMap<String, Bucket>> {
    static B: OnceLock<Mutex<HashMap<String, Bucket>>> = OnceLock::new();
    B.get_or_init(|| {
        let on = matches!(
            std::env::var("SDSERVE_PROFILE").as_deref(),
            Ok("1") | Ok("on")
        );
        ENABLED.fetch_or(on, Ordering::Relaxed);
        Mutex::new(HashMap::new())
    })
}

/// Turns profiling on or off from code (a bench), whatever `SDSERVE_PROFILE` says.
pub fn set_enabled(on: bool) {
    buckets();
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether ops are being timed.
pub fn enabled() -> bool {
    buckets();
    ENABLED.load(Ordering::Relaxed)
}

/// Times one op until dropped; a no-op when profiling is off.
pub(crate) struct Scope {
    label: Option<(String, u64, Instant)>,
}

/// Starts timing an op named by `label()` doing `macs` multiply-adds (0 for memory-bound ops);
/// `label` runs only when profiling is on.
pub(crate) fn scope(label: impl FnOnce() -> String, macs: u64) -> Scope {
    Scope {
        label: enabled().then(|| (label(), macs, Instant::now())),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some((label, macs, start)) = self.label.take() {
            let elapsed = start.elapsed();
            let mut map = buckets().lock().unwrap_or_else(|e| e.into_inner());
            let b = map.entry(label).or_default();
            b.calls += 1;
            b.time += elapsed;
            b.macs += macs;
        }
    }
}

/// Clears every bucket (between a warm-up and the measured run).
pub fn reset() {
    buckets().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The buckets as a Markdown table, largest time first: op, calls, seconds, share of the
/// total, and GFLOP/s (2 FLOP per multiply-add) for the products.
pub fn report() -> String {
    let map = buckets().lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = map.iter().collect();
    rows.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(b.0)));
    let total: f64 = rows.iter().map(|(_, b)| b.time.as_secs_f64()).sum();
    let mut out = String::from("| op | calls | s | share | GFLOP/s |\n|---|---|---|---|---|\n");
    for (label, b) in &rows {
        let s = b.time.as_secs_f64();
        let rate = if b.macs > 0 && s > 0.0 {
            format!("{:.1}", 2.0 * b.macs as f64 / s / 1e9)
        } else {
            String::new()
        };
        let share = if total > 0.0 { 100.0 * s / total } else { 0.0 };
        out.push_str(&format!(
            "| {label} | {} | {s:.3} | {share:.1}% | {rate} |\n",
            b.calls
        ));
    }
    out.push_str(&format!("| total | | {total:.3} | 100% | |\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_add_up_into_buckets_only_when_enabled() {
        set_enabled(false);
        reset();
        drop(scope(|| "off".into(), 10));
        assert!(!report().contains("| off |"));
        set_enabled(true);
        for _ in 0..3 {
            let _s = scope(|| "mm 2x2".into(), 1_000_000);
            std::thread::sleep(Duration::from_millis(2));
        }
        set_enabled(false);
        let table = report();
        let row = table.lines().find(|l| l.starts_with("| mm 2x2 |")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], "3", "{table}");
        assert!(cells[3].parse::<f64>().unwrap() >= 0.006, "{table}");
        assert!(!cells[5].is_empty(), "{table}");
    }
}
