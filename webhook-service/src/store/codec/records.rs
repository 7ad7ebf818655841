//! The readers of whole records, one per row type, each reading the columns of its list in
//! [`super`] from any backend's row through [`Columns`].

use prost::Message;
use sdserve_proto::v1::GenerationParams;

use super::{
    Columns, count, decode_events, decode_parts, next_step, opt_u32, out_of_range, parsed, sealed,
    unscope_key,
};
use crate::domain::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryStatus, DeliveryTask, EventKind, Format,
    JobRecord, JobStatus, KeyLimits, KeyWebhook, NewJob, StoredImage, WebhookTarget,
};
use crate::store::StoreError;
use crate::store::secrets::SecretBox;

/// Reads a job selected with [`super::JOB_COLUMNS`], opening its secrets with `secrets`.
pub(in crate::store) fn job_from_row(
    row: &impl Columns,
    secrets: &SecretBox,
) -> Result<JobRecord, StoreError> {
    let id = row.text(0, "jobs.id")?;
    let params = row.bytes(2, "jobs.params")?;
    let params = GenerationParams::decode(params.as_slice()).map_err(|e| StoreError::Corrupt {
        what: "jobs.params",
        detail: format!("not a GenerationParams message: {e}"),
    })?;
    let vendor = row.text(8, "jobs.vendor_context")?;
    let vendor_context = serde_json::from_str(&vendor).map_err(|e| StoreError::Corrupt {
        what: "jobs.vendor_context",
        detail: format!("not JSON: {e}"),
    })?;
    let events = decode_events(&row.text(7, "jobs.events")?)?;
    Ok(JobRecord {
        job: NewJob {
            params,
            owner: row.text(18, "jobs.owner")?,
            extra_parts: decode_parts(row.opt_bytes(19, "jobs.extra_parts")?)?,
            execution_timeout_ms: row
                .opt_int(20, "jobs.execution_timeout_ms")?
                .map(|ms| {
                    u64::try_from(ms).map_err(|_| out_of_range("jobs.execution_timeout_ms", ms))
                })
                .transpose()?,
            webhook: WebhookTarget {
                // An empty URL stands for none: the column is NOT NULL.
                url: Some(row.text(3, "jobs.webhook_url")?).filter(|url| !url.is_empty()),
                secret: sealed(row, 4, "jobs.webhook_secret", &id, secrets)?,
                format: parsed::<Format>(row, 6, "jobs.format")?,
                events,
                signing_secret: sealed(row, 5, "jobs.signing_secret", &id, secrets)?,
            },
            idempotency_key: row
                .opt_text(1, "jobs.idempotency_key")?
                .map(|stored| unscope_key(&stored).to_owned()),
            vendor_context,
            created_at_ms: row.int(10, "jobs.created_at")?,
            id,
        },
        status: parsed::<JobStatus>(row, 9, "jobs.status")?,
        dispatched_at_ms: row.opt_int(21, "jobs.dispatched_at")?,
        queue_position: opt_u32(row, 22, "jobs.queue_position")?,
        started_at_ms: row.opt_int(11, "jobs.started_at")?,
        finished_at_ms: row.opt_int(12, "jobs.finished_at")?,
        progress_step: count(row, 13, "jobs.progress_step")?,
        progress_total: count(row, 14, "jobs.progress_total")?,
        model: row.text(15, "jobs.model")?,
        error: row.opt_text(16, "jobs.error")?,
        image_count: count(row, 17, "images.idx")?,
        info_json: row.text(23, "jobs.info_json")?,
    })
}

/// Reads an image selected with [`super::IMAGE_COLUMNS`].
pub(in crate::store) fn image_from_row(row: &impl Columns) -> Result<StoredImage, StoreError> {
    Ok(StoredImage {
        index: count(row, 0, "images.idx")?,
        seed: row.int(1, "images.seed")?,
        infotext: row.text(2, "images.infotext")?,
        png: row.bytes(3, "images.png")?,
    })
}

