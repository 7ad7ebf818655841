//! AUTOMATIC1111's own API, `/sdapi/v1/...`, and the routing of A1111 calls made through
//! another vendor's envelope (RunPod's `input.api`) in [`route`].
//!
//! Each endpoint is one function shared by its HTTP route and [`route`]: generation
//! ([`generate`]), the lists and options ([`catalog`]), `progress` and `interrupt`
//! ([`progress`]), and `png-info` ([`pnginfo`]). Every route needs a key; A1111 clients send it
//! as the password of HTTP Basic auth (`webuiapi`'s `set_auth(user, key)`).

pub mod catalog;
pub mod generate;
pub mod payload;
pub mod pnginfo;
pub mod progress;

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::HttpState;
use crate::auth::Caller;
use generate::Kind;
use payload::A1111Payload;

/// The A1111 routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/progress", get(progress_route))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/png-info", post(png_info))
        .route("/sdapi/v1/scripts", get(scripts))
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
///
/// A generation's payload comes back prepared as `/sdapi/v1/txt2img` prepares it: A1111's
/// defaults applied (50 steps, sampler `Euler`), the model resolved to a served name (from
/// `override_settings.sd_model_checkpoint` or the caller's `options`), txt2img's stray
/// `init_images` dropped; errors name fields under `input.payload`. A GET endpoint's query
/// parameters may come in the endpoint (`/sdapi/v1/progress?skip_current_image=true`) or in
/// `payload`.
pub async fn route(
    state: &HttpState,
    caller: &Caller,
    method: &str,
    endpoint: &str,
    payload: Value,
) -> Result<Routed, ApiError> {
    const FIELD: &str = "input.payload";
    let (path, query) = endpoint.split_once('?').unwrap_or((endpoint, ""));
    let path = path.trim_end_matches('/');
    let flag = |name: &str| {
        payload.get(name).and_then(Value::as_bool).unwrap_or(false)
            || query.split('&').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, v)| k == name && progress::truthy(v))
            })
    };
    let answer = match (method.to_ascii_uppercase().as_str(), path) {
        ("POST", "/sdapi/v1/txt2img" | "/sdapi/v1/img2img") => {
            let kind = if path.ends_with("txt2img") {
                Kind::Txt2Img
            } else {
                Kind::Img2Img
            };
            let prepared = generate::prepare(state, caller, kind, payload, FIELD).await?;
            return Ok(Routed::Generate(Box::new(prepared.payload)));
        }
        ("GET", "/sdapi/v1/samplers") => catalog::samplers(),
        ("GET", "/sdapi/v1/schedulers") => catalog::schedulers(),
        ("GET", "/sdapi/v1/sd-models") => catalog::sd_models(state).await?,
        ("GET", "/sdapi/v1/options") => catalog::get_options(state, caller).await?,
        ("POST", "/sdapi/v1/options") => {
            catalog::set_options(state, caller, payload, FIELD).await?
        }
        ("GET", "/sdapi/v1/progress") => {
            progress::progress(state, caller, flag("skip_current_image")).await?
        }
        ("POST", "/sdapi/v1/interrupt") => progress::interrupt(state, caller).await?,
        ("POST", "/sdapi/v1/png-info") => pnginfo::png_info(&payload, FIELD)?,
        ("GET", "/sdapi/v1/scripts") => scripts_json(),
        (m, p) => {
            return Err(ApiError::field(
                "input.api.endpoint",
                format!("{m} {p} is not an A1111 API endpoint this service serves"),
            ));
        }
    };
    Ok(Routed::Answer(answer))
}

/// A JSON body, or `{}` for an empty one (A1111 clients post some endpoints without a body).
fn body(body: Result<Json<Value>, JsonRejection>) -> Result<Value, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(json!({})),
        Err(e) => Err(e.into()),
    }
}

async fn txt2img(
    State(state): State<HttpState>,
    caller: Caller,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        generate::generate(&state, &caller, Kind::Txt2Img, body(request)?).await?,
    ))
}

async fn img2img(
    State(state): State<HttpState>,
    caller: Caller,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        generate::generate(&state, &caller, Kind::Img2Img, body(request)?).await?,
    ))
}

async fn samplers(_caller: Caller) -> Json<Value> {
    Json(catalog::samplers())
}

async fn schedulers(_caller: Caller) -> Json<Value> {
    Json(catalog::schedulers())
}

async fn sd_models(
    State(state): State<HttpState>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(catalog::sd_models(&state).await?))
}

async fn get_options(
    State(state): State<HttpState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(catalog::get_options(&state, &caller).await?))
}

async fn set_options(
    State(state): State<HttpState>,
    caller: Caller,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        catalog::set_options(&state, &caller, body(request)?, "body").await?,
    ))
}

async fn progress_route(
    State(state): State<HttpState>,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let skip = query
        .get("skip_current_image")
        .is_some_and(|v| progress::truthy(v));
    Ok(Json(progress::progress(&state, &caller, skip).await?))
}

async fn interrupt(
    State(state): State<HttpState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(progress::interrupt(&state, &caller).await?))
}

async fn png_info(
    _caller: Caller,
    request: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(pnginfo::png_info(&body(request)?, "body")?))
}

/// `GET /sdapi/v1/scripts`: A1111's script lists; this service runs none. (`webuiapi` asks for
/// it on `set_auth` to see which extensions are installed.)
fn scripts_json() -> Value {
    json!({"txt2img": [], "img2img": []})
}

async fn scripts(_caller: Caller) -> Json<Value> {
    Json(scripts_json())
}
