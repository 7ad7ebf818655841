//! RunPod serverless with the A1111 worker (seeds 000/001): `/v2/{endpoint}/run` taking
//! `{"webhook", "input": {"api": {...}, "payload": {A1111 fields}}}`; the callback echoes
//! `input` in RunPod's job-status shape.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::a1111::payload::A1111Payload;
use super::error::ApiError;
use super::state::{HttpState, idempotency_header};
use super::validate::Submission;
use crate::auth::Caller;

/// The RunPod routes.
pub fn router() -> Router<HttpState> {
    Router::new().route("/v2/{endpoint}/run", post(runpod_run))
}

#[derive(Debug, Deserialize)]
struct RunpodBody {
    #[serde(default)]
    webhook: String,
    input: Value,
}

/// RunPod: `{"webhook", "input": {"api": {...}, "payload": {A1111 fields}}}` →
/// `{"id", "status": "IN_QUEUE"}`; the callback echoes `input`.
async fn runpod_run(
    State(state): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<RunpodBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let payload = body.input.get("payload").cloned().unwrap_or_else(|| json!({}));
    let payload: A1111Payload =
        serde_json::from_value(payload).map_err(|e| ApiError::bad_body(format!("input.payload: {e}")))?;
    let submission = Submission {
        params: payload.into_params("input.payload")?,
        url: body.webhook,
        format: "runpod".into(),
        idempotency_key: idempotency_header(&headers),
        vendor_context: json!({"input": body.input}),
        ..Submission::default()
    };
    let inserted = state.jobs.accept(&caller, submission).await?;
    Ok(Json(json!({"id": inserted.id, "status": "IN_QUEUE"})))
}

