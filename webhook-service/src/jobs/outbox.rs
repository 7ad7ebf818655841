//! Turns a finished job into the result and callbacks written in one transaction.

use crate::domain::{
    EventKind, JobFinish, JobOutcome, JobRecord, JobStatus, NewDelivery, PublishedImage, StoredImage,
};
use crate::formats;
use crate::media::MediaSigner;

/// A job's final state as the dispatcher or a cancellation determined it.
#[derive(Debug, Clone)]
pub struct Ending {
    /// Completed, Failed or Canceled.
    pub status: JobStatus,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Images produced.
    pub images: Vec<StoredImage>,
    /// A1111 info JSON, empty if none.
    pub info_json: String,
    /// When it finished, ms since the epoch.
    pub finished_at_ms: i64,
}

/// A fresh Standard Webhooks message id.
pub fn new_delivery_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// Builds the [`JobFinish`] for `record` ended as `ending`: the stored result plus one
/// rendered callback if the webhook asked for this event.
pub fn finish(record: &JobRecord, ending: Ending, media: &MediaSigner) -> JobFinish {
    let event = match ending.status {
        JobStatus::Completed => Some(EventKind::Completed),
        JobStatus::Failed => Some(EventKind::Failed),
        JobStatus::Canceled => Some(EventKind::Canceled),
        JobStatus::Queued | JobStatus::Running => None,
    };
    let mut finished = record.clone();
    finished.status = ending.status;
    finished.finished_at_ms = Some(ending.finished_at_ms);
    finished.error = ending.error.clone();
    finished.image_count = ending.images.len() as u32;
    let deliveries = event
        .filter(|event| record.job.webhook.events.contains(event))
        .map(|event| render(&finished, event, &ending, media))
        .into_iter()
        .collect();
    JobFinish {
        job_id: record.job.id.clone(),
        status: ending.status,
        error: ending.error,
        images: ending.images,
        info_json: ending.info_json,
        started_at_ms: record.started_at_ms,
        finished_at_ms: ending.finished_at_ms,
        deliveries,
    }
}

fn render(finished: &JobRecord, event: EventKind, ending: &Ending, media: &MediaSigner) -> NewDelivery {
    let job = &finished.job;
    let started = finished.started_at_ms.unwrap_or(ending.finished_at_ms);
    let outcome = JobOutcome {
        record: finished,
        event,
        images: ending
            .images
            .iter()
            .map(|image| PublishedImage {
                image,
                url: media.url(&job.id, image.index, ending.finished_at_ms),
            })
            .collect(),
        info_json: &ending.info_json,
        queue_ms: (started - job.created_at_ms).max(0) as u64,
        execution_ms: (ending.finished_at_ms - started).max(0) as u64,
        timestamp_ms: ending.finished_at_ms,
    };
    let payload = serde_json::to_vec(&formats::render(&outcome))
        .unwrap_or_else(|_| unreachable!("a serde_json::Value always serializes"));
    NewDelivery { id: new_delivery_id(), event, url: job.webhook.url.clone(), payload }
}
