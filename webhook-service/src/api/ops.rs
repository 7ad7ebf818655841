//! Routes for operators and webhook receivers, open without a key: `/healthz`, `/metrics`
//! and the signed media links that callbacks carry (the signature is the authority there).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::error::ApiError;
use super::state::HttpState;

/// The open routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/media/{job_id}/{file}", get(media))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
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
        return Err(ApiError::new(StatusCode::FORBIDDEN, "the link needs its expires and sig parameters"));
    };
    let index: u32 = file
        .strip_suffix(".png")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("no image {file:?}")))?;
    let png = state.jobs.media(&job_id, index, q.expires, &q.sig).await?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], png).into_response())
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.jobs.metrics_text())
}
