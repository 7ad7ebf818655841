//! The JSON RunPod's read routes answer with: the job status object, `/health` and `/stream`.

use base64::Engine;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::state::HttpState;
use crate::auth::Caller;
use crate::domain::{Format, JobRecord, JobStatus};
use crate::formats::runpod::{finished_object, status_name};

/// The job status object `/status` and `/runsync` answer with. A finished job's is the object
/// its callback carries (`output` or `error`, `input`, `webhook`); an unfinished one's is
/// `{"id", "status", "delayTime", "executionTime"}` with the times so far.
pub(super) async fn job(
    state: &HttpState,
    caller: &Caller,
    record: &JobRecord,
) -> Result<Value, ApiError> {
    let finished = if record.job.webhook.format == Format::Runpod {
        state.jobs.outcome_json(record).await?
    } else if record.status.is_final() {
        // A job submitted through another API: its callback has another shape, so render
        // RunPod's here.
        finished_object(record, &state.jobs.images(caller, &record.job.id).await?)
    } else {
        None
    };
    if let Some(object) = finished {
        return Ok(object);
    }
    let now = state.jobs.now_ms();
    Ok(json!({
        "id": record.job.id,
        "status": status_name(record.status),
        "delayTime": record.queue_ms(now),
        "executionTime": record.execution_ms(now),
    }))
}

/// `/health` from the caller's job counts and the service's `slots` generation slots:
/// `jobs.completed`, `failed` (failed and timed out), `inProgress`, `inQueue`, `retried`
/// (always 0: a job is never run twice, a broken inference stream is resumed within its one
/// run); `workers.running` is how many of the caller's jobs are generating (one slot each),
/// `workers.idle` the slots left over.
pub(super) fn health(counts: &[(JobStatus, u64)], slots: usize) -> Value {
    let count = |wanted: &[JobStatus]| -> u64 {
        counts
            .iter()
            .filter(|(s, _)| wanted.contains(s))
            .map(|(_, n)| n)
            .sum()
    };
    let running = count(&[JobStatus::Running]);
    json!({
        "jobs": {
            "completed": count(&[JobStatus::Completed]),
            "failed": count(&[JobStatus::Failed, JobStatus::TimedOut]),
            "inProgress": running,
            "inQueue": count(&[JobStatus::Queued]),
            "retried": 0,
        },
        "workers": {
            "idle": (slots as u64).saturating_sub(running),
            "running": running.min(slots as u64),
        },
    })
}

/// `/stream/{id}` in RunPod's stream shape `{"status", "stream": [{"output": ...}]}`. A job has
/// no partial outputs but its progress, so: queued, `stream` is empty; running, one entry
/// whose output is A1111's progress object (`progress` 0–1, `state.sampling_step`/
/// `sampling_steps`, `current_image` the latest preview as base64 PNG or null); completed, one
/// entry with the job's `output`; failed, cancelled or timed out, `stream` is empty and
/// `error` says why.
pub(super) async fn stream(
    state: &HttpState,
    caller: &Caller,
    record: &JobRecord,
    preview: Option<&[u8]>,
) -> Result<Value, ApiError> {
    let status = status_name(record.status);
    Ok(match record.status {
        JobStatus::Queued => json!({"status": status, "stream": []}),
        JobStatus::Running => {
            let (step, total) = (record.progress_step, record.progress_total);
            let progress = if total == 0 {
                0.0
            } else {
                f64::from(step) / f64::from(total)
            };
            let image = preview.map(|png| base64::engine::general_purpose::STANDARD.encode(png));
            let output = json!({
                "progress": progress,
                "state": {"sampling_step": step, "sampling_steps": total},
                "current_image": image,
            });
            json!({"status": status, "stream": [{"output": output}]})
        }
        JobStatus::Completed => {
            let object = job(state, caller, record).await?;
            json!({"status": status, "stream": [{"output": object["output"]}]})
        }
        JobStatus::Failed | JobStatus::Canceled | JobStatus::TimedOut => {
            json!({"status": status, "stream": [], "error": record.error})
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_timeouts_as_failures_and_running_jobs_as_busy_workers() {
        let counts = [
            (JobStatus::Completed, 3),
            (JobStatus::Failed, 1),
            (JobStatus::TimedOut, 2),
            (JobStatus::Canceled, 5),
            (JobStatus::Running, 1),
            (JobStatus::Queued, 4),
        ];
        let health = health(&counts, 2);
        assert_eq!(
            health,
            json!({
                "jobs": {"completed": 3, "failed": 3, "inProgress": 1, "inQueue": 4, "retried": 0},
                "workers": {"idle": 1, "running": 1},
            })
        );
        assert_eq!(
            super::health(&[], 2)["workers"],
            json!({"idle": 2, "running": 0})
        );
    }
}
