//! What the A1111 API lists: `samplers`, `schedulers`, `sd-models`, and `options` (read, and
//! written to switch the caller's model).
//!
//! The sampler and schedule lists are the ones the inference server implements
//! (`inference-server/src/sampling/samplers/names.rs`); this crate does not depend on it, so the
//! lists are kept here and a test reads that file to keep them in step.

use sdserve_proto::v1::ModelInfo;
use serde_json::{Map, Value, json};

use super::super::error::ApiError;
use super::super::state::HttpState;
use crate::auth::Caller;

/// One A1111 sampler: its name, aliases, and `options` as A1111 (1.9+) lists them.
struct Sampler {
    name: &'static str,
    aliases: &'static [&'static str],
    options: &'static [(&'static str, &'static str)],
}

const KARRAS: (&str, &str) = ("scheduler", "karras");
const SECOND_ORDER: (&str, &str) = ("second_order", "True");
const ENSD: (&str, &str) = ("uses_ensd", "True");
const BROWNIAN: (&str, &str) = ("brownian_noise", "True");
const DISCARD: (&str, &str) = ("discard_next_to_last_sigma", "True");

/// The samplers the inference server runs, in A1111's order (A1111's others, such as
/// `DPM fast` or `Restart`, are not implemented there and so not listed).
const SAMPLERS: [Sampler; 13] = [
    Sampler {
        name: "DPM++ 2M",
        aliases: &["k_dpmpp_2m"],
        options: &[KARRAS],
    },
    Sampler {
        name: "DPM++ SDE",
        aliases: &["k_dpmpp_sde"],
        options: &[KARRAS, SECOND_ORDER, BROWNIAN],
    },
    Sampler {
        name: "DPM++ 2M SDE",
        aliases: &["k_dpmpp_2m_sde"],
        options: &[("scheduler", "exponential"), BROWNIAN],
    },
    Sampler {
        name: "DPM++ 2S a",
        aliases: &["k_dpmpp_2s_a"],
        options: &[KARRAS, ENSD, SECOND_ORDER],
    },
    Sampler {
        name: "Euler a",
        aliases: &["k_euler_a", "k_euler_ancestral"],
        options: &[ENSD],
    },
    Sampler {
        name: "Euler",
        aliases: &["k_euler"],
        options: &[],
    },
    Sampler {
        name: "LMS",
        aliases: &["k_lms"],
        options: &[],
    },
    Sampler {
        name: "Heun",
        aliases: &["k_heun"],
        options: &[SECOND_ORDER],
    },
    Sampler {
        name: "DPM2",
        aliases: &["k_dpm_2"],
        options: &[KARRAS, DISCARD, SECOND_ORDER],
    },
    Sampler {
        name: "DPM2 a",
        aliases: &["k_dpm_2_a"],
        options: &[KARRAS, DISCARD, ENSD, SECOND_ORDER],
    },
    Sampler {
        name: "DDIM",
        aliases: &["ddim"],
        options: &[],
    },
    Sampler {
        name: "UniPC",
        aliases: &["unipc"],
        options: &[],
    },
    Sampler {
        name: "LCM",
        aliases: &["k_lcm"],
        options: &[],
    },
];

/// One A1111 schedule type (`modules/sd_schedulers.py`).
struct Schedule {
    name: &'static str,
    label: &'static str,
    aliases: Option<&'static [&'static str]>,
    default_rho: f64,
    need_inner_model: bool,
}

/// The schedule types the inference server implements, in A1111's order.
const SCHEDULES: [Schedule; 5] = [
    Schedule {
        name: "automatic",
        label: "Automatic",
        aliases: None,
        default_rho: -1.0,
        need_inner_model: false,
    },
    Schedule {
        name: "uniform",
        label: "Uniform",
        aliases: None,
        default_rho: -1.0,
        need_inner_model: true,
    },
    Schedule {
        name: "karras",
        label: "Karras",
        aliases: None,
        default_rho: 7.0,
        need_inner_model: false,
    },
    Schedule {
        name: "exponential",
        label: "Exponential",
        aliases: None,
        default_rho: -1.0,
        need_inner_model: false,
    },
    Schedule {
        name: "sgm_uniform",
        label: "SGM Uniform",
        aliases: Some(&["SGMUniform"]),
        default_rho: -1.0,
        need_inner_model: true,
    },
];

/// `GET /sdapi/v1/samplers`: `[{name, aliases, options}]`.
pub fn samplers() -> Value {
    let list: Vec<Value> = SAMPLERS
        .iter()
        .map(|s| {
            let options: Map<String, Value> = s
                .options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            json!({"name": s.name, "aliases": s.aliases, "options": options})
        })
        .collect();
    Value::Array(list)
}

