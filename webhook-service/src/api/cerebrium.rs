//! Cerebrium (seed 003): `POST /cerebrium/{model}/predict` with the model's input fields
//! (A1111-style) and `webhook_endpoint` → `{"run_id", "message"}` at once, the result later at
//! the webhook as `{run_id, run_time_ms, message, result}`.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::a1111::payload::A1111Payload;
use super::error::ApiError;
use super::state::{HttpState, idempotency_header};
use super::validate::Submission;
use crate::auth::Caller;

/// The Cerebrium routes.
pub fn router() -> Router<HttpState> {
    Router::new().route("/cerebrium/{model}/predict", post(cerebrium_predict))
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
    caller: Caller,
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
    let inserted = state
        .jobs
        .accept(&caller, submission)
        .await
        .map_err(|e| ApiError::from(e).rename_field("webhook.url", "webhook_endpoint"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": inserted.id,
            "message": "We will return the images to the endpoint provided when the task is complete.",
        })),
    ))
}
