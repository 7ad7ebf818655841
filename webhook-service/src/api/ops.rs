//! Routes for operators and webhook receivers, open without a key: `/healthz` (liveness: the
//! process answers), `/readyz` (readiness: the store takes writes and the inference servers
//! answer), `/metrics` and the signed media links that callbacks carry (the signature is the
//! authority there).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::state::HttpState;

/// The open routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/media/{job_id}/{file}", get(media))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
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
    let Ok(Query(q)) = query else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the link needs its expires and sig parameters",
        ));
    };
    let index: u32 = file
        .strip_suffix(".png")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("no image {file:?}")))?;
    let png = state.jobs.media(&job_id, index, q.expires, &q.sig).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        png,
    )
        .into_response())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.jobs.metrics_text(),
    )
}

/// 200 when every component is ready, else 503; the body names each component's state.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let checks = state.jobs.readiness().await;
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let detail: Map<String, Value> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_owned(),
                json!(r.err().unwrap_or_else(|| "ok".to_owned())),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": detail})))
}