/// Reads a delivery selected with [`super::DELIVERY_COLUMNS`], without its attempts.
pub(in crate::store) fn delivery_from_row(
    row: &impl Columns,
) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: row.text(0, "deliveries.id")?,
        job_id: row.text(1, "deliveries.job_id")?,
        event: parsed::<EventKind>(row, 2, "deliveries.event")?,
        url: row.text(3, "deliveries.url")?,
        status: parsed::<DeliveryStatus>(row, 4, "deliveries.status")?,
        next_attempt_at_ms: row.opt_int(5, "deliveries.next_attempt_at")?,
        last_error: row.opt_text(6, "deliveries.last_error")?,
        created_at_ms: row.int(7, "deliveries.created_at")?,
        attempts: Vec::new(),
    })
}

/// Reads a leased delivery selected with [`super::TASK_COLUMNS`], opening its job's secrets.
pub(in crate::store) fn task_from_row(
    row: &impl Columns,
    secrets: &SecretBox,
) -> Result<DeliveryTask, StoreError> {
    let job_id = row.text(1, "deliveries.job_id")?;
    Ok(DeliveryTask {
        id: row.text(0, "deliveries.id")?,
        url: row.text(2, "deliveries.url")?,
        payload: row.bytes(3, "deliveries.payload")?,
        secret: sealed(row, 4, "jobs.webhook_secret", &job_id, secrets)?,
        signing_secret: sealed(row, 5, "jobs.signing_secret", &job_id, secrets)?,
        job_id,
        attempts_made: count(row, 6, "deliveries.attempts_made")?,
        round_attempts: count(row, 7, "deliveries.round_attempts")?,
        format: parsed::<Format>(row, 8, "jobs.format")?,
    })
}

/// Reads an attempt selected with [`super::ATTEMPT_COLUMNS`].
pub(in crate::store) fn attempt_from_row(row: &impl Columns) -> Result<AttemptRecord, StoreError> {
    let status_code = row
        .opt_int(3, "attempts.status_code")?
        .map(|code| u16::try_from(code).map_err(|_| out_of_range("attempts.status_code", code)))
        .transpose()?;
    let outcome = row.text(7, "attempts.outcome")?;
    let next = next_step(&outcome, row.opt_int(8, "attempts.retry_at")?)?;
    Ok(AttemptRecord {
        delivery_id: row.text(0, "attempts.delivery_id")?,
        number: count(row, 1, "attempts.number")?,
        at_ms: row.int(2, "attempts.at")?,
        status_code,
        error: row.opt_text(4, "attempts.error")?,
        duration_ms: count(row, 5, "attempts.duration_ms")?,
        response_excerpt: row.text(6, "attempts.response_excerpt")?,
        next,
    })
}

/// Reads an API key selected with [`super::KEY_COLUMNS`], opening its callback secret.
pub(in crate::store) fn key_from_row(
    row: &impl Columns,
    secrets: &SecretBox,
) -> Result<ApiKeyRecord, StoreError> {
    let id = row.text(0, "api_keys.id")?;
    let webhook_url = row.opt_text(7, "api_keys.webhook_url")?;
    let webhook_secret = sealed(row, 8, "api_keys.webhook_secret", &id, secrets)?;
    Ok(ApiKeyRecord {
        id,
        name: row.text(1, "api_keys.name")?,
        prefix: row.text(2, "api_keys.prefix")?,
        created_at_ms: row.int(3, "api_keys.created_at")?,
        revoked_at_ms: row.opt_int(4, "api_keys.revoked_at")?,
        limits: KeyLimits {
            max_in_flight: opt_u32(row, 5, "api_keys.max_in_flight")?,
            per_minute: opt_u32(row, 6, "api_keys.per_minute")?,
        },
        webhook: webhook_url.map(|url| KeyWebhook {
            url,
            secret: webhook_secret,
        }),
    })
}
