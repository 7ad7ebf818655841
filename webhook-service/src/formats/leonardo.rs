//! The `leonardo` callback (seed 004): `{type, object: "generation", timestamp (ms),
//! api_version: "v1", data: {object: <generation>}}`, where the generation carries Leonardo's
//! camelCase fields and `images[]` with `id`, `url`, `generationId`.
//!
//! Leonardo's sample also carries `data.object.apiKey` with the callback key in clear; that
//! object is left out, since a callback never echoes a secret. Fields about Leonardo's own
//! catalogue (`model`, `userId`, `apiKeyId`, ...) are null or absent: sdserve has no such records.
//! Failures use type `image_generation.failed` with status `FAILED`, cancellations
//! `image_generation.cancelled` with `CANCELLED` (Leonardo documents only the completed event).

use serde_json::{Value, json};

use super::params::{Resolved, number};
use super::iso8601;
use crate::domain::{EventKind, JobOutcome};

/// Renders `outcome` as a `leonardo` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let (kind, status) = match outcome.event {
        EventKind::Completed => ("image_generation.complete", "COMPLETE"),
        EventKind::Failed => ("image_generation.failed", "FAILED"),
        EventKind::Canceled => ("image_generation.cancelled", "CANCELLED"),
    };
    json!({
        "type": kind,
        "object": "generation",
        "timestamp": outcome.timestamp_ms,
        "api_version": "v1",
        "data": {"object": generation(outcome, status)},
    })
}

fn generation(outcome: &JobOutcome<'_>, status: &str) -> Value {
    let record = outcome.record;
    let job = &record.job;
    let r = Resolved::new(&job.params);
    let created = iso8601(job.created_at_ms);
    let updated = iso8601(record.finished_at_ms.unwrap_or(outcome.timestamp_ms));
    let seed = match outcome.images.first() {
        Some(first) => json!(first.image.seed.to_string()),
        None if r.seed >= 0 => json!(r.seed.to_string()),
        None => Value::Null,
    };
    let images: Vec<Value> = outcome
        .images
        .iter()
        .map(|published| {
            json!({
                "id": format!("{}-{}", job.id, published.image.index),
                "createdAt": updated,
                "updatedAt": updated,
                "url": published.url,
                "generationId": job.id,
                "nobgId": null,
                "nsfw": false,
                "likeCount": 0,
                "trendingScore": 0,
                "public": false,
            })
        })
        .collect();
    let mut object = json!({
        "id": job.id,
        "createdAt": created,
        "updatedAt": updated,
        "public": false,
        "flagged": false,
        "nsfw": false,
        "status": status,
        "coreModel": "SD",
        "guidanceScale": number(r.cfg_scale),
        "imageHeight": r.height,
        "imageWidth": r.width,
        "inferenceSteps": r.steps,
        "initGeneratedImageId": null,
        "initImageId": null,
        "initStrength": if r.img2img { number(r.denoising_strength) } else { Value::Null },
        "initType": null,
        "initUpscaledImageId": null,
        "modelId": if record.model.is_empty() { r.model } else { &record.model },
        "negativePrompt": r.negative_prompt,
        "prompt": r.prompt,
        "quantity": r.quantity(),
        "tiling": false,
        "imageAspectRatio": null,
        "negativeStylePrompt": "",
        "seed": seed,
        "scheduler": scheduler(r.sampler_name),
        "presetStyle": null,
        "promptMagic": false,
        "canvasInitImageId": null,
        "canvasMaskImageId": null,
        "canvasRequest": false,
        "api": true,
        "imageToImage": r.img2img,
        "controlnetsUsed": false,
        "photoReal": false,
        "images": images,
    });
    if let Some(error) = &record.error {
        object["error"] = json!(error);
    }
    object
}

/// Leonardo's scheduler enum for an A1111 sampler name; Leonardo names pass through unchanged.
pub fn scheduler(sampler_name: &str) -> String {
    let lower = sampler_name.to_ascii_lowercase();
    let mapped = match lower.trim() {
        "euler a" | "euler_a" => "EULER_ANCESTRAL_DISCRETE",
        "euler" => "EULER_DISCRETE",
        "ddim" => "DDIM",
        "plms" | "pndm" => "PNDM",
        "lms" | "lms karras" => "KLMS",
        s if s.starts_with("dpm++ 2m") || s.starts_with("dpm solver") => "DPM_SOLVER",
        _ => return sampler_name.to_ascii_uppercase().replace([' ', '+', '-'], "_"),
    };
    mapped.to_owned()
}

#[cfg(test)]
mod tests {
    use super::scheduler;

    #[test]
    fn a1111_samplers_map_to_leonardo_schedulers() {
        assert_eq!(scheduler("Euler a"), "EULER_ANCESTRAL_DISCRETE");
        assert_eq!(scheduler("Euler"), "EULER_DISCRETE");
        assert_eq!(scheduler("DPM++ 2M Karras"), "DPM_SOLVER");
        assert_eq!(scheduler("EULER_DISCRETE"), "EULER_DISCRETE");
    }
}
