//! Cerebrium (seed 003): `POST /{model}/predict`, as at `https://run.cerebrium.ai/<model>/predict`
//! (and `POST /cerebrium/{model}/predict`, the older prefixed form, as an alias).
//!
//! `{model}` names one of the models the inference servers serve (their `ListModels`); another
//! name is a 404 listing the served ones. The body is the model's input (A1111-style fields)
//! plus an optional `webhook_endpoint`:
//!
//! - with `webhook_endpoint`: 202 `{"run_id", "message"}` at once, and the result later at the
//!   endpoint as `{run_id, run_time_ms, message, result}`;
//! - without it: synchronous, as Cerebrium is without a webhook. The call waits for the run (up
//!   to the service's `--sync-wait` bound) and answers 200 with the body the webhook would have
//!   carried; a failed run answers that body (with `error`) as 500, a timed-out one as 504, a
//!   cancelled one as 409. If the bound passes first, 202 `{"run_id", "message"}` says the run
//!   goes on; `GET /v1/jobs/{run_id}` (same key) follows it from there.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
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
use crate::domain::JobStatus;

/// What the asynchronous answer says (the seed's wording).
const WEBHOOK_MESSAGE: &str =
    "We will return the images to the endpoint provided when the task is complete.";

/// The Cerebrium routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/{model}/predict", post(predict))
        .route("/cerebrium/{model}/predict", post(predict))
}

#[derive(Debug, Deserialize)]
struct CerebriumBody {
    #[serde(default)]
    webhook_endpoint: String,
    #[serde(flatten)]
    payload: A1111Payload,
}

/// Cerebrium's predict: see the module documentation.
async fn predict(
    State(state): State<HttpState>,
    caller: Caller,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CerebriumBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let served = state.jobs.models().await?;
    if !served.iter().any(|m| m.name == model) {
        let names: Vec<&str> = served.iter().map(|m| m.name.as_str()).collect();
        let listed = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        return Err(ApiError::not_found(format!(
            "no model {model:?} is served here; the models served are: {listed}"
        )));
    }
    let Json(body) = body?;
    let mut params = body.payload.into_params("body")?;
    params.model = model;
    let synchronous = body.webhook_endpoint.is_empty();
    let submission = Submission {
        params,
        url: body.webhook_endpoint,
        format: "cerebrium".into(),
        idempotency_key: idempotency_header(&headers),
        webhook_optional: true,
        ..Submission::default()
    };
    let inserted = state.jobs.accept(&caller, submission).await.map_err(|e| {
        // The model's inputs are the body's top-level fields.
        ApiError::from(e)
            .rename_field("webhook.url", "webhook_endpoint")
            .rename_field("params", "body")
    })?;
    if !synchronous {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"run_id": inserted.id, "message": WEBHOOK_MESSAGE})),
        ));
    }
    let record = state
        .jobs
        .wait(&caller, &inserted.id, state.jobs.sync_wait())
        .await?;
    let status = match record.status {
        JobStatus::Completed => StatusCode::OK,
        JobStatus::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        JobStatus::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        JobStatus::Canceled => StatusCode::CONFLICT,
        JobStatus::Queued | JobStatus::Running => StatusCode::ACCEPTED,
    };
    match state.jobs.outcome_json(&record).await? {
        Some(outcome) => Ok((status, Json(outcome))),
        None => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "run_id": record.job.id,
                "message": format!(
                    "The run is still {}; it was not finished within {} s. Follow it at GET /v1/jobs/{}.",
                    record.status.as_str(),
                    state.jobs.sync_wait().as_secs(),
                    record.job.id,
                ),
            })),
        )),
    }
}
