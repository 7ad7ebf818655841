//! The `cerebrium` callback (seed 003): `{run_id, run_time_ms, message, result}`, where
//! `run_id` is the id the submit call returned, `run_time_ms` the model's run time (a float, as
//! Cerebrium reports it) and `result` the generated images as base64 PNG strings. A failed or
//! cancelled run has `result: null`, the reason in `message`, and `error` set to the same text.

use serde_json::{Value, json};

use super::base64_images;
use crate::domain::{EventKind, JobOutcome};

/// The message Cerebrium sends with a successful run.
const SUCCESS: &str = "Successfully generated images";

/// Renders `outcome` as a `cerebrium` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let record = outcome.record;
    let run_time_ms = outcome.execution_ms as f64;
    match outcome.event {
        EventKind::Completed => json!({
            "run_id": record.job.id,
            "run_time_ms": run_time_ms,
            "message": SUCCESS,
            "result": base64_images(outcome),
        }),
        EventKind::Failed | EventKind::Canceled => {
            let reason = record.error.clone().unwrap_or_else(|| match outcome.event {
                EventKind::Canceled => "Run cancelled".to_owned(),
                _ => "Run failed".to_owned(),
            });
            json!({
                "run_id": record.job.id,
                "run_time_ms": run_time_ms,
                "message": reason,
                "result": null,
                "error": reason,
            })
        }
    }
}
