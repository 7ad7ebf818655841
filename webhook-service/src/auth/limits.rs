//! Per-key submission rate: a sliding one-minute window of accepted submissions per key.
//!
//! The window lives in this process: with several replicas each enforces the limit on its own
//! share of the traffic. Jobs in flight are counted in the store instead, so that limit holds
//! across replicas.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// The window's length.
const WINDOW_MS: i64 = 60_000;

/// Counts submissions per key over the last minute.
#[derive(Debug, Default)]
pub struct RateWindow {
    seen: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl RateWindow {
    /// Records a submission by `key_id` at `now_ms` if fewer than `per_minute` were made in the
    /// minute before; otherwise returns how many seconds until one slot frees up.
    pub fn admit(&self, key_id: &str, per_minute: u32, now_ms: i64) -> Result<(), u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let times = seen.entry(key_id.to_owned()).or_default();
        while times.front().is_some_and(|t| *t <= now_ms - WINDOW_MS) {
            times.pop_front();
        }
        if times.len() >= per_minute as usize {
            let oldest = times.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + WINDOW_MS - now_ms).max(1);
            return Err((wait_ms as u64).div_ceil(1000));
        }
        times.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_names_the_wait() {
        let w = RateWindow::default();
        assert_eq!(w.admit("k", 2, 0), Ok(()));
        assert_eq!(w.admit("k", 2, 10_000), Ok(()));
        assert_eq!(w.admit("k", 2, 20_000), Err(40));
        assert_eq!(w.admit("other", 2, 20_000), Ok(()));
        assert_eq!(w.admit("k", 2, 60_001), Ok(()));
    }
}