/// `GET /sdapi/v1/schedulers`: `[{name, label, aliases, default_rho, need_inner_model}]`.
pub fn schedulers() -> Value {
    let list: Vec<Value> = SCHEDULES
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "label": s.label,
                "aliases": s.aliases,
                "default_rho": s.default_rho,
                "need_inner_model": s.need_inner_model,
            })
        })
        .collect();
    Value::Array(list)
}

/// The canonical name of an A1111 sampler alias (`k_euler_a` → `Euler a`), as A1111 accepts
/// aliases; any other name is returned unchanged for the inference server to judge (it also
/// takes `"DPM++ 2M Karras"`-style names and diffusers class names).
pub fn canonical_sampler(name: &str) -> &str {
    SAMPLERS
        .iter()
        .find(|s| s.aliases.contains(&name))
        .map_or(name, |s| s.name)
}

/// A model's A1111 title: `name [hash]`, or the name when the hash is not known (as A1111
/// titles a checkpoint without a short hash).
pub fn title(model: &ModelInfo) -> String {
    if model.hash.is_empty() {
        model.name.clone()
    } else {
        format!("{} [{}]", model.name, model.hash)
    }
}

/// The served model a client's `sd_model_checkpoint` means: its title, its name, its name with
/// another bracketed hash, or its file name (with or without extension).
pub fn find_model<'a>(models: &'a [ModelInfo], asked: &str) -> Option<&'a ModelInfo> {
    let asked = asked.trim();
    let bare = asked
        .rsplit_once(" [")
        .filter(|(_, rest)| rest.ends_with(']'))
        .map_or(asked, |(name, _)| name);
    let file = |m: &ModelInfo| {
        std::path::Path::new(&m.path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
    };
    let stem = |m: &ModelInfo| {
        std::path::Path::new(&m.path)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
    };
    models
        .iter()
        .find(|m| title(m) == asked || m.name == asked)
        .or_else(|| {
            models.iter().find(|m| {
                m.name == bare
                    || file(m).as_deref() == Some(bare)
                    || stem(m).as_deref() == Some(bare)
            })
        })
}

/// The list of served titles, for error messages.
pub fn served(models: &[ModelInfo]) -> String {
    if models.is_empty() {
        return "the inference server lists no models".to_owned();
    }
    let titles: Vec<String> = models.iter().map(|m| format!("{:?}", title(m))).collect();
    format!("served: {}", titles.join(", "))
}

