//! Vendor request shapes over HTTP, so callers can switch by changing a base URL:
//! RunPod's serverless `/run` with the A1111 worker's input (seed 000) and Cerebrium's
//! `/predict` with `webhook_endpoint` (seed 003). Each maps onto a native job whose callback
//! uses the vendor's format.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::a1111::A1111Payload;
use super::http::{ApiError, HttpState, accept, idempotency_header};
use super::validate::Submission;

/// The vendor routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v2/{endpoint}/run", post(runpod_run))
        .route("/cerebrium/{model}/predict", post(cerebrium_predict))
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
    let inserted = accept(&state, submission).await?;
    Ok(Json(json!({"id": inserted.id, "status": "IN_QUEUE"})))
}

#[derive(Debug, Deserialize)]
struct CerebriumBody {
    #[serde(default)]
    webhook_endpoint: String,
    #[serde(flatten)]
    payload: A1111Payload,
}

/// Cerebrium: A1111-style fields plus `webhook_endpoint` → `{"run_id", "message"}`.
async fn cerebrium_predict(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Json<CerebriumBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let submission = Submission {
        params: body.payload.into_params("body")?,
        url: body.webhook_endpoint.clone(),
        format: "cerebrium".into(),
        idempotency_key: idempotency_header(&headers),
        ..Submission::default()
    };
    let inserted = accept(&state, submission).await.map_err(|mut e| {
        e.rename_field("webhook.url", "webhook_endpoint");
        e
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": inserted.id,
            "message": "We will return the images to the endpoint provided when the task is complete.",
        })),
    ))
}
