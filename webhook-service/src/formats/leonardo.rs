//! The `leonardo` callback (seed 004) and the generation object Leonardo's `GET
//! /generations/{id}` answers with, built by one function ([`generation`]) so the two agree.
//!
//! The callback is `{type, object: "generation", timestamp (ms), api_version: "v1", data:
//! {object: <generation>}}`; the generation carries every field of Leonardo's sample, with a
//! value where sdserve knows one and null (or Leonardo's "nothing" value: `false`, `0`, `""`)
//! where it has no such record (training data, moderation, billing). Choices:
//! - ids are UUIDs: the generation id is the job id (a UUIDv7); image ids, `userId`, `apiKeyId`
//!   and model ids are UUIDv8 made from a SHA-256 of what they name (job id and image index,
//!   owning key id, model name), so a redelivery and every GET show the same ids. `userId` and
//!   `apiKeyId` are null for jobs of a service running without keys.
//! - `apiKey` describes the key that created the job without its secrets: `key` and
//!   `webhookCallbackApiKey` are null, `webhookCallbackUrl` is the key's callback URL, and
//!   `lastUsed` is the time of this generation's request.
//! - `scheduler` is always one of Leonardo's enum: the name the request used, or the nearest
//!   member to the sampler that ran ([`scheduler`]).
//! - `status` is `PENDING`, `COMPLETE` or `FAILED` (Leonardo's enum); a cancelled or timed-out
//!   job is `FAILED`, with `image_generation.cancelled` / `image_generation.failed` as `type`
//!   (Leonardo documents only `image_generation.complete`) and the reason in `error`.
//! - nothing is billed: `tokenCost` 0, `apiDollarCost` "0".

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::iso8601;
use super::params::{Resolved, number};
use crate::domain::{EventKind, JobOutcome, JobRecord, JobStatus, PublishedImage};

/// Leonardo's scheduler enum (`sd_generation_schedulers`).
pub const SCHEDULERS: [&str; 7] = [
    "KLMS",
    "EULER_ANCESTRAL_DISCRETE",
    "EULER_DISCRETE",
    "DDIM",
    "DPM_SOLVER",
    "PNDM",
    "LEONARDO",
];

/// The scheduler Leonardo uses when a request names none.
pub const DEFAULT_SCHEDULER: &str = "EULER_DISCRETE";

/// The key of the job's vendor context that holds the Leonardo request details ([`context`]).
const CONTEXT_KEY: &str = "leonardo";

/// Renders `outcome` as a `leonardo` callback.
pub fn render(outcome: &JobOutcome<'_>) -> Value {
    let kind = match outcome.event {
        EventKind::Completed => "image_generation.complete",
        EventKind::Failed => "image_generation.failed",
        EventKind::Canceled => "image_generation.cancelled",
    };
    let status = if outcome.event == EventKind::Completed {
        "COMPLETE"
    } else {
        "FAILED"
    };
    json!({
        "type": kind,
        "object": "generation",
        "timestamp": outcome.timestamp_ms,
        "api_version": "v1",
        "data": {"object": generation(outcome.record, &outcome.images, status, outcome.timestamp_ms)},
    })
}

/// Leonardo's `job_status` for a job: `PENDING` until it ends, then `COMPLETE` or `FAILED`.
pub fn status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued | JobStatus::Running => "PENDING",
        JobStatus::Completed => "COMPLETE",
        JobStatus::Failed | JobStatus::Canceled | JobStatus::TimedOut => "FAILED",
    }
}

/// What a Leonardo request contributes to its job's callback beyond the generation
/// parameters, stored in the job's vendor context. Never a secret.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The scheduler the request named (or Leonardo's default).
    pub scheduler: String,
    /// `presetStyle` as requested (None: null).
    pub preset_style: Option<String>,
    /// `public` as requested.
    pub public: bool,
    /// Leonardo's `sdVersion` of the model the request selected, with that model's name.
    pub model_version: Option<(String, String)>,
    /// The creating key's name.
    pub key_name: String,
    /// The creating key's callback URL.
    pub webhook_url: Option<String>,
}

