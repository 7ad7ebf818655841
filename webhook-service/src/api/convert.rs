//! Domain → protobuf translations shared by the gRPC and HTTP APIs. Secrets are never copied.

use sdserve_proto::v1 as pb;

use crate::domain::{AttemptRecord, DeliveryRecord, DeliveryStatus, JobRecord, JobStatus};

/// The public view of a job (no secrets, no init image bytes).
pub fn job(r: &JobRecord) -> pb::Job {
    let mut params = r.job.params.clone();
    params.init_image.clear();
    pb::Job {
        id: r.job.id.clone(),
        status: job_status(r.status) as i32,
        params: Some(params),
        webhook_url: r.job.webhook.url.clone().unwrap_or_default(),
        webhook_format: r.job.webhook.format.to_string(),
        created_at_ms: r.job.created_at_ms,
        started_at_ms: r.started_at_ms.unwrap_or(0),
        finished_at_ms: r.finished_at_ms.unwrap_or(0),
        progress_step: r.progress_step,
        progress_total: r.progress_total,
        image_count: r.image_count,
        error: r.error.clone().unwrap_or_default(),
    }
}

/// The protobuf enum of a job status.
pub fn job_status(s: JobStatus) -> pb::JobStatus {
    match s {
        JobStatus::Queued => pb::JobStatus::Queued,
        JobStatus::Running => pb::JobStatus::Running,
        JobStatus::Completed => pb::JobStatus::Completed,
        JobStatus::Failed => pb::JobStatus::Failed,
        JobStatus::Canceled => pb::JobStatus::Canceled,
        JobStatus::TimedOut => pb::JobStatus::TimedOut,
    }
}

/// The public view of a delivery with its attempts.
pub fn delivery(d: &DeliveryRecord) -> pb::Delivery {
    pb::Delivery {
        id: d.id.clone(),
        job_id: d.job_id.clone(),
        event: d.event.to_string(),
        url: d.url.clone(),
        status: delivery_status(d.status) as i32,
        attempt_count: d.attempts.len() as u32,
        next_attempt_at_ms: d.next_attempt_at_ms.unwrap_or(0),
        last_error: d.last_error.clone().unwrap_or_default(),
        attempts: d.attempts.iter().map(attempt).collect(),
        created_at_ms: d.created_at_ms,
    }
}

fn delivery_status(s: DeliveryStatus) -> pb::DeliveryStatus {
    match s {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::Sending => pb::DeliveryStatus::Sending,
        DeliveryStatus::Succeeded => pb::DeliveryStatus::Succeeded,
        DeliveryStatus::Exhausted => pb::DeliveryStatus::Exhausted,
        DeliveryStatus::Gone => pb::DeliveryStatus::Gone,
    }
}

fn attempt(a: &AttemptRecord) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        number: a.number,
        at_ms: a.at_ms,
        status_code: a.status_code.map_or(0, u32::from),
        error: a.error.clone().unwrap_or_default(),
        duration_ms: a.duration_ms,
        response_excerpt: a.response_excerpt.clone(),
    }
}
