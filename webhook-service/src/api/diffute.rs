//! Diffute (seed 002): `PUT /{organization_id}/{project_id}/media/inference` with the key in
//! `x-api-key` and the seed's body: several named `prompts`, a `webhook` URL and its bearer
//! `secret`, `pretrained_model_name` and the request's `name`.
//!
//! All prompts form one job: the first prompt is the job's first part, the others follow it in
//! order, and the images are numbered on across them. A prompt's `num_images` becomes its
//! `batch_size`; above 16 (the largest batch) the prompt runs as several parts of at most 16, so
//! exactly `num_images` images come back. `style` describes the look ("painting in the style of
//! Henri Rousseau") and is appended to the prompt as `"{prompt}, {style}"`; `negative` is the
//! negative prompt. The callback is one manifest keyed by every prompt name (see
//! [`crate::formats::diffute`]), sent with the secret as `Authentication: Bearer` (the header
//! the seed names) and `Authorization: Bearer`.
//!
//! Choices where the seed is silent:
//! - `pretrained_model_name` selects a served model when it names one (its full name or its
//!   last path segment, ignoring case); otherwise the default model is used and the answer
//!   says so in `warnings`, so the seed's request (naming SDXL, which this service does not
//!   serve) still runs.
//! - An empty `webhook` (as the seed sends) means no callback; the manifest is then fetched with
//!   `GET /{organization_id}/{project_id}/media/inference/{job_id}`: 200 with the manifest once
//!   the job has finished, 202 with `{job_id, name, status, prompts, progress}` before.
//! - The PUT answers 202 `{"job_id", "name", "status": "queued", "prompts": [names], "model",
//!   "warnings"}`; `model` is the model that will run (null when the servers could not be
//!   asked).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use sdserve_proto::v1::GenerationParams;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{HttpState, idempotency_header};
use super::validate::{self, Submission};
use crate::auth::Caller;
use crate::domain::Format;
use crate::formats::diffute::{RESERVED_KEYS, prompt_counts};
use crate::jobs::JobService;

/// Most prompts in one request.
pub const MAX_PROMPTS: usize = 32;
/// Most images one prompt may ask for.
pub const MAX_IMAGES_PER_PROMPT: u32 = 100;
/// Longest prompt name or request name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Largest batch one generation makes (the `batch_size` rule).
const MAX_BATCH: u32 = 16;

/// The Diffute routes.
pub fn router() -> Router<HttpState> {
    Router::new()
        .route(
            "/{organization_id}/{project_id}/media/inference",
            put(inference),
        )
        .route(
            "/{organization_id}/{project_id}/media/inference/{job_id}",
            get(manifest),
        )
}

#[derive(Debug, Deserialize)]
struct InferenceBody {
    #[serde(default)]
    prompts: Vec<PromptBody>,
    #[serde(default)]
    webhook: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    pretrained_model_name: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct PromptBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    negative: String,
    #[serde(default = "one")]
    num_images: u32,
    height: Option<u32>,
    width: Option<u32>,
    #[serde(default)]
    style: String,
}

fn one() -> u32 {
    1
}

/// The generations of a request: `parts[k]` belongs to prompt `part_prompt[k]`.
struct Plan {
    parts: Vec<GenerationParams>,
    part_prompt: Vec<usize>,
}

/// Diffute's inference request: see the module documentation.
async fn inference(
    State(state): State<HttpState>,
    caller: Caller,
    Path((organization_id, project_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<InferenceBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    if body.name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::field(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    let (model, used, warnings) = choose_model(&state.jobs, &body.pretrained_model_name).await;
    let Plan {
        mut parts,
        part_prompt,
    } = plan(&body.prompts, &model)?;
    let prompts: Vec<Value> = body
        .prompts
        .iter()
        .map(|p| json!({"name": p.name, "count": p.num_images}))
        .collect();
    let mut context = json!({
        "organization_id": organization_id,
        "project_id": project_id,
        "prompts": prompts,
        "model": used,
    });
    if !body.name.is_empty() {
        context["name"] = json!(body.name);
    }
    let first = parts.remove(0);
    let submission = Submission {
        params: first,
        extra_parts: parts,
        url: body.webhook,
        secret: body.secret,
        format: Format::Diffute.as_str().into(),
        idempotency_key: idempotency_header(&headers),
        vendor_context: context,
        webhook_optional: true,
        ..Submission::default()
    };
    let inserted = state.jobs.accept(&caller, submission).await.map_err(|e| {
        let mut error = ApiError::from(e)
            .rename_field("webhook.url", "webhook")
            .rename_field("webhook.secret", "secret");
        // Parts were checked prompt by prompt above; name any later refusal the same way.
        error = error.rename_field("params", "prompts[0]");
        for (k, prompt) in part_prompt.iter().enumerate().skip(1) {
            error = error.rename_field(
                &format!("extra_parts[{}]", k - 1),
                &format!("prompts[{prompt}]"),
            );
        }
        error
    })?;
    let name = if body.name.is_empty() {
        inserted.id.clone()
    } else {
        body.name
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": inserted.id,
            "name": name,
            "status": "queued",
            "prompts": body.prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            "model": used,
            "warnings": warnings,
        })),
    ))
}

