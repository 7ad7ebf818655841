//! `txt2img` and `img2img`: A1111's payload with A1111's defaults, run as a job without a
//! webhook and answered synchronously with `{images, parameters, info}`.
//!
//! [`prepare`] is shared with calls made through RunPod's `input.api`, so a payload means the
//! same there: A1111's defaults (50 steps, sampler `Euler`), the model chosen by
//! `override_settings.sd_model_checkpoint` or the caller's `options`, and the same refusals of
//! what this service cannot do (hires fix, inpainting masks, scripts).

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::catalog;
use super::payload::A1111Payload;
use crate::api::error::ApiError;
use crate::api::state::HttpState;
use crate::api::validate::Submission;
use crate::auth::Caller;
use crate::domain::JobStatus;

/// A1111's default sampling steps (`StableDiffusionProcessing.steps`).
pub const DEFAULT_STEPS: u32 = 50;
/// A1111's default sampler for API calls (`sampler_index`'s default).
pub const DEFAULT_SAMPLER: &str = "Euler";

/// A1111's default img2img denoising strength.
pub const DEFAULT_DENOISING: f32 = 0.75;

/// The two generation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/sdapi/v1/txt2img`.
    Txt2Img,
    /// `/sdapi/v1/img2img`.
    Img2Img,
}

/// A payload ready to submit, and A1111's echo of the request.
#[derive(Debug)]
pub struct Prepared {
    /// The payload with A1111's defaults applied and the model resolved to a served name.
    pub payload: A1111Payload,
    /// The request with A1111's defaults, as A1111 answers it in `parameters`.
    pub parameters: Value,
}

