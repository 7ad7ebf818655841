//! The native `standard` callback, in the Standard Webhooks style: `{type, timestamp, data}`.
//!
//! `type` is `job.completed`, `job.failed` or `job.canceled`; `timestamp` is RFC 3339 UTC;
//! `data` holds the job id and status, the model, each image (index, seed, signed media URL,
//! infotext), A1111's info as a JSON object (not a string), timings, and the error if any.

use serde_json::{Value, json};

use super::iso8601;
use crate::domain::JobOutcome;

/// Renders `outcome` as a `standard` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let record = outcome.record;
    let images: Vec<Value> = outcome
        .images
        .iter()
        .map(|published| {
            json!({
                "index": published.image.index,
                "seed": published.image.seed,
                "url": published.url,
                "infotext": published.image.infotext,
            })
        })
        .collect();
    let info = serde_json::from_str::<Value>(outcome.info_json).unwrap_or(Value::Null);
    json!({
        "type": format!("job.{}", outcome.event),
        "timestamp": iso8601(outcome.timestamp_ms),
        "data": {
            "job_id": record.job.id,
            "status": record.status.as_str(),
            "model": record.model,
            "images": images,
            "info": info,
            "timings": {"queue_ms": outcome.queue_ms, "execution_ms": outcome.execution_ms},
            "error": record.error,
        },
    })
}
