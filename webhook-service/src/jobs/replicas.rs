//! What lets several webhook-service replicas share one store: job leases held while a job
//! runs, and other replicas' changes turned into this process's wake-ups and notifications.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobService;
use crate::store::StoreChange;

impl JobService {
    /// Keeps `replica`'s lease on `job_id` alive, renewing it every third of `lease`, and
    /// resolves when the lease is lost: the job ended (perhaps cancelled through another
    /// replica) or another replica took it over. A store that cannot be reached counts as a
    /// loss once the lease would have run out, since by then another replica may hold it.
    pub(super) async fn hold_lease(&self, job_id: &str, replica: &str, lease: Duration) {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut held_until = self.clock.now_ms().saturating_add(lease_ms);
        loop {
            tokio::time::sleep(lease / 3).await;
            let until = self.clock.now_ms().saturating_add(lease_ms);
            match self.store.renew_job_lease(job_id, replica, until).await {
                Ok(true) => held_until = until,
                Ok(false) => {
                    tracing::info!(job = %job_id, "the job ended or another replica holds it now; stopping its generation here");
                    return;
                }
                Err(err) if self.clock.now_ms() >= held_until => {
                    tracing::error!(job = %job_id, error = %err, "cannot renew the job's lease before it ran out; stopping its generation here");
                    return;
                }
                Err(err) => {
                    tracing::warn!(job = %job_id, error = %err, "cannot renew the job's lease; trying again")
                }
            }
        }
    }

    /// Turns the changes other replicas make to a shared store into this process's wake-ups
    /// (dispatcher, delivery worker), job notifications (watchers, synchronous calls) and
    /// cancellations (a job this process runs was ended elsewhere), until `stop`. Returns at
    /// once for a store only this process writes.
    pub async fn follow_store(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = stop.cancelled() => return,
            };
            match change {
                Ok(StoreChange::JobQueued) => self.job_wake.notify_one(),
                Ok(StoreChange::DeliveryDue) => self.delivery_wake.notify_one(),
                Ok(StoreChange::Job(id)) => {
                    self.events.changed(&id);
                    if let Some(token) = self.running_token(&id) {
                        self.cancel_if_ended(id, token);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // Too many changes to keep up with: wake everything once; watchers re-read.
                    tracing::warn!(
                        missed,
                        "missed store change notifications; waking every worker"
                    );
                    self.job_wake.notify_one();
                    self.delivery_wake.notify_one();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Cancels this process's generation of `id` when the stored job has ended.
    fn cancel_if_ended(self: &Arc<Self>, id: String, token: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(Some(record)) = this.store.get_job(&id).await
                && record.status.is_final()
            {
                token.cancel();
            }
        });
    }
}