/// The request model's fields with their defaults (A1111 1.x: the 1.5 fields of seed 000's
/// `parameters`, with the values shown there, plus those later versions added).
fn defaults(kind: Kind) -> Map<String, Value> {
    let mut d = json!({
        "alwayson_scripts": {}, "batch_size": 1, "cfg_scale": 7, "comments": null,
        "denoising_strength": 0, "disable_extra_networks": false, "do_not_save_grid": false,
        "do_not_save_samples": false, "eta": null, "force_task_id": null, "height": 512, "infotext": null,
        "n_iter": 1, "negative_prompt": "", "override_settings": null,
        "override_settings_restore_afterwards": true, "prompt": "", "refiner_checkpoint": null,
        "refiner_switch_at": null, "restore_faces": false, "s_churn": 0, "s_min_uncond": 0, "s_noise": 1,
        "s_tmax": null, "s_tmin": 0, "sampler_index": DEFAULT_SAMPLER, "sampler_name": null,
        "save_images": false, "scheduler": null, "script_args": [], "script_name": null, "seed": -1,
        "seed_resize_from_h": -1, "seed_resize_from_w": -1, "send_images": true, "steps": DEFAULT_STEPS,
        "styles": null, "subseed": -1, "subseed_strength": 0, "tiling": false, "width": 512,
    });
    let extra = match kind {
        Kind::Txt2Img => json!({
            "enable_hr": false, "firstpass_image": null, "firstphase_height": 0, "firstphase_width": 0,
            "hr_checkpoint_name": null, "hr_negative_prompt": "", "hr_prompt": "", "hr_resize_x": 0,
            "hr_resize_y": 0, "hr_sampler_name": null, "hr_scale": 2, "hr_scheduler": null,
            "hr_second_pass_steps": 0, "hr_upscaler": null,
        }),
        Kind::Img2Img => json!({
            "denoising_strength": 0.75, "image_cfg_scale": null, "include_init_images": false,
            "init_images": null, "initial_noise_multiplier": null, "inpaint_full_res": true,
            "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": 0,
            "latent_mask": null, "mask": null, "mask_blur": null, "mask_blur_x": 4, "mask_blur_y": 4,
            "mask_round": true, "resize_mode": 0,
        }),
    };
    if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), extra) {
        d.extend(extra);
    }
    match d {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A1111's `parameters`: every field of the request model, the request's value where it sent
/// one (fields A1111 does not have are dropped, as its model drops them); img2img's images and
/// mask only with `include_init_images`.
pub fn parameters(kind: Kind, request: &Map<String, Value>) -> Value {
    let mut p = defaults(kind);
    for (key, value) in request {
        if let Some(slot) = p.get_mut(key) {
            *slot = value.clone();
        }
    }
    if kind == Kind::Img2Img && p.get("include_init_images") != Some(&Value::Bool(true)) {
        p.insert("init_images".into(), Value::Null);
        p.insert("mask".into(), Value::Null);
    }
    Value::Object(p)
}

/// Refuses what A1111 would do and this service cannot, rather than ignoring it silently.
fn refuse_unsupported(kind: Kind, body: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    let set = |key: &str| match body.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let rules: &[(&str, &str)] = match kind {
        Kind::Txt2Img => &[(
            "enable_hr",
            "hires fix is not supported by this service; send false or leave it out",
        )],
        Kind::Img2Img => &[(
            "mask",
            "inpainting masks are not supported by this service; leave it out",
        )],
    };
    let common = [
        (
            "script_name",
            "scripts are not supported by this service; send null or leave it out",
        ),
        (
            "alwayson_scripts",
            "extensions' scripts are not supported by this service; send {} or leave it out",
        ),
    ];
    for (key, rule) in rules.iter().chain(common.iter()) {
        if set(key) {
            return Err(ApiError::field(format!("{field}.{key}"), *rule));
        }
    }
    Ok(())
}

/// Reads an A1111 `kind` request for `caller`: checks it, applies A1111's defaults and resolves
/// the model (`override_settings.sd_model_checkpoint`, else the caller's `options` choice) to a
/// served name. `field` names the body in errors (`body`, `input.payload`).
pub async fn prepare(
    state: &HttpState,
    caller: &Caller,
    kind: Kind,
    body: Value,
    field: &str,
) -> Result<Prepared, ApiError> {
    let Value::Object(request) = body else {
        return Err(ApiError::field(
            field,
            "must be a JSON object of A1111 request fields",
        ));
    };
    refuse_unsupported(kind, &request, field)?;
    let parameters = parameters(kind, &request);
    let mut payload: A1111Payload = serde_json::from_value(Value::Object(request))
        .map_err(|e| ApiError::bad_body(format!("{field}: {e}")))?;
    payload.steps.get_or_insert(DEFAULT_STEPS);
    let sampler = payload
        .sampler_name
        .take()
        .or(payload.sampler_index.take())
        .filter(|s| !s.is_empty());
    payload.sampler_name =
        Some(catalog::canonical_sampler(sampler.as_deref().unwrap_or(DEFAULT_SAMPLER)).to_owned());
    match kind {
        Kind::Txt2Img => {
            // A1111's txt2img has no init images, and uses denoising only for hires fix.
            payload.init_images.clear();
            payload.denoising_strength = None;
        }
        Kind::Img2Img if payload.init_images.is_empty() => {
            return Err(ApiError::field(
                format!("{field}.init_images"),
                "img2img needs one image (base64 or a data URL)",
            ));
        }
        Kind::Img2Img => {
            payload.denoising_strength.get_or_insert(DEFAULT_DENOISING);
        }
    }
    let overrides = payload.override_settings.get_or_insert_with(Map::new);
    match overrides.get("sd_model_checkpoint") {
        Some(Value::String(asked)) if !asked.is_empty() => {
            let models = state.jobs.models().await?;
            let model = catalog::find_model(&models, asked).ok_or_else(|| {
                ApiError::field(
                    format!("{field}.override_settings.sd_model_checkpoint"),
                    format!(
                        "no model {asked:?} is served ({})",
                        catalog::served(&models)
                    ),
                )
            })?;
            overrides.insert("sd_model_checkpoint".into(), json!(model.name));
        }
        None | Some(Value::Null) => {
            if let Some(name) = state.jobs.preferred_model(caller) {
                overrides.insert("sd_model_checkpoint".into(), json!(name));
            }
        }
        Some(Value::String(_)) => {}
        Some(_) => {
            return Err(ApiError::field(
                format!("{field}.override_settings.sd_model_checkpoint"),
                "must be a model title or name",
            ));
        }
    }
    Ok(Prepared {
        payload,
        parameters,
    })
}

/// Runs an A1111 `kind` request for `caller` and answers as A1111 does:
/// `{"images": [base64 PNG...], "parameters": {...}, "info": "<info JSON string>"}`.
///
/// The job has no webhook; the call waits for it up to the service's sync wait. A job still
/// running then is answered 504 naming it (it keeps running: its result stays readable at
/// `/v1/jobs/{id}`); a failed job is answered 422 when the inference server refused the request,
/// 500 otherwise, and an interrupted one 409, each with the reason.
pub async fn generate(
    state: &HttpState,
    caller: &Caller,
    kind: Kind,
    body: Value,
) -> Result<Value, ApiError> {
    const FIELD: &str = "body";
    let prepared = prepare(state, caller, kind, body, FIELD).await?;
    let rename = |e: ApiError| {
        e.rename_field("params.init_image", "body.init_images[0]")
            .rename_field("params", FIELD)
    };
    let params = prepared
        .payload
        .into_params(FIELD)
        .map_err(|e| rename(e.into()))?;
    let submission = Submission {
        params,
        format: "standard".into(),
        webhook_optional: true,
        ..Submission::default()
    };
    let id = state
        .jobs
        .accept(caller, submission)
        .await
        .map_err(|e| rename(e.into()))?
        .id;
    let record = state.jobs.wait(caller, &id, state.jobs.sync_wait()).await?;
    let reason = record.error.clone().unwrap_or_default();
    match record.status {
        JobStatus::Completed => {}
        JobStatus::Queued | JobStatus::Running => {
            let waited = state.jobs.sync_wait().as_secs();
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "job {id} did not finish within {waited} s; it keeps running: GET /v1/jobs/{id} for its result"
                ),
            ));
        }
        // The dispatcher words a request the inference server refused (an unknown sampler, a
        // model it does not serve) this way; that is the caller's to fix.
        JobStatus::Failed if reason.starts_with("inference server refused the job") => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("job {id} failed: {reason}"),
            ));
        }
        JobStatus::Failed | JobStatus::TimedOut => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("job {id} failed: {reason}"),
            ));
        }
        JobStatus::Canceled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("job {id} was interrupted: {reason}"),
            ));
        }
    }
    let images: Vec<String> = state
        .jobs
        .images(caller, &id)
        .await?
        .iter()
        .map(|image| base64::engine::general_purpose::STANDARD.encode(&image.png))
        .collect();
    let info = if record.info_json.is_empty() {
        "{}".to_owned()
    } else {
        record.info_json
    };
    Ok(json!({"images": images, "parameters": prepared.parameters, "info": info}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parameters_echo_the_request_over_a1111_defaults() {
        let seed_payload = object(json!({
            "batch_size": 1, "cfg_scale": 7, "height": 512, "negative_prompt": "", "prompt": "an astronaut riding a horse",
            "restore_faces": false, "sampler_index": "DPM++ SDE Karras", "sampler_name": "DPM++ SDE Karras",
            "seed": -1, "steps": 30, "width": 512, "not_an_a1111_field": 1,
        }));
        let p = parameters(Kind::Txt2Img, &seed_payload);
        // Every field of seed 000's `parameters`, with its value there.
        let seed_parameters = json!({
            "alwayson_scripts": {}, "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "do_not_save_grid": false,
            "do_not_save_samples": false, "enable_hr": false, "eta": null, "firstphase_height": 0, "firstphase_width": 0,
            "height": 512, "hr_negative_prompt": "", "hr_prompt": "", "hr_resize_x": 0, "hr_resize_y": 0,
            "hr_sampler_name": null, "hr_scale": 2, "hr_second_pass_steps": 0, "hr_upscaler": null, "n_iter": 1,
            "negative_prompt": "", "override_settings": null, "override_settings_restore_afterwards": true,
            "prompt": "an astronaut riding a horse", "restore_faces": false, "s_churn": 0, "s_min_uncond": 0, "s_noise": 1,
            "s_tmax": null, "s_tmin": 0, "sampler_index": "DPM++ SDE Karras", "sampler_name": "DPM++ SDE Karras",
            "save_images": false, "script_args": [], "script_name": null, "seed": -1, "seed_resize_from_h": -1,
            "seed_resize_from_w": -1, "send_images": true, "steps": 30, "styles": null, "subseed": -1,
            "subseed_strength": 0, "tiling": false, "width": 512,
        });
        for (key, value) in seed_parameters.as_object().unwrap() {
            assert_eq!(p.get(key), Some(value), "{key}");
        }
        assert!(p.get("not_an_a1111_field").is_none());
        let img = parameters(Kind::Img2Img, &object(json!({"init_images": ["AAAA"]})));
        assert_eq!(
            (
                img["init_images"].clone(),
                img["denoising_strength"].clone(),
                img["steps"].clone()
            ),
            (Value::Null, json!(0.75), json!(50))
        );
        assert!(img.get("enable_hr").is_none());
        let kept = parameters(
            Kind::Img2Img,
            &object(json!({"init_images": ["AAAA"], "include_init_images": true})),
        );
        assert_eq!(kept["init_images"], json!(["AAAA"]));
    }

    #[test]
    fn unsupported_features_are_refused_by_name() {
        let refused = |kind, body: Value| {
            refuse_unsupported(kind, &object(body), "body")
                .err()
                .map(|e| e.message().to_owned())
        };
        assert!(
            refused(Kind::Txt2Img, json!({"enable_hr": true}))
                .unwrap()
                .starts_with("body.enable_hr:")
        );
        assert!(
            refused(Kind::Img2Img, json!({"mask": "AAAA"}))
                .unwrap()
                .starts_with("body.mask:")
        );
        assert!(
            refused(
                Kind::Txt2Img,
                json!({"alwayson_scripts": {"ControlNet": {"args": []}}})
            )
            .is_some()
        );
        assert!(refused(Kind::Txt2Img, json!({"enable_hr": false, "alwayson_scripts": {}, "script_name": null, "mask": null})).is_none());
    }
}
