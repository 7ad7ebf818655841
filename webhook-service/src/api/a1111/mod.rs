//! AUTOMATIC1111's own API, `/sdapi/v1/...`, and the routing of A1111 calls made through
//! another vendor's envelope (RunPod's `input.api`) in [`route`].

pub mod payload;

use axum::Router;
use serde_json::Value;

use super::error::ApiError;
use super::state::HttpState;
use crate::auth::Caller;
use payload::A1111Payload;

/// The A1111 routes.
pub fn router() -> Router<HttpState> {
    Router::new()
}

/// What an A1111 call made through another vendor's envelope turns into.
#[derive(Debug)]
pub enum Routed {
    /// `POST /sdapi/v1/txt2img` or `img2img`: a generation with these fields.
    Generate(Box<A1111Payload>),
    /// Any other endpoint: answered at once with this JSON (A1111's response body).
    Answer(Value),
}

/// Routes an A1111 call (`method`, `endpoint` as in RunPod's `input.api`, `payload` its body)
/// for `caller`. An endpoint A1111 does not have, or a method it does not take, is an error
/// naming the endpoint, never a generation.
pub async fn route(
    _state: &HttpState,
    _caller: &Caller,
    method: &str,
    endpoint: &str,
    payload: Value,
) -> Result<Routed, ApiError> {
    let path = endpoint.trim_end_matches('/');
    match (method.to_ascii_uppercase().as_str(), path) {
        ("POST", "/sdapi/v1/txt2img" | "/sdapi/v1/img2img") => {
            let parsed: A1111Payload = serde_json::from_value(payload)
                .map_err(|e| ApiError::bad_body(format!("input.payload: {e}")))?;
            Ok(Routed::Generate(Box::new(parsed)))
        }
        (m, p) => Err(ApiError::field("input.api.endpoint", format!("{m} {p} is not an A1111 API endpoint this service serves"))),
    }
}
