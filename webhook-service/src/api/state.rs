//! What every HTTP handler shares ([`HttpState`]) and how it learns its [`Caller`].

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::{AuthError, Authenticated, Caller};
use crate::jobs::JobService;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// The job service: every handler goes through it.
    pub jobs: Arc<JobService>,
}

/// A handler that takes a [`Caller`] answers 401 unless the request carried a valid key (or
/// the service runs without authentication).
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(outcome)) => outcome.clone().map_err(ApiError::from),
            // The auth layer runs in front of every route; its absence is a wiring mistake,
            // and failing closed is the safe answer.
            None => Err(AuthError::Missing.into()),
        }
    }
}

/// The `Idempotency-Key` header, if any.
pub fn idempotency_header(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
