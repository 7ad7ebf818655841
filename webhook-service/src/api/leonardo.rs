//! Leonardo.ai (seed 004): `POST /api/rest/v1/generations` with Leonardo's request body →
//! `{"sdGenerationJob": {"generationId", "apiCreditCost"}}`, and `GET
//! /api/rest/v1/generations/{id}` → `{"generations_by_pk": {...}}`.
//!
//! As on Leonardo, the callback is configured on the API key, not in the request: the key's
//! webhook URL and callback API key (`webhook-service keys create --webhook-url https://...
//! --webhook-api-key ...`) receive the `image_generation.complete` callback with
//! `authorization: Bearer <callback key>`. A key without a webhook still generates; its caller
//! polls the GET route.
//!
//! Leonardo's documented ranges are enforced (`num_images` 1–8, at most 4 above 768 pixels;
//! `width`/`height` 32–1536 and multiples of 8, within this service's 64–2048;
//! `guidance_scale` 1–20; `num_inference_steps` 10–60; `scheduler` and `presetStyle` from
//! Leonardo's enums), with Leonardo's defaults (4 images, 15 steps, `EULER_DISCRETE`); the
//! image size defaults to the inference server's 512×512 rather than Leonardo's 1024×768, which
//! suits SD 1.x/2.x. Leonardo's scheduler names are passed to the inference server, which runs
//! them as diffusers' classes, as Leonardo does (`LEONARDO` is the server's default sampler).
//! Other Leonardo fields (alchemy, photoReal, elements, ...) are ignored; requests that would
//! silently get something else are refused instead: `tiling: true`, and image-to-image from an
//! uploaded or generated image (`init_image_id`, `init_generation_image_id`), since this
//! service has no image uploads (use `/sdapi/v1/img2img`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use sdserve_proto::v1::GenerationParams;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{HttpState, idempotency_header};
use super::validate::Submission;
use crate::auth::Caller;
use crate::domain::Format;
use crate::formats::leonardo::{self as format, RequestContext};

/// The Leonardo routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/api/rest/v1/generations", post(create_generation))
        .route("/api/rest/v1/generations/{id}", get(get_generation))
}

/// Leonardo's `presetStyle` enum (`sd_generation_style`).
const PRESET_STYLES: [&str; 31] = [
    "ANIME",
    "BOKEH",
    "CINEMATIC",
    "CINEMATIC_CLOSEUP",
    "CREATIVE",
    "DYNAMIC",
    "ENVIRONMENT",
    "FASHION",
    "FILM",
    "FOOD",
    "GENERAL",
    "HDR",
    "ILLUSTRATION",
    "LEONARDO",
    "LONG_EXPOSURE",
    "MACRO",
    "MINIMALISTIC",
    "MONOCHROME",
    "MOODY",
    "NONE",
    "NEUTRAL",
    "PHOTOGRAPHY",
    "PORTRAIT",
    "RAYTRACED",
    "RENDER_3D",
    "RETRO",
    "SKETCH_BW",
    "SKETCH_COLOR",
    "STOCK_PHOTO",
    "VIBRANT",
    "UNPROCESSED",
];

/// Leonardo's default `num_images`.
const DEFAULT_NUM_IMAGES: u32 = 4;
/// Leonardo's default `num_inference_steps`.
const DEFAULT_STEPS: u32 = 15;

/// The fields of Leonardo's create-generation body that sdserve reads, spelled as Leonardo
/// documents them; every field may be null.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerationRequest {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    #[serde(rename = "modelId")]
    model_id: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    num_images: Option<u32>,
    guidance_scale: Option<f32>,
    num_inference_steps: Option<u32>,
    seed: Option<i64>,
    scheduler: Option<String>,
    #[serde(rename = "presetStyle")]
    preset_style: Option<String>,
    public: Option<bool>,
    tiling: Option<bool>,
    init_image_id: Option<String>,
    init_generation_image_id: Option<String>,
}