/// The vendor context of a job created by Leonardo's API.
pub fn context(request: &RequestContext) -> Value {
    let mut object = json!({
        "scheduler": request.scheduler,
        "presetStyle": request.preset_style,
        "public": request.public,
        "apiKeyName": request.key_name,
        "webhookCallbackUrl": request.webhook_url,
    });
    if let Some((name, version)) = &request.model_version {
        object["model"] = json!({"name": name, "sdVersion": version});
    }
    json!({ CONTEXT_KEY: object })
}

/// A UUIDv8 from a SHA-256 of `kind` and `parts`: the same inputs always give the same id.
fn derived_id(kind: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"sdserve/leonardo/");
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The id of image `index` of generation `job_id`.
pub fn image_id(job_id: &str, index: u32) -> String {
    derived_id("image", &[job_id, &index.to_string()])
}

/// The `modelId` of a served model.
pub fn model_id(name: &str) -> String {
    derived_id("model", &[name])
}

/// `userId` of the jobs of key `owner` (None for the anonymous owner).
pub fn user_id(owner: &str) -> Option<String> {
    (!owner.is_empty()).then(|| derived_id("user", &[owner]))
}

/// `apiKeyId` of key `owner` (None for the anonymous owner).
pub fn api_key_id(owner: &str) -> Option<String> {
    (!owner.is_empty()).then(|| derived_id("api-key", &[owner]))
}

/// When key `key_id` (`key_` + a UUIDv7 in simple form) was created, ms since the epoch.
fn key_created_ms(key_id: &str) -> Option<i64> {
    let id = uuid::Uuid::try_parse(key_id.strip_prefix("key_")?).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// Leonardo's `sd_versions` name for an inference-server model variant.
pub fn sd_version(variant: &str) -> Option<&'static str> {
    match variant {
        "sd1" => Some("v1_5"),
        "sd2" => Some("v2"),
        _ => None,
    }
}

