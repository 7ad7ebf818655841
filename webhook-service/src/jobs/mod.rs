//! Jobs: accepting, cancelling and finishing them ([`JobService`]) and running them on an
//! inference server ([`dispatch`]).

pub mod dispatch;
pub mod events;
pub mod outbox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{DeliveryRecord, JobRecord, JobStatus, NewJob};
use crate::media::MediaSigner;
use crate::metrics::Metrics;
use crate::store::{Inserted, Store, StoreError};
use events::JobEvents;
use outbox::Ending;

/// What a job operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has that id.
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// No delivery has that id.
    #[error("no delivery with id {0:?}")]
    DeliveryNotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fresh job id: a UUIDv7, so ids sort by creation time.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The job operations the APIs and the dispatcher share.
pub struct JobService {
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// Time source.
    pub clock: Clock,
    /// Media URL signer for callbacks.
    pub media: MediaSigner,
    /// Change notifications for watchers.
    pub events: JobEvents,
    /// Counters.
    pub metrics: Metrics,
    /// Notified when a job is queued.
    pub job_wake: Arc<Notify>,
    /// Notified when deliveries are added.
    pub delivery_wake: Arc<Notify>,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl JobService {
    /// Assembles the service.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Clock,
        media: MediaSigner,
        metrics: Metrics,
        delivery_wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            media,
            events: JobEvents::default(),
            metrics,
            job_wake: Arc::new(Notify::new()),
            delivery_wake,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Stores a job (or finds its idempotent twin) and wakes the dispatcher.
    pub async fn submit(&self, job: NewJob) -> Result<Inserted, JobError> {
        let inserted = self.store.insert_job(job).await?;
        if !inserted.deduplicated {
            self.metrics.job_accepted();
            self.job_wake.notify_one();
        }
        Ok(inserted)
    }

    /// A job by id.
    pub async fn get(&self, id: &str) -> Result<JobRecord, JobError> {
        self.store.get_job(id).await?.ok_or_else(|| JobError::NotFound(id.to_owned()))
    }

    /// Cancels a job that has not finished and stops its generation; a finished job is
    /// returned unchanged.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, JobError> {
        let record = self.get(id).await?;
        if !record.status.is_final() {
            let ending = Ending {
                status: JobStatus::Canceled,
                error: Some("canceled by request".to_owned()),
                images: Vec::new(),
                info_json: String::new(),
                finished_at_ms: self.clock.now_ms(),
            };
            self.end(&record, ending).await?;
            if let Some(token) = self.running_token(id) {
                token.cancel();
            }
        }
        self.get(id).await
    }

    /// Sends a delivery again from the start of its schedule, keeping its webhook-id.
    pub async fn redeliver(&self, delivery_id: &str) -> Result<DeliveryRecord, JobError> {
        let record = self
            .store
            .redeliver(delivery_id, self.clock.now_ms())
            .await?
            .ok_or_else(|| JobError::DeliveryNotFound(delivery_id.to_owned()))?;
        self.delivery_wake.notify_one();
        Ok(record)
    }

    /// Writes a job's ending and its callbacks (one transaction) and wakes the deliverer.
    /// Returns false if the job had already ended.
    pub async fn end(&self, record: &JobRecord, ending: Ending) -> Result<bool, JobError> {
        let finish = outbox::finish(record, ending, &self.media);
        let written = self.store.finish_job(finish).await?;
        if written {
            self.metrics.job_finished();
            self.delivery_wake.notify_one();
            self.events.changed(&record.job.id);
        }
        Ok(written)
    }

    /// Registers a running generation so that [`JobService::cancel`] can stop it.
    fn track(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock_running().insert(id.to_owned(), token.clone());
        token
    }

    fn untrack(&self, id: &str) {
        self.lock_running().remove(id);
    }

    fn running_token(&self, id: &str) -> Option<CancellationToken> {
        self.lock_running().get(id).cloned()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