/// `GET .../media/inference/{job_id}`: the manifest once the job has finished, its status before.
async fn manifest(
    State(state): State<HttpState>,
    caller: Caller,
    Path((organization_id, project_id, job_id)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let record = state.jobs.get(&caller, &job_id).await?;
    let context = &record.job.vendor_context;
    let here = record.job.webhook.format == Format::Diffute
        && context.get("organization_id").and_then(Value::as_str) == Some(organization_id.as_str())
        && context.get("project_id").and_then(Value::as_str) == Some(project_id.as_str());
    if !here {
        return Err(ApiError::not_found(format!(
            "no inference job {job_id:?} in {organization_id}/{project_id}"
        )));
    }
    if let Some(manifest) = state.jobs.outcome_json(&record).await? {
        return Ok((StatusCode::OK, Json(manifest)));
    }
    let names: Vec<String> = prompt_counts(context)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let name = context
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&record.job.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": record.job.id,
            "name": name,
            "status": record.status.as_str(),
            "prompts": names,
            "progress": {"step": record.progress_step, "total": record.progress_total},
        })),
    ))
}

/// The model a request runs on: `(GenerationParams.model, the model's name if known, warnings)`.
async fn choose_model(jobs: &JobService, requested: &str) -> (String, Option<String>, Vec<String>) {
    let served = match jobs.models().await {
        Ok(served) => served,
        Err(e) if requested.is_empty() => {
            tracing::warn!(error = %e, "cannot list the served models");
            return (String::new(), None, Vec::new());
        }
        Err(e) => {
            let warning = format!(
                "pretrained_model_name {requested:?} could not be checked against the served models ({e}); the default model is used"
            );
            return (String::new(), None, vec![warning]);
        }
    };
    let default = served.first().map(|m| m.name.clone());
    if requested.is_empty() {
        return (String::new(), default, Vec::new());
    }
    let last_segment = requested.rsplit('/').next().unwrap_or(requested);
    if let Some(found) = served.iter().find(|m| {
        m.name.eq_ignore_ascii_case(requested) || m.name.eq_ignore_ascii_case(last_segment)
    }) {
        return (found.name.clone(), Some(found.name.clone()), Vec::new());
    }
    let names: Vec<&str> = served.iter().map(|m| m.name.as_str()).collect();
    let warning = format!(
        "pretrained_model_name {requested:?} is not served here; the default model {} is used instead (served: {})",
        default.as_deref().map_or_else(
            || "of the inference server".to_owned(),
            |d| format!("{d:?}")
        ),
        names.join(", "),
    );
    (String::new(), default, vec![warning])
}

