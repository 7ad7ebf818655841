//! The service's two faces: gRPC ([`grpc`]) and HTTP. The HTTP router is composed here from
//! one router per API: the native one ([`native`]), the open operator routes ([`ops`]) and one
//! per vendor shape ([`runpod`], [`a1111`], [`cerebrium`], [`diffute`], [`leonardo`]). Each
//! module exports only its router; they share [`state::HttpState`] and [`error::ApiError`], and
//! reach jobs only through [`crate::jobs::JobService`].

pub mod a1111;
pub mod cerebrium;
pub mod convert;
pub mod diffute;
pub mod error;
pub mod grpc;
pub mod leonardo;
pub mod native;
pub mod ops;
pub mod runpod;
pub mod state;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::KeyRing;
use crate::auth::layer::AuthLayer;
use error::ApiError;
use state::HttpState;

/// The whole HTTP API: every router merged, bodies limited to `body_limit` bytes, every
/// request authenticated against `keys` (routes that need no key ignore the outcome).
pub fn router(state: HttpState, keys: Arc<KeyRing>, body_limit: usize) -> Router {
    Router::new()
        .merge(native::router())
        .merge(ops::router())
        .merge(runpod::router())
        .merge(a1111::router())
        .merge(cerebrium::router())
        .merge(diffute::router())
        .merge(leonardo::router())
        .with_state(state)
        .layer(axum::middleware::map_response(
            move |response: Response| async move { name_body_limit(response, body_limit) },
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(AuthLayer::new(keys))
}

/// Rewrites a 413 (from any extractor) into the JSON error naming the limit.
fn name_body_limit(response: Response, limit: usize) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let mib = limit as f64 / (1024.0 * 1024.0);
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than this service's limit of {limit} bytes ({mib:.1} MiB; see --body-limit)"),
    )
    .into_response()
}
