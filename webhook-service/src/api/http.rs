//! The HTTP API (axum): native job routes, delivery inspection, media, metrics and health.
//!
//! Errors are JSON: `{"error": {"field", "rule", "message"}}` with 422 for a field that breaks
//! a rule, 400 for a body that is not the expected JSON, 404 for unknown ids.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::a1111::A1111Payload;
use super::validate::{self, FieldError, Submission, UrlRules};
use super::vendors;
use crate::domain::{DeliveryRecord, JobRecord};
use crate::jobs::{JobError, JobService, new_job_id};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The job service.
    pub jobs: Arc<JobService>,
    /// What webhook URLs may be.
    pub rules: UrlRules,
}

/// The HTTP API's routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/deliveries", get(deliveries))
        .route("/v1/deliveries/{id}/redeliver", post(redeliver))
        .route("/media/{job_id}/{file}", get(media))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .merge(vendors::router())
        .with_state(state)
}

/// An HTTP error with a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    rule: Option<String>,
    message: String,
}

impl ApiError {
    /// A 400 for a body that could not be read as the expected JSON.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, field: None, rule: None, message: message.into() }
    }

    /// Reports a field under the name the caller used (vendor shapes name fields their way).
    pub fn rename_field(&mut self, from: &str, to: &str) {
        if self.field.as_deref() == Some(from) {
            self.field = Some(to.to_owned());
            self.message = self.message.replacen(from, to, 1);
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, field: None, rule: None, message: message.into() }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, message: e.to_string(), field: Some(e.field), rule: Some(e.rule) }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::bad_body(e.body_text())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) | JobError::DeliveryNotFound(_) => Self::not_found(e.to_string()),
            JobError::Store(err) => {
                tracing::error!(error = %err, "store error");
                Self { status: StatusCode::SERVICE_UNAVAILABLE, field: None, rule: None, message: "the job store is unavailable; try again".into() }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"field": self.field, "rule": self.rule, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
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

/// Validates and stores a submission; shared by the native and vendor routes.
pub async fn accept(state: &HttpState, submission: Submission) -> Result<crate::store::Inserted, ApiError> {
    let job = validate::submission(submission, state.rules, new_job_id(), state.jobs.clock.now_ms())?;
    Ok(state.jobs.submit(job).await?)
}

/// The `Idempotency-Key` header, if any.
pub fn idempotency_header(headers: &HeaderMap) -> String {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn submit(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let key = if body.idempotency_key.is_empty() { idempotency_header(&headers) } else { body.idempotency_key };
    let submission = Submission {
        params: body.params.into_params("params")?,
        url: body.webhook.url,
        secret: body.webhook.secret,
        format: body.webhook.format,
        events: body.webhook.events,
        signing_secret: body.webhook.signing_secret,
        idempotency_key: key,
        vendor_context: body.vendor_context,
    };
    let inserted = accept(&state, submission).await.map_err(|mut e| {
        e.rename_field("vendor_context_json", "vendor_context");
        e
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": inserted.id, "deduplicated": inserted.deduplicated}))))
}

async fn get_job(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&state.jobs.get(&id).await?)))
}

async fn cancel(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&state.jobs.cancel(&id).await?)))
}

async fn deliveries(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    state.jobs.get(&id).await?;
    let list = state.jobs.store.list_deliveries(&id).await.map_err(JobError::from)?;
    Ok(Json(json!({"deliveries": list.iter().map(delivery_json).collect::<Vec<_>>()})))
}

async fn redeliver(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(delivery_json(&state.jobs.redeliver(&id).await?)))
}

#[derive(Debug, Deserialize)]
struct MediaQuery {
    expires: i64,
    sig: String,
}

async fn media(
    State(state): State<HttpState>,
    Path((job_id, file)): Path<(String, String)>,
    query: Result<Query<MediaQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let forbidden = |message: &str| ApiError { status: StatusCode::FORBIDDEN, field: None, rule: None, message: message.to_owned() };
    let Ok(Query(q)) = query else { return Err(forbidden("the link needs its expires and sig parameters")) };
    let index: u32 = file
        .strip_suffix(".png")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("no image {file:?}")))?;
    state.jobs.media.verify(&job_id, index, q.expires, &q.sig, state.jobs.clock.now_ms()).map_err(|e| forbidden(&e.to_string()))?;
    let png = state.jobs.store.get_image(&job_id, index).await.map_err(JobError::from)?;
    let png = png.ok_or_else(|| ApiError::not_found(format!("job {job_id} has no image {index}")))?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], png).into_response())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.jobs.metrics.encode())
}

/// The public JSON view of a job (no secrets).
pub fn job_json(r: &JobRecord) -> Value {
    json!({
        "id": r.job.id,
        "status": r.status.as_str(),
        "webhook_url": r.job.webhook.url,
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
