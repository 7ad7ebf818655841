//! Wall-clock time for scheduling, replaceable in tests.
//!
//! Delivery times are stored as wall-clock milliseconds so they survive restarts. Tests need
//! to move that clock without waiting; `tokio::time::pause` cannot be used for it because a
//! paused runtime jumps to the next timer whenever it is idle, including while it waits for a
//! real socket, which would fire HTTP timeouts early. [`Clock::manual`] is advanced by hand.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The time source of the service.
#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<watch::Sender<i64>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `start_ms` until [`Clock::advance`] moves it.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            manual: Some(Arc::new(watch::channel(start_ms).0)),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(tx) => *tx.borrow(),
            None => system_now_ms(),
        }
    }

    /// Moves a manual clock forward, waking every sleeper whose time has come. Does nothing
    /// on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(tx) = &self.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            tx.send_modify(|now| *now = now.saturating_add(by));
        }
    }

    /// Sleeps until the clock reads at least `deadline_ms`.
    pub async fn sleep_until(&self, deadline_ms: i64) {
        match &self.manual {
            Some(tx) => {
                let mut rx = tx.subscribe();
                // The sender lives as long as this clock, so waiting cannot fail.
                let _ = rx.wait_for(|now| *now >= deadline_ms).await;
            }
            None => {
                let wait = deadline_ms.saturating_sub(system_now_ms()).max(0);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_their_time_comes() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(6_000).await }
        });
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke at 5000 for a 6000 deadline");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now_ms(), 6_000);
    }
}