/// The generation object shared by the callback and `GET /generations/{id}`: `status` is
/// Leonardo's, `updated_ms` the time of the last change (or now, for a job still pending).
pub fn generation(
    record: &JobRecord,
    images: &[PublishedImage<'_>],
    status: &str,
    updated_ms: i64,
) -> Value {
    let job = &record.job;
    let r = Resolved::new(&job.params);
    let ctx = job
        .vendor_context
        .get(CONTEXT_KEY)
        .cloned()
        .unwrap_or(Value::Null);
    let created = iso8601(job.created_at_ms);
    let updated = iso8601(record.finished_at_ms.unwrap_or(updated_ms));
    let public = ctx["public"].as_bool().unwrap_or(false);
    let (user, key) = (user_id(&job.owner), api_key_id(&job.owner));
    let seed = match images.first() {
        Some(first) => json!(first.image.seed.to_string()),
        None if r.seed >= 0 => json!(r.seed.to_string()),
        None => Value::Null,
    };
    let requested = ctx["scheduler"].as_str().filter(|s| SCHEDULERS.contains(s));
    let model_name = if record.model.is_empty() {
        r.model
    } else {
        &record.model
    };
    let model_name = (!model_name.is_empty()).then_some(model_name);
    let version = match (&ctx["model"]["name"], &ctx["model"]["sdVersion"]) {
        (Value::String(name), version) if Some(name.as_str()) == model_name => version.clone(),
        _ => Value::Null,
    };
    let images: Vec<Value> = images
        .iter()
        .map(|published| {
            json!({
                "id": image_id(&job.id, published.image.index),
                "createdAt": updated,
                "updatedAt": updated,
                "userId": user,
                "url": published.url,
                "generationId": job.id,
                "nobgId": null,
                "nsfw": false,
                "likeCount": 0,
                "trendingScore": 0,
                "public": public,
            })
        })
        .collect();
    let mut object = json!({
        "id": job.id,
        "createdAt": created,
        "updatedAt": updated,
        "userId": user,
        "public": public,
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
        "modelId": model_name.map(model_id),
        "negativePrompt": r.negative_prompt,
        "prompt": r.prompt,
        "quantity": r.quantity(),
        "sdVersion": version,
        "tiling": false,
        "imageAspectRatio": null,
        "tokenCost": 0,
        "negativeStylePrompt": "",
        "seed": seed,
        "scheduler": requested.unwrap_or_else(|| scheduler(r.sampler_name)),
        "presetStyle": ctx["presetStyle"],
    });
    let rest = json!({
        "promptMagic": false,
        "canvasInitImageId": null,
        "canvasMaskImageId": null,
        "canvasRequest": false,
        "api": true,
        "poseImage2Image": false,
        "imagePromptStrength": null,
        "category": null,
        "poseImage2ImageType": null,
        "highContrast": false,
        "apiDollarCost": "0",
        "poseImage2ImageWeight": null,
        "alchemy": null,
        "contrastRatio": null,
        "highResolution": null,
        "expandedDomain": null,
        "promptMagicVersion": null,
        "unzoom": null,
        "unzoomAmount": null,
        "apiKeyId": key,
        "photoReal": false,
        "promptMagicStrength": null,
        "photoRealStrength": null,
        "imageToImage": r.img2img,
        "controlnetsUsed": false,
        "model": model(model_name, version),
        "images": images,
        "apiKey": {
            "id": key,
            "createdAt": key_created_ms(&job.owner).map(iso8601),
            "userId": user,
            "key": null,
            "lastUsed": created,
            "name": ctx["apiKeyName"],
            "type": "PRODUCTION",
            "webhookCallbackUrl": ctx["webhookCallbackUrl"],
            "webhookCallbackApiKey": null,
        },
    });
    merge(&mut object, rest);
    if let Some(error) = &record.error {
        object["error"] = json!(error);
    }
    object
}

/// Leonardo's `model` object for a served model: what sdserve knows of it (name, id,
/// `sdVersion`), Leonardo's values for a platform model that is not featured, trained or
/// moderated, and null for the catalogue data sdserve has no record of.
fn model(name: Option<&str>, version: Value) -> Value {
    let mut object = json!({
        "id": name.map(model_id),
        "createdAt": null,
        "updatedAt": null,
        "name": name,
        "description": null,
        "public": true,
        "userId": null,
        "flagged": false,
        "nsfw": false,
        "official": true,
        "status": "COMPLETE",
        "classPrompt": null,
        "coreModel": "SD",
        "initDatasetId": null,
        "instancePrompt": null,
        "sdVersion": version,
        "trainingEpoch": null,
        "trainingSteps": null,
        "tokenCost": null,
        "batchSize": null,
        "learningRate": null,
        "type": "GENERAL",
    });
    let rest = json!({
        "modelHeight": null,
        "modelWidth": null,
        "leonardoInstancePrompt": null,
        "trainingStrength": null,
        "featured": false,
        "featuredImageId": null,
        "featuredPosition": null,
        "api": false,
        "favouriteCount": 0,
        "imageCount": null,
        "enhancedModeration": false,
        "apiDollarCost": null,
        "apiKeyId": null,
        "modelLRN": null,
    });
    merge(&mut object, rest);
    object
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// The member of Leonardo's scheduler enum nearest to a sampler name: Leonardo names map to
/// themselves; A1111 names (with or without a schedule suffix such as ` Karras`) and diffusers
/// class names map to the scheduler of the same method or family (Heun → Euler, every DPM and
/// UniPC multistep solver → `DPM_SOLVER`, PLMS → `PNDM`, LCM → Euler ancestral); a name from
/// none of these vocabularies is `LEONARDO`, Leonardo's own.
pub fn scheduler(sampler_name: &str) -> &'static str {
    if let Some(member) = SCHEDULERS.iter().find(|s| **s == sampler_name.trim()) {
        return member;
    }
    let lower = sampler_name.trim().to_ascii_lowercase();
    let mut base = lower.as_str();
    for suffix in [
        " karras",
        " exponential",
        " sgm uniform",
        " uniform",
        " automatic",
    ] {
        base = base.strip_suffix(suffix).unwrap_or(base);
    }
    match base {
        ""
        | "euler a"
        | "euler_a"
        | "euler ancestral"
        | "lcm"
        | "eulerancestraldiscretescheduler" => "EULER_ANCESTRAL_DISCRETE",
        "euler" | "heun" | "eulerdiscretescheduler" => "EULER_DISCRETE",
        "lms" | "klms" | "lmsdiscretescheduler" => "KLMS",
        "ddim" | "ddimscheduler" => "DDIM",
        "plms" | "pndm" | "pndmscheduler" => "PNDM",
        s if s.starts_with("dpm") || s == "unipc" => "DPM_SOLVER",
        _ => "LEONARDO",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sampler_name_maps_to_a_member_of_the_enum() {
        let a1111 = [
            "Euler a",
            "Euler",
            "LMS",
            "Heun",
            "DPM2",
            "DPM2 a",
            "DPM++ 2S a",
            "DPM++ 2M",
            "DPM++ SDE",
            "DPM++ 2M SDE",
            "DDIM",
            "UniPC",
            "LCM",
            "PLMS",
        ];
        let diffusers = [
            "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "DDIMScheduler",
            "DPMSolverMultistepScheduler",
            "LMSDiscreteScheduler",
            "PNDMScheduler",
        ];
        let others = [
            "",
            "  ",
            "k_euler",
            "Restart",
            "DPM adaptive",
            "ünïcode",
            "EULER_DISCRETE ",
            "leonardo",
        ];
        for name in a1111
            .iter()
            .chain(&diffusers)
            .chain(&others)
            .chain(&SCHEDULERS)
        {
            for suffix in ["", " Karras", " Exponential", " SGM Uniform"] {
                let input = format!("{name}{suffix}");
                assert!(
                    SCHEDULERS.contains(&scheduler(&input)),
                    "{input:?} → {}",
                    scheduler(&input)
                );
            }
        }
        let expected = [
            ("Euler a", "EULER_ANCESTRAL_DISCRETE"),
            ("Euler", "EULER_DISCRETE"),
            ("Heun", "EULER_DISCRETE"),
            ("LMS Karras", "KLMS"),
            ("DPM++ 2M Karras", "DPM_SOLVER"),
            ("DPM++ SDE Karras", "DPM_SOLVER"),
            ("UniPC", "DPM_SOLVER"),
            ("DDIM", "DDIM"),
            ("PLMS", "PNDM"),
            ("PNDMScheduler", "PNDM"),
            ("EULER_DISCRETE", "EULER_DISCRETE"),
            ("LEONARDO", "LEONARDO"),
            ("Restart", "LEONARDO"),
        ];
        for (name, member) in expected {
            assert_eq!(scheduler(name), member, "{name}");
        }
    }

    #[test]
    fn derived_ids_are_stable_distinct_uuids() {
        let job = "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b12";
        assert_eq!(image_id(job, 0), image_id(job, 0));
        assert_ne!(image_id(job, 0), image_id(job, 1));
        assert_ne!(user_id("key_a"), api_key_id("key_a"));
        assert_eq!(user_id(""), None);
        for id in [
            image_id(job, 3),
            model_id("tiny-sd1"),
            user_id("key_a").unwrap(),
        ] {
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 8, "{id}");
        }
    }

    #[test]
    fn a_key_id_tells_when_the_key_was_created() {
        let id = format!(
            "key_{}",
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                1_699_315_867,
                274_000_000
            ))
            .simple()
        );
        assert_eq!(
            key_created_ms(&id).map(iso8601).as_deref(),
            Some("2023-11-07T00:11:07.274Z")
        );
        assert_eq!(key_created_ms("not-a-key"), None);
    }
}
