//! RunPod serverless with the A1111 worker (seeds 000/001), under `/v2/{endpoint_id}/...`:
//! `run`, `runsync`, `status/{id}`, `cancel/{id}`, `health`, `purge-queue`, `stream/{id}`.
//!
//! Every route needs the caller's key (RunPod's `Authorization: <key>`, with or without
//! `Bearer`) and sees only the caller's jobs. The endpoint id is accepted as given: this
//! service is one endpoint whatever it is called, so a client keeps its RunPod URLs with only
//! the host changed. Job status objects and callbacks are rendered by
//! [`crate::formats::runpod`], so `/status`, `/runsync` and the webhook agree.

mod request;
mod status;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::HttpState;
use crate::auth::Caller;
use crate::formats::runpod::status_name;

/// The RunPod routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/v2/{endpoint}/run", post(run))
        .route("/v2/{endpoint}/runsync", post(runsync))
        .route(
            "/v2/{endpoint}/status/{id}",
            get(job_status).post(job_status),
        )
        .route("/v2/{endpoint}/cancel/{id}", post(cancel))
        .route("/v2/{endpoint}/health", get(health))
        .route("/v2/{endpoint}/purge-queue", post(purge_queue))
        .route("/v2/{endpoint}/stream/{id}", get(stream))
}

/// `/run`: stores the job and answers `{"id", "status"}`: `IN_QUEUE` for a generation,
/// `COMPLETED` for an A1111 call answered at once, the job's status so far for an idempotent
/// repeat.
async fn run(
    State(state): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let started = request::submit(&state, &caller, &headers, body).await?;
    let id = started.inserted.id;
    let status = match (started.inserted.deduplicated, started.answered) {
        (true, _) => status_name(state.jobs.get(&caller, &id).await?.status),
        (false, true) => "COMPLETED",
        (false, false) => "IN_QUEUE",
    };
    Ok(Json(json!({"id": id, "status": status})))
}

/// RunPod's `?wait=<ms>` on `/runsync`.
#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// `/runsync`: like `/run`, then waits for the job up to the service's bound (or `?wait=`, if
/// shorter) and answers like `/status`: with `output` once done, else the status so far and
/// the id to poll.
async fn runsync(
    State(state): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let Json(body) = body?;
    let bound = state.jobs.sync_wait();
    let wait = query
        .wait
        .map_or(bound, |ms| bound.min(std::time::Duration::from_millis(ms)));
    let started = request::submit(&state, &caller, &headers, body).await?;
    let record = state.jobs.wait(&caller, &started.inserted.id, wait).await?;
    Ok(Json(status::job(&state, &caller, &record).await?))
}

/// `/status/{id}` (GET or POST): the job's status object.
async fn job_status(
    State(state): State<HttpState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state.jobs.get(&caller, &id).await?;
    Ok(Json(status::job(&state, &caller, &record).await?))
}

/// `/cancel/{id}`: cancels the job unless it has ended; answers its status then.
async fn cancel(
    State(state): State<HttpState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state.jobs.cancel(&caller, &id).await?;
    Ok(Json(
        json!({"id": record.job.id, "status": status_name(record.status)}),
    ))
}

/// `/health`: the caller's job counts and the workers (see [`status::health`]).
async fn health(
    State(state): State<HttpState>,
    caller: Caller,
    Path(_): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let counts = state.jobs.counts(&caller).await?;
    Ok(Json(status::health(&counts, state.jobs.generation_slots())))
}

/// `/purge-queue`: cancels the caller's jobs that have not started (running ones go on).
async fn purge_queue(
    State(state): State<HttpState>,
    caller: Caller,
    Path(_): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = state
        .jobs
        .cancel_all(&caller, false, "removed from the queue by /purge-queue")
        .await?;
    Ok(Json(json!({"removed": removed, "status": "completed"})))
}

/// `/stream/{id}`: the job in RunPod's stream shape (see [`status::stream`]).
async fn stream(
    State(state): State<HttpState>,
    caller: Caller,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = state.jobs.get(&caller, &id).await?;
    let preview = match record.status {
        crate::domain::JobStatus::Running => state.jobs.preview(&caller, &id).await?,
        _ => None,
    };
    Ok(Json(
        status::stream(&state, &caller, &record, preview.as_deref()).await?,
    ))
}
