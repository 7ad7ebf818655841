//! The `diffute` callback (seed 002): a manifest keyed by the request's prompt name, each key
//! holding the list of media URLs generated for that prompt, beside the request's `name` and the
//! `job_id`. URLs point at this service's signed, expiring media route.
//!
//! A job generates one prompt, so a manifest has one prompt key; the names come from the job's
//! vendor context (`name`, `prompt_name`), defaulting to the job id and `"images"`. A failed or
//! cancelled job lists no URLs and carries `error`.

use serde_json::{Map, Value, json};

use super::{image_urls, vendor_str};
use crate::domain::{EventKind, JobOutcome};

/// Prompt key used when the job did not name its prompt.
pub const DEFAULT_PROMPT_NAME: &str = "images";

/// Renders `outcome` as a `diffute` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let job = &outcome.record.job;
    let prompt_name = vendor_str(outcome, "prompt_name").unwrap_or(DEFAULT_PROMPT_NAME);
    let mut body = Map::new();
    // The fixed keys win over a prompt that happens to be called "name" or "job_id".
    body.insert(prompt_name.to_owned(), json!(image_urls(outcome)));
    body.insert("name".into(), json!(vendor_str(outcome, "name").unwrap_or(&job.id)));
    body.insert("job_id".into(), json!(job.id));
    if outcome.event != EventKind::Completed {
        let reason = outcome.record.error.as_deref().unwrap_or(match outcome.event {
            EventKind::Canceled => "job cancelled",
            _ => "job failed",
        });
        body.insert("error".into(), json!(reason));
    }
    Value::Object(body)
}
