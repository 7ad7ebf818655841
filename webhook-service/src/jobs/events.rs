//! In-process notifications of job changes, for `WatchJob`.

use tokio::sync::broadcast;

/// Publishes the id of every job that changed; watchers re-read the job from the store, so a
/// missed notification costs freshness, never correctness.
#[derive(Clone, Debug)]
pub struct JobEvents {
    tx: broadcast::Sender<String>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl JobEvents {
    /// Announces that `job_id` changed.
    pub fn changed(&self, job_id: &str) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(job_id.to_owned());
    }

    /// A receiver of every later change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}
