//! The native HTTP API: `/v1/jobs` (submit, read, cancel, images, deliveries) and
//! `/v1/deliveries/{id}/redeliver`. Every route needs the caller's key and sees only the
//! caller's jobs.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::a1111::payload::A1111Payload;
use super::error::ApiError;
use super::state::{HttpState, idempotency_header};
use super::validate::Submission;
use crate::auth::Caller;
use crate::domain::{DeliveryRecord, JobRecord};

/// The native routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/images/{index}", get(image))
        .route("/v1/jobs/{id}/deliveries", get(deliveries))
        .route("/v1/deliveries/{id}/redeliver", post(redeliver))
}

/// The native submission body.
#[derive(Debug, Deserialize)]
struct SubmitBody {
    #[serde(default)]
    params: A1111Payload,
    webhook: WebhookBody,
    #[serde(default)]
    idempotency_key: String,
    /// Vendor request fields the callback format echoes (e.g. Diffute's `name`, `prompt_name`).
    #[serde(default)]
    vendor_context: Value,
}

#[derive(Debug, Deserialize)]
struct WebhookBody {
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    signing_secret: String,
}

async fn submit(
    State(state): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let key = if body.idempotency_key.is_empty() {
        idempotency_header(&headers)
    } else {
        body.idempotency_key
    };
    let submission = Submission {
        params: body.params.into_params("params")?,
        url: body.webhook.url,
        secret: body.webhook.secret,
        format: body.webhook.format,
        events: body.webhook.events,
        signing_secret: body.webhook.signing_secret,
        idempotency_key: key,
        vendor_context: body.vendor_context,
        ..Submission::default()
    };
    let inserted = state
        .jobs
        .accept(&caller, submission)
        .await
        .map_err(|e| ApiError::from(e).rename_field("vendor_context_json", "vendor_context"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": inserted.id, "deduplicated": inserted.deduplicated})),
    ))
}

async fn get_job(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&state.jobs.get(&caller, &id).await?)))
}

async fn cancel(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&state.jobs.cancel(&caller, &id).await?)))
}

async fn image(
    State(state): State<HttpState>,
    caller: Caller,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let index: u32 = file
        .strip_suffix(".png")
        .unwrap_or(&file)
        .parse()
        .map_err(|_| {
            ApiError::not_found(format!("no image {file:?}; images are numbered from 0"))
        })?;
    let png = state.jobs.image(&caller, &id, index).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        png,
    )
        .into_response())
}

async fn deliveries(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let list = state.jobs.deliveries(&caller, &id).await?;
    Ok(Json(
        json!({"deliveries": list.iter().map(delivery_json).collect::<Vec<_>>()}),
    ))
}

async fn redeliver(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(delivery_json(
        &state.jobs.redeliver(&caller, &id).await?,
    )))
}

/// The public JSON view of a job (no secrets).
pub fn job_json(r: &JobRecord) -> Value {
    json!({
        "id": r.job.id,
        "status": r.status.as_str(),
        "webhook_url": r.job.webhook.url,
        "queue_position": r.queue_position,
        "webhook_format": r.job.webhook.format.as_str(),
        "created_at_ms": r.job.created_at_ms,
        "started_at_ms": r.started_at_ms,
        "finished_at_ms": r.finished_at_ms,
        "progress": {"step": r.progress_step, "total": r.progress_total},
        "image_count": r.image_count,
        "model": r.model,
        "error": r.error,
    })
}

/// The public JSON view of a delivery and its attempts.
pub fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "job_id": d.job_id,
        "event": d.event.as_str(),
        "url": d.url,
        "status": d.status.as_str(),
        "next_attempt_at_ms": d.next_attempt_at_ms,
        "last_error": d.last_error,
        "created_at_ms": d.created_at_ms,
        "attempts": d.attempts.iter().map(|a| json!({
            "number": a.number,
            "at_ms": a.at_ms,
            "status_code": a.status_code,
            "error": a.error,
            "duration_ms": a.duration_ms,
            "response_excerpt": a.response_excerpt,
        })).collect::<Vec<_>>(),
    })
}