/// Our field names → Leonardo's, for errors found after translation.
const FIELD_NAMES: [(&str, &str); 9] = [
    ("params.prompt", "prompt"),
    ("params.negative_prompt", "negative_prompt"),
    ("params.seed", "seed"),
    ("params.width", "width"),
    ("params.height", "height"),
    ("params.steps", "num_inference_steps"),
    ("params.cfg_scale", "guidance_scale"),
    ("params.batch_size", "num_images"),
    ("webhook.url", "webhookCallbackUrl"),
];

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    min: T,
    max: T,
) -> Result<(), ApiError> {
    match value {
        Some(v) if v < min || v > max => Err(ApiError::field(
            field,
            format!("must be between {min} and {max}, got {v}"),
        )),
        _ => Ok(()),
    }
}

/// Checks the request against Leonardo's documented rules.
fn check(body: &GenerationRequest) -> Result<(), ApiError> {
    if body.prompt.as_deref().is_none_or(|p| p.trim().is_empty()) {
        return Err(ApiError::field("prompt", "is required"));
    }
    for (field, value) in [("width", body.width), ("height", body.height)] {
        range(field, value, 32, 1536)?;
        if value.is_some_and(|v| v % 8 != 0) {
            return Err(ApiError::field(field, "must be a multiple of 8"));
        }
    }
    range("num_images", body.num_images, 1, 8)?;
    let large = body.width.is_some_and(|w| w > 768) || body.height.is_some_and(|h| h > 768);
    if large && body.num_images.unwrap_or(DEFAULT_NUM_IMAGES) > 4 {
        return Err(ApiError::field(
            "num_images",
            "must be between 1 and 4 when width or height is over 768",
        ));
    }
    range("guidance_scale", body.guidance_scale, 1.0, 20.0)?;
    range("num_inference_steps", body.num_inference_steps, 10, 60)?;
    if let Some(name) = &body.scheduler
        && !format::SCHEDULERS.contains(&name.as_str())
    {
        return Err(ApiError::field(
            "scheduler",
            format!(
                "unknown scheduler {name:?}; one of {}",
                format::SCHEDULERS.join(", ")
            ),
        ));
    }
    if let Some(style) = &body.preset_style
        && !PRESET_STYLES.contains(&style.as_str())
    {
        return Err(ApiError::field(
            "presetStyle",
            format!(
                "unknown style {style:?}; one of {}",
                PRESET_STYLES.join(", ")
            ),
        ));
    }
    if body.tiling == Some(true) {
        return Err(ApiError::field(
            "tiling",
            "tiling images are not supported by this service; leave it false",
        ));
    }
    for (field, value) in [
        ("init_image_id", &body.init_image_id),
        ("init_generation_image_id", &body.init_generation_image_id),
    ] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::field(
                field,
                "image-to-image from an uploaded or generated image is not supported here; send the image to /sdapi/v1/img2img",
            ));
        }
    }
    Ok(())
}

/// The served model `model_id` names (by name or by its Leonardo `modelId`), with its
/// Leonardo `sdVersion`.
async fn resolve_model(
    state: &HttpState,
    model_id: &str,
) -> Result<(String, Option<&'static str>), ApiError> {
    let models = state.jobs.models().await?;
    let wanted = model_id.trim().to_ascii_lowercase();
    if let Some(model) = models
        .iter()
        .find(|m| m.name == model_id || format::model_id(&m.name) == wanted)
    {
        return Ok((model.name.clone(), format::sd_version(&model.variant)));
    }
    let served: Vec<String> = models
        .iter()
        .map(|m| format!("{} ({})", m.name, format::model_id(&m.name)))
        .collect();
    let served = if served.is_empty() {
        "none".to_owned()
    } else {
        served.join(", ")
    };
    Err(ApiError::field(
        "modelId",
        format!("no model {model_id:?} is served here; served models: {served}"),
    ))
}

