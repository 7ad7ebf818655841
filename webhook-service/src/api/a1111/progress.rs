//! `progress` and `interrupt`: A1111's view of "the" generation, here the caller's own.
//!
//! A1111 runs one job at a time for everybody; this service runs many, for many keys, so
//! `progress` reports the caller's current job (its running one, else its newest queued one)
//! and `interrupt` stops the caller's jobs, never another key's.

use base64::Engine;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::HttpState;
use crate::auth::Caller;
use crate::domain::{JobRecord, JobStatus};

/// How many of the caller's unfinished jobs `progress` looks through for a running one.
const LOOK_AT: u32 = 64;

/// A1111's `state.dict()` when nothing runs.
fn idle_state() -> Value {
    json!({
        "skipped": false, "interrupted": false, "stopping_generation": false, "job": "",
        "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0,
    })
}

/// `YYYYMMDDhhmmss` (UTC) of `ms` since the epoch: A1111's `job_timestamp`.
fn job_timestamp(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        return "0".to_owned();
    };
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The job A1111's `progress` would talk about: the caller's running job, else its newest queued.
fn current(active: &[JobRecord]) -> Option<&JobRecord> {
    active
        .iter()
        .find(|r| r.status == JobStatus::Running)
        .or_else(|| active.first())
}

/// `GET /sdapi/v1/progress`: `{progress, eta_relative, state, current_image, textinfo}` for
/// the caller's current job; `current_image` is its latest preview (base64 PNG) unless
/// `skip_current_image`. Without a job: progress 0 and A1111's idle state.
pub async fn progress(
    state: &HttpState,
    caller: &Caller,
    skip_current_image: bool,
) -> Result<Value, ApiError> {
    let active = state.jobs.active(caller, LOOK_AT).await?;
    let Some(record) = current(&active) else {
        return Ok(
            json!({"progress": 0.0, "eta_relative": 0.0, "state": idle_state(), "current_image": null, "textinfo": null}),
        );
    };
    // A1111 counts a job's batches (`n_iter`) as its jobs and the steps of one batch as its
    // sampling steps; the dispatcher counts steps over the whole job.
    let job_count: u32 = record.parts().map(|p| p.n_iter.unwrap_or(1).max(1)).sum();
    let (step, total) = (record.progress_step, record.progress_total);
    let per_batch = total.checked_div(job_count).unwrap_or(0);
    let job_no = step
        .checked_div(per_batch)
        .map_or(0, |n| n.min(job_count.saturating_sub(1)));
    let sampling_step = step.saturating_sub(job_no * per_batch);
    let progress = if total > 0 {
        (f64::from(step) / f64::from(total)).min(1.0)
    } else {
        0.0
    };
    // A1111's estimate: the time so far scaled by the fraction done (at least 1%).
    let eta_relative = match record.started_at_ms {
        Some(started) if record.status == JobStatus::Running => {
            let elapsed = (state.jobs.now_ms() - started).max(0) as f64 / 1000.0;
            elapsed / progress.max(0.01) - elapsed
        }
        _ => 0.0,
    };
    let current_image = if skip_current_image {
        None
    } else {
        state
            .jobs
            .preview(caller, &record.job.id)
            .await?
            .map(|png| base64::engine::general_purpose::STANDARD.encode(png))
    };
    let job = if record.job.params.init_image.is_empty() {
        "scripts_txt2img"
    } else {
        "scripts_img2img"
    };
    Ok(json!({
        "progress": progress,
        "eta_relative": eta_relative,
        "state": {
            "skipped": false,
            "interrupted": false,
            "stopping_generation": false,
            "job": job,
            "job_count": job_count,
            "job_timestamp": job_timestamp(record.job.created_at_ms),
            "job_no": job_no,
            "sampling_step": sampling_step,
            "sampling_steps": per_batch,
        },
        "current_image": current_image,
        "textinfo": null,
    }))
}

/// `POST /sdapi/v1/interrupt`: cancels the caller's queued and running jobs (a waiting
/// `txt2img` call then answers 409); answers `{}` as A1111 does.
pub async fn interrupt(state: &HttpState, caller: &Caller) -> Result<Value, ApiError> {
    state
        .jobs
        .cancel_all(caller, true, "interrupted (POST /sdapi/v1/interrupt)")
        .await?;
    Ok(json!({}))
}

/// Whether a query value means true, as FastAPI reads a `bool` parameter.
pub fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on" | "t" | "y"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_a1111s() {
        assert_eq!(job_timestamp(1_700_000_000_000), "20231114221320");
        assert!(truthy("True") && truthy("1") && !truthy("false") && !truthy(""));
    }
}
