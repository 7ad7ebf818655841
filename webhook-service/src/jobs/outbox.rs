//! Turns a finished job into the result and callbacks written in one transaction.

use crate::domain::{
    EventKind, JobFinish, JobOutcome, JobRecord, JobStatus, NewDelivery, PublishedImage,
    StoredImage,
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
    let event = event_of(ending.status);
    let mut finished = record.clone();
    finished.status = ending.status;
    finished.finished_at_ms = Some(ending.finished_at_ms);
    finished.error = ending.error.clone();
    finished.image_count = ending.images.len() as u32;
    finished.info_json = ending.info_json.clone();
    let deliveries = match (&record.job.webhook.url, event) {
        (Some(url), Some(event)) if record.job.webhook.events.contains(&event) => {
            let payload = render(
                &finished,
                event,
                &ending.images,
                ending.finished_at_ms,
                media,
            );
            let id = new_delivery_id();
            let payload = defer_images(to_bytes(&payload), &ending.images, &id);
            vec![NewDelivery {
                id,
                event,
                url: url.clone(),
                payload,
            }]
        }
        _ => Vec::new(),
    };
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

/// The JSON string a stored callback body holds in place of image `index`'s base64
/// (`"sdserve-image:<delivery id>:<index>"`): the formats that embed images (RunPod,
/// Cerebrium) are stored without them, so the image bytes are kept once (as image rows) and
/// the delivery worker puts them back at send time. The delivery id, made when the job
/// finished, is what no caller can write into a request: a prompt shaped like a placeholder
/// is never mistaken for one.
pub fn image_placeholder(delivery_id: &str, index: u32) -> String {
    format!("\"sdserve-image:{delivery_id}:{index}\"")
}

/// Replaces every JSON string that is an image's base64 with its placeholder.
fn defer_images(payload: Vec<u8>, images: &[StoredImage], delivery_id: &str) -> Vec<u8> {
    use base64::Engine;
    let Ok(mut text) = String::from_utf8(payload.clone()) else {
        return payload;
    };
    for image in images {
        let encoded = format!(
            "\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(&image.png)
        );
        if text.contains(&encoded) {
            text = text.replace(&encoded, &image_placeholder(delivery_id, image.index));
        }
    }
    text.into_bytes()
}

/// The callback event a final status reports (a timeout is a failure); None for the others.
pub fn event_of(status: JobStatus) -> Option<EventKind> {
    match status {
        JobStatus::Completed => Some(EventKind::Completed),
        JobStatus::Failed | JobStatus::TimedOut => Some(EventKind::Failed),
        JobStatus::Canceled => Some(EventKind::Canceled),
        JobStatus::Queued | JobStatus::Running => None,
    }
}

/// The payload of a finished job in its webhook format, as its callback carries it (media
/// links signed now); None when the job has not finished.
pub fn outcome_json(
    record: &JobRecord,
    images: &[StoredImage],
    media: &MediaSigner,
) -> Option<serde_json::Value> {
    let event = event_of(record.status)?;
    let finished_at = record.finished_at_ms.unwrap_or(record.job.created_at_ms);
    Some(render(record, event, images, finished_at, media))
}

fn to_bytes(payload: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(payload)
        .unwrap_or_else(|_| unreachable!("a serde_json::Value always serializes"))
}

fn render(
    finished: &JobRecord,
    event: EventKind,
    images: &[StoredImage],
    finished_at_ms: i64,
    media: &MediaSigner,
) -> serde_json::Value {
    let job = &finished.job;
    let outcome = JobOutcome {
        record: finished,
        event,
        images: images
            .iter()
            .map(|image| PublishedImage {
                image,
                url: media.url(&job.id, image.index, finished_at_ms),
            })
            .collect(),
        info_json: &finished.info_json,
        queue_ms: finished.queue_ms(finished_at_ms),
        execution_ms: finished.execution_ms(finished_at_ms),
        timestamp_ms: finished_at_ms,
    };
    formats::render(&outcome)
}