/// Leonardo: create a generation; its result goes to the key's webhook, if it has one.
async fn create_generation(
    State(state): State<HttpState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<GenerationRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    check(&body)?;
    let model = match body.model_id.as_deref().filter(|m| !m.is_empty()) {
        Some(id) => Some(resolve_model(&state, id).await?),
        None => None,
    };
    let scheduler = body
        .scheduler
        .clone()
        .unwrap_or_else(|| format::DEFAULT_SCHEDULER.to_owned());
    let params = GenerationParams {
        prompt: body.prompt.unwrap_or_default(),
        negative_prompt: body.negative_prompt.unwrap_or_default(),
        seed: body.seed,
        batch_size: Some(body.num_images.unwrap_or(DEFAULT_NUM_IMAGES)),
        steps: Some(body.num_inference_steps.unwrap_or(DEFAULT_STEPS)),
        cfg_scale: body.guidance_scale,
        width: body.width,
        height: body.height,
        // The inference server runs Leonardo's names as diffusers' classes; LEONARDO, a
        // scheduler of Leonardo's own, becomes the server's default sampler.
        sampler_name: if scheduler == "LEONARDO" {
            String::new()
        } else {
            scheduler.clone()
        },
        model: model
            .as_ref()
            .map(|(name, _)| name.clone())
            .unwrap_or_default(),
        ..GenerationParams::default()
    };
    let webhook = caller.webhook.clone();
    let context = RequestContext {
        scheduler,
        preset_style: body.preset_style,
        public: body.public.unwrap_or(false),
        model_version: model.and_then(|(name, version)| version.map(|v| (name, v.to_owned()))),
        key_name: caller.name.clone(),
        webhook_url: webhook.as_ref().map(|w| w.url.clone()),
    };
    let submission = Submission {
        params,
        url: webhook.as_ref().map(|w| w.url.clone()).unwrap_or_default(),
        secret: webhook
            .as_ref()
            .and_then(|w| w.secret.as_ref())
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
        format: Format::Leonardo.to_string(),
        idempotency_key: idempotency_header(&headers),
        vendor_context: format::context(&context),
        webhook_optional: true,
        ..Submission::default()
    };
    let inserted = state.jobs.accept(&caller, submission).await.map_err(|e| {
        FIELD_NAMES
            .iter()
            .fold(ApiError::from(e), |error, (ours, theirs)| {
                error.rename_field(ours, theirs)
            })
    })?;
    Ok(Json(
        json!({"sdGenerationJob": {"generationId": inserted.id, "apiCreditCost": 0}}),
    ))
}

/// Leonardo: one generation of the caller's, pending or finished.
async fn get_generation(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.jobs.get(&caller, &id).await?;
    if record.job.webhook.format != Format::Leonardo {
        // Jobs created through another API are not Leonardo generations.
        return Err(ApiError::not_found(format!("no generation with id {id:?}")));
    }
    let generation = match state.jobs.outcome_json(&record).await? {
        // A finished job: the generation exactly as its callback carries it.
        Some(mut callback) => callback["data"]["object"].take(),
        None => format::generation(
            &record,
            &[],
            format::status(record.status),
            state.jobs.now_ms(),
        ),
    };
    Ok(Json(
        json!({"generations_by_pk": generation_by_pk(generation)}),
    ))
}

/// The `generations_by_pk` object of `GET /generations/{id}` made from a [`format::generation`]:
/// the images as `generated_images` with the fields Leonardo's GET adds (motion, variations:
/// none here), `seed` as the number Leonardo's GET answers with, and no `apiKey`.
fn generation_by_pk(mut generation: Value) -> Value {
    let Some(object) = generation.as_object_mut() else {
        return generation;
    };
    object.remove("apiKey");
    if let Some(seed) = object
        .get("seed")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
    {
        object.insert("seed".into(), json!(seed));
    }
    let images = match object.remove("images") {
        Some(Value::Array(images)) => images,
        _ => Vec::new(),
    };
    let generated: Vec<Value> = images
        .into_iter()
        .map(|mut image| {
            let extra = json!({
                "motionMP4URL": null,
                "motion": null,
                "motionModel": null,
                "motionStrength": null,
                "imageToVideo": null,
                "fantasyAvatar": null,
                "generated_image_variation_generics": [],
            });
            if let (Some(image), Value::Object(extra)) = (image.as_object_mut(), extra) {
                image.extend(extra);
            }
            image
        })
        .collect();
    object.insert("generated_images".into(), Value::Array(generated));
    object.insert("generation_elements".into(), json!([]));
    object.insert("ultra".into(), Value::Null);
    object.insert("fantasyAvatar".into(), Value::Null);
    Value::Object(std::mem::take(object))
}