/// Checks the prompts and turns them into generations, naming Diffute's fields in errors.
fn plan(prompts: &[PromptBody], model: &str) -> Result<Plan, ApiError> {
    if prompts.is_empty() {
        return Err(ApiError::field(
            "prompts",
            "is required: a list of at least one prompt",
        ));
    }
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::field(
            "prompts",
            format!(
                "must hold at most {MAX_PROMPTS} prompts, got {}",
                prompts.len()
            ),
        ));
    }
    let mut plan = Plan {
        parts: Vec::new(),
        part_prompt: Vec::new(),
    };
    for (i, p) in prompts.iter().enumerate() {
        let field = |leaf: &str| format!("prompts[{i}].{leaf}");
        if p.name.is_empty() {
            return Err(ApiError::field(
                field("name"),
                "is required: the manifest lists the prompt's images under it",
            ));
        }
        if p.name.chars().count() > MAX_NAME_LEN {
            return Err(ApiError::field(
                field("name"),
                format!("must be at most {MAX_NAME_LEN} characters"),
            ));
        }
        if RESERVED_KEYS.contains(&p.name.as_str()) {
            return Err(ApiError::field(
                field("name"),
                format!("must not be one of {RESERVED_KEYS:?}, the manifest's own keys"),
            ));
        }
        if let Some(j) = prompts[..i].iter().position(|q| q.name == p.name) {
            return Err(ApiError::field(
                field("name"),
                format!("must be unique; prompts[{j}] is also named {:?}", p.name),
            ));
        }
        if p.prompt.trim().is_empty() {
            return Err(ApiError::field(field("prompt"), "is required"));
        }
        if !(1..=MAX_IMAGES_PER_PROMPT).contains(&p.num_images) {
            return Err(ApiError::field(
                field("num_images"),
                format!(
                    "must be between 1 and {MAX_IMAGES_PER_PROMPT}, got {}",
                    p.num_images
                ),
            ));
        }
        let style = p.style.trim();
        let base = GenerationParams {
            prompt: if style.is_empty() {
                p.prompt.clone()
            } else {
                format!("{}, {style}", p.prompt)
            },
            negative_prompt: p.negative.clone(),
            width: p.width,
            height: p.height,
            batch_size: Some(p.num_images.min(MAX_BATCH)),
            model: model.to_owned(),
            ..GenerationParams::default()
        };
        validate::params(&base)
            .map_err(|e| ApiError::field(field(diffute_leaf(&e.field)), e.rule))?;
        let mut left = p.num_images;
        while left > 0 {
            let batch = left.min(MAX_BATCH);
            plan.parts.push(GenerationParams {
                batch_size: Some(batch),
                ..base.clone()
            });
            plan.part_prompt.push(i);
            left -= batch;
        }
    }
    Ok(plan)
}

/// The Diffute name of a generation parameter named `params.x` by the validator.
fn diffute_leaf(field: &str) -> &str {
    match field.strip_prefix("params.").unwrap_or(field) {
        "batch_size" => "num_images",
        "negative_prompt" => "negative",
        leaf => leaf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(name: &str, num_images: u32) -> PromptBody {
        PromptBody {
            name: name.into(),
            prompt: "a jungle".into(),
            negative: "blurry".into(),
            num_images,
            height: Some(1024),
            width: Some(768),
            style: "painting in the style of Henri Rousseau".into(),
        }
    }

    #[test]
    fn prompts_become_parts_in_order_with_the_style_appended() {
        let plan = plan(&[prompt("a", 3), prompt("b", 20)], "tiny-sd1")
            .ok()
            .unwrap();
        let batches: Vec<_> = plan.parts.iter().map(|p| p.batch_size).collect();
        assert_eq!(batches, [Some(3), Some(16), Some(4)]);
        assert_eq!(plan.part_prompt, [0, 1, 1]);
        assert_eq!(
            plan.parts[0].prompt,
            "a jungle, painting in the style of Henri Rousseau"
        );
        assert_eq!(plan.parts[0].negative_prompt, "blurry");
        assert!(
            plan.parts
                .iter()
                .all(|p| p.model == "tiny-sd1" && p.width == Some(768) && p.height == Some(1024))
        );
    }

    #[test]
    fn errors_name_the_diffute_field() {
        let field = |prompts: &[PromptBody]| plan(prompts, "").err().unwrap().message().to_owned();
        let mut bad = prompt("b", 3);
        bad.width = Some(770);
        assert!(
            field(&[prompt("a", 1), bad]).starts_with("prompts[1].width: must be a multiple of 8")
        );
        assert!(
            field(&[prompt("a", 0)])
                .starts_with("prompts[0].num_images: must be between 1 and 100")
        );
        assert!(
            field(&[prompt("a", 1), prompt("a", 1)]).starts_with("prompts[1].name: must be unique")
        );
        assert!(field(&[prompt("job_id", 1)]).starts_with("prompts[0].name: must not be one of"));
        assert!(field(&[]).starts_with("prompts: is required"));
        assert_eq!(diffute_leaf("params.negative_prompt"), "negative");
    }
}
