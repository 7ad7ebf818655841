//! The `diffute` callback (seed 002): a manifest keyed by every prompt name of the request, each
//! key holding the list of media URLs generated for that prompt, beside the request's `name` and
//! the `job_id`. URLs point at this service's signed, expiring media route.
//!
//! The prompt names and image counts come from the job's vendor context: `prompts`, a list of
//! `{"name", "count"}` in request order, written by the Diffute API. A job's images are
//! numbered on across its prompts, so each prompt takes the next `count` images. A job
//! submitted with a single `prompt_name` (the native API) lists all its images under that
//! name, defaulting to `"images"`. `name` defaults to the job id. A failed or cancelled job
//! lists the images it has (usually none) and carries `error`.

use serde_json::{Map, Value, json};

use super::{image_urls, vendor_str};
use crate::domain::{EventKind, JobOutcome};

/// Prompt key used when the job did not name its prompt.
pub const DEFAULT_PROMPT_NAME: &str = "images";

/// The keys every manifest has; a prompt may not be named after one of them.
pub const RESERVED_KEYS: &[&str] = &["name", "job_id", "error"];

/// The `(name, image count)` of each prompt, in request order, from the job's vendor context;
/// None when the job was not submitted through the Diffute API.
pub fn prompt_counts(vendor_context: &Value) -> Option<Vec<(String, usize)>> {
    let prompts = vendor_context.get("prompts")?.as_array()?;
    prompts
        .iter()
        .map(|p| {
            let name = p.get("name")?.as_str()?.to_owned();
            let count = usize::try_from(p.get("count")?.as_u64()?).ok()?;
            Some((name, count))
        })
        .collect()
}

/// Renders `outcome` as a `diffute` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let job = &outcome.record.job;
    let urls = image_urls(outcome);
    let mut body = Map::new();
    match prompt_counts(&job.vendor_context) {
        Some(prompts) => {
            let mut rest = urls.as_slice();
            for (name, count) in prompts {
                let (mine, after) = rest.split_at(count.min(rest.len()));
                body.insert(name, json!(mine));
                rest = after;
            }
        }
        None => {
            let prompt_name = vendor_str(outcome, "prompt_name").unwrap_or(DEFAULT_PROMPT_NAME);
            body.insert(prompt_name.to_owned(), json!(urls));
        }
    }
    // The fixed keys win over a prompt that happens to be called "name" or "job_id" (the
    // Diffute API refuses such names; the native API does not check them).
    body.insert(
        "name".into(),
        json!(vendor_str(outcome, "name").unwrap_or(&job.id)),
    );
    body.insert("job_id".into(), json!(job.id));
    if outcome.event != EventKind::Completed {
        let reason = outcome
            .record
            .error
            .as_deref()
            .unwrap_or(match outcome.event {
                EventKind::Canceled => "job cancelled",
                _ => "job failed",
            });
        body.insert("error".into(), json!(reason));
    }
    Value::Object(body)
}