/// `GET /sdapi/v1/sd-models`: `[{title, model_name, hash, sha256, filename, config}]`.
pub async fn sd_models(state: &HttpState) -> Result<Value, ApiError> {
    let models = state.jobs.models().await?;
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "title": title(m),
                "model_name": m.name,
                "hash": (!m.hash.is_empty()).then_some(&m.hash),
                "sha256": null,
                "filename": m.path,
                "config": null,
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// The caller's current model: its choice if still served, else the inference server's
/// default (listed first).
async fn current_model(state: &HttpState, caller: &Caller) -> Result<Option<ModelInfo>, ApiError> {
    let models = state.jobs.models().await?;
    let preferred = state.jobs.preferred_model(caller);
    let chosen = preferred.and_then(|name| models.iter().find(|m| m.name == name).cloned());
    Ok(chosen.or_else(|| models.first().cloned()))
}

/// The options this service reports that callers cannot change (their values are fixed by
/// what the service does: PNG output, CLIP skip per request, previews while sampling).
fn fixed_options() -> Map<String, Value> {
    let fixed = json!({
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
        "grid_format": "png",
        "enable_pnginfo": true,
        "eta_noise_seed_delta": 0,
        "live_previews_enable": true,
        "live_previews_image_format": "png",
        "sd_checkpoints_limit": 1,
    });
    match fixed {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `GET /sdapi/v1/options`: the A1111 options this service has, with the caller's model.
pub async fn get_options(state: &HttpState, caller: &Caller) -> Result<Value, ApiError> {
    let model = current_model(state, caller).await?;
    let mut options = Map::new();
    options.insert(
        "sd_model_checkpoint".into(),
        json!(model.as_ref().map(title).unwrap_or_default()),
    );
    options.insert("sd_checkpoint_hash".into(), Value::Null);
    options.extend(fixed_options());
    Ok(Value::Object(options))
}

/// `POST /sdapi/v1/options`: `sd_model_checkpoint` switches the caller's default model (kept
/// in memory, per key); other options are accepted when they keep the value this service
/// reports and refused otherwise, naming the option. Answers `null`, as A1111 does.
pub async fn set_options(
    state: &HttpState,
    caller: &Caller,
    body: Value,
    field: &str,
) -> Result<Value, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::field(
            field,
            "must be a JSON object of option names and values",
        ));
    };
    let fixed = fixed_options();
    for (key, value) in &body {
        if key == "sd_model_checkpoint" || key == "sd_checkpoint_hash" {
            continue;
        }
        match fixed.get(key) {
            Some(current) if current == value => {}
            Some(current) => {
                return Err(ApiError::field(
                    format!("{field}.{key}"),
                    format!("this service cannot change this option; it is {current}"),
                ));
            }
            None => {
                return Err(ApiError::field(
                    format!("{field}.{key}"),
                    "is not an option this service has",
                ));
            }
        }
    }
    if let Some(asked) = body.get("sd_model_checkpoint") {
        let field = format!("{field}.sd_model_checkpoint");
        let asked = asked
            .as_str()
            .ok_or_else(|| ApiError::field(&field, "must be a model title or name"))?;
        let models = state.jobs.models().await?;
        let model = find_model(&models, asked).ok_or_else(|| {
            ApiError::field(
                &field,
                format!("no model {asked:?} is served ({})", served(&models)),
            )
        })?;
        state.jobs.set_preferred_model(caller, &model.name);
    }
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inference server's sampler and schedule tables: this test fails when a name listed
    /// here is one it does not implement, or when it implements one not listed here.
    const NAMES_RS: &str =
        include_str!("../../../../inference-server/src/sampling/samplers/names.rs");

    /// The quoted names in the lines of `NAMES_RS` between `start` and the closing `];`.
    fn table(start: &str) -> Vec<Vec<String>> {
        let from = NAMES_RS
            .find(start)
            .unwrap_or_else(|| panic!("{start:?} is not in names.rs"));
        let body = &NAMES_RS[from..];
        let body = &body[..body.find("];").expect("the table ends")];
        body.lines()
            .skip(1)
            .map(|line| {
                line.split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|names| !names.is_empty())
            .collect()
    }

    #[test]
    fn samplers_are_exactly_the_inference_servers() {
        let mut theirs: Vec<String> = table("pub const ALL: [(KSampler, &'static str)")
            .into_iter()
            .map(|n| n[0].clone())
            .collect();
        let mut ours: Vec<String> = SAMPLERS.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(
            theirs.len(),
            13,
            "the KSampler table was not read: {theirs:?}"
        );
        theirs.sort();
        ours.sort();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn schedules_are_exactly_the_inference_servers() {
        let theirs = table("pub const ALL: [(Schedule, &'static [&'static str])");
        assert_eq!(theirs.len(), SCHEDULES.len(), "{theirs:?}");
        for (ours, names) in SCHEDULES.iter().zip(&theirs) {
            assert_eq!(ours.label, names[0], "labels in the same order");
            assert!(
                names.contains(&ours.name.to_owned()),
                "{} is accepted as {names:?}",
                ours.name
            );
            for alias in ours.aliases.unwrap_or_default() {
                assert!(
                    names.contains(&(*alias).to_owned()),
                    "alias {alias} is accepted as {names:?}"
                );
            }
        }
    }

    #[test]
    fn automatic_schedules_match_the_inference_servers_defaults() {
        // names.rs: DPM++ 2M, DPM++ SDE, DPM++ 2S a, DPM2, DPM2 a → Karras; DPM++ 2M SDE →
        // Exponential; the rest Uniform (no `scheduler` option).
        for s in &SAMPLERS {
            let expected = match s.name {
                "DPM++ 2M" | "DPM++ SDE" | "DPM++ 2S a" | "DPM2" | "DPM2 a" => Some("karras"),
                "DPM++ 2M SDE" => Some("exponential"),
                _ => None,
            };
            let listed = s
                .options
                .iter()
                .find(|(k, _)| *k == "scheduler")
                .map(|(_, v)| *v);
            assert_eq!(listed, expected, "{}", s.name);
        }
    }

    #[test]
    fn models_are_found_by_title_name_or_file() {
        let models = vec![
            ModelInfo {
                name: "sd15".into(),
                path: "/m/v1-5-pruned.safetensors".into(),
                hash: "6ce0161689".into(),
                ..Default::default()
            },
            ModelInfo {
                name: "tiny".into(),
                path: "/m/tiny".into(),
                ..Default::default()
            },
        ];
        for asked in [
            "sd15 [6ce0161689]",
            "sd15",
            "sd15 [0000000000]",
            "v1-5-pruned.safetensors",
            "v1-5-pruned",
        ] {
            assert_eq!(
                find_model(&models, asked).map(|m| m.name.as_str()),
                Some("sd15"),
                "{asked}"
            );
        }
        assert_eq!(
            find_model(&models, "tiny").map(|m| m.name.as_str()),
            Some("tiny")
        );
        assert!(find_model(&models, "sdxl").is_none());
        assert_eq!(title(&models[1]), "tiny");
        assert_eq!(canonical_sampler("k_euler_a"), "Euler a");
        assert_eq!(canonical_sampler("DPM++ 2M Karras"), "DPM++ 2M Karras");
    }
}
