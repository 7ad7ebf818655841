//! The `runpod` callback: RunPod serverless' job-status object as its A1111 worker fills it
//! (seeds 000/001): `delayTime`, `executionTime`, `id`, `input`, `output` (`images` as base64 PNG,
//! `info` as a JSON *string*, `parameters` as the A1111 request with defaults), `status`, `webhook`.
//! A failed, cancelled or timed-out job carries `error` instead of `output`, as RunPod's status
//! object does. An A1111 API call answered without a generation (`input.api` naming e.g.
//! `GET /sdapi/v1/sd-models`, marked by `"api_answer": true` in the vendor context) has that
//! endpoint's answer as its `output`, as RunPod's A1111 worker returns it.

use serde_json::{Value, json};

use super::base64_images;
use super::params::{Resolved, number};
use crate::domain::{EventKind, JobOutcome, JobRecord, JobStatus, PublishedImage, StoredImage};

/// The vendor-context key marking a job answered at once from an A1111 API call: its stored
/// info JSON is the answer, rendered as `output`.
pub const API_ANSWER: &str = "api_answer";

/// Renders `outcome` as a `runpod` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let job = &outcome.record.job;
    let resolved = Resolved::new(&job.params);
    let input = job.vendor_context.get("input").cloned().unwrap_or_else(|| {
        json!({
            "api": {"method": "POST", "endpoint": resolved.endpoint()},
            "payload": resolved.a1111_payload(),
        })
    });
    let mut body = json!({
        "delayTime": outcome.queue_ms,
        "executionTime": outcome.execution_ms,
        "id": job.id,
        "input": input,
        "status": status(outcome),
        "webhook": job.webhook.url,
    });
    match outcome.event {
        EventKind::Completed if is_api_answer(&job.vendor_context) => {
            // Stored by `JobService::answer` from a JSON value, so it parses back; anything
            // else is passed on as the string it is rather than dropped.
            body["output"] = serde_json::from_str(outcome.info_json)
                .unwrap_or_else(|_| json!(outcome.info_json));
        }
        EventKind::Completed => {
            body["output"] = json!({
                "images": base64_images(outcome),
                "info": outcome.info_json,
                "parameters": parameters(&resolved),
            });
        }
        EventKind::Failed | EventKind::Canceled => {
            body["error"] = json!(
                outcome
                    .record
                    .error
                    .as_deref()
                    .unwrap_or(match outcome.event {
                        EventKind::Canceled => "job cancelled",
                        _ => "job failed",
                    })
            );
        }
    }
    body
}

/// The RunPod status object of a finished job whatever its callback format (a job submitted
/// through another API, read through RunPod's `/status`); None while it has not finished.
/// RunPod's object carries its images inline, so no media links are made.
pub fn finished_object(record: &JobRecord, images: &[StoredImage]) -> Option<Value> {
    let event = match record.status {
        JobStatus::Completed => EventKind::Completed,
        JobStatus::Failed | JobStatus::TimedOut => EventKind::Failed,
        JobStatus::Canceled => EventKind::Canceled,
        JobStatus::Queued | JobStatus::Running => return None,
    };
    let finished_at = record.finished_at_ms.unwrap_or(record.job.created_at_ms);
    let outcome = JobOutcome {
        record,
        event,
        images: images
            .iter()
            .map(|image| PublishedImage {
                image,
                url: String::new(),
            })
            .collect(),
        info_json: &record.info_json,
        queue_ms: record.queue_ms(finished_at),
        execution_ms: record.execution_ms(finished_at),
        timestamp_ms: finished_at,
    };
    Some(render(&outcome))
}

/// Whether a job's vendor context marks it as an answered A1111 API call.
pub fn is_api_answer(vendor_context: &Value) -> bool {
    vendor_context
        .get(API_ANSWER)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// RunPod's name for a job status: `IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`, `FAILED`,
/// `CANCELLED`, `TIMED_OUT`.
pub fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "IN_QUEUE",
        JobStatus::Running => "IN_PROGRESS",
        JobStatus::Completed => "COMPLETED",
        JobStatus::Failed => "FAILED",
        JobStatus::Canceled => "CANCELLED",
        JobStatus::TimedOut => "TIMED_OUT",
    }
}

/// The status a callback reports: the job's own when it has ended (a timeout is `TIMED_OUT`
/// though its event is `failed`), else the one the event implies.
fn status(outcome: &JobOutcome<'_>) -> &'static str {
    match outcome.record.status {
        status if status.is_final() => status_name(status),
        _ => match outcome.event {
            EventKind::Completed => "COMPLETED",
            EventKind::Failed => "FAILED",
            EventKind::Canceled => "CANCELLED",
        },
    }
}

/// A1111's echo of the processed request (`StableDiffusionTxt2ImgProcessingAPI` /
/// `...Img2Img...`): every field with its value or default. Init images are not echoed, as A1111
/// does unless `include_init_images` is set.
fn parameters(r: &Resolved<'_>) -> Value {
    let mut p = json!({
        "alwayson_scripts": {},
        "batch_size": r.batch_size,
        "cfg_scale": number(r.cfg_scale),
        "denoising_strength": number(r.denoising_strength),
        "do_not_save_grid": false,
        "do_not_save_samples": false,
        "enable_hr": false,
        "eta": null,
        "firstphase_height": 0,
        "firstphase_width": 0,
        "height": r.height,
        "hr_negative_prompt": "",
        "hr_prompt": "",
        "hr_resize_x": 0,
        "hr_resize_y": 0,
        "hr_sampler_name": null,
        "hr_scale": 2,
        "hr_second_pass_steps": 0,
        "hr_upscaler": null,
        "n_iter": r.n_iter,
        "negative_prompt": r.negative_prompt,
        "override_settings": override_settings(r),
        "override_settings_restore_afterwards": true,
        "prompt": r.prompt,
        "restore_faces": false,
        "s_churn": 0,
        "s_min_uncond": 0,
        "s_noise": 1,
        "s_tmax": null,
        "s_tmin": 0,
        "sampler_index": r.sampler_name,
        "sampler_name": r.sampler_name,
        "save_images": false,
        "script_args": [],
        "script_name": null,
        "seed": r.seed,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "send_images": true,
        "steps": r.steps,
        "styles": if r.styles.is_empty() { Value::Null } else { json!(r.styles) },
        "subseed": r.subseed,
        "subseed_strength": number(r.subseed_strength),
        "tiling": false,
        "width": r.width,
    });
    if r.img2img {
        for (key, value) in [
            ("init_images", Value::Null),
            ("include_init_images", json!(false)),
            ("mask", Value::Null),
            ("resize_mode", json!(0)),
            ("image_cfg_scale", Value::Null),
            ("inpainting_fill", json!(0)),
        ] {
            p[key] = value;
        }
    }
    p
}

/// The settings overrides the request carried: the model choice and CLIP skip, as A1111 callers
/// send them; `null` when neither was set.
fn override_settings(r: &Resolved<'_>) -> Value {
    let mut settings = serde_json::Map::new();
    if !r.model.is_empty() {
        settings.insert("sd_model_checkpoint".into(), json!(r.model));
    }
    if r.clip_skip != 1 {
        settings.insert("CLIP_stop_at_last_layers".into(), json!(r.clip_skip));
    }
    if settings.is_empty() {
        Value::Null
    } else {
        Value::Object(settings)
    }
}
