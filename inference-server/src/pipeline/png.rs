//! Output images as A1111 writes them: PNG with a `parameters` text chunk holding the
//! infotext (`create_infotext` in `modules/processing.py`), and the `info` JSON string that the
//! A1111 API (and RunPod's callback, seed document 000) returns next to the images.
//!
//! The chunk is `tEXt` when the text is Latin-1, `iTXt` otherwise (PIL's `PngInfo.add_text`).
//! The JSON is formatted like Python's `json.dumps` (`", "` / `": "` separators, non-ASCII
//! escaped), keys in A1111's order.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::pipeline::generate::Generation;
use crate::pipeline::params::{PipelineError, RgbImage};
use crate::sampling::rng::GeneratorKind;
use crate::sampling::samplers::{Resolved, Schedule, resolve};

/// Python's `repr(float)` for the values A1111 prints (`7` → `"7.0"`, `7.5` → `"7.5"`).
pub fn py_float(v: f32) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// A1111's `infotext_utils.quote`: JSON-quote values containing `,`, `:` or a newline.
pub fn quote(text: &str) -> String {
    if text.contains([',', '\n', ':']) {
        serde_json::to_string(text).unwrap_or_else(|_| text.to_string())
    } else {
        text.to_string()
    }
}

/// The sampler and schedule labels A1111 (1.9+) reports: a legacy name with a schedule suffix
/// (`"DPM++ 2M Karras"`) is split into `("DPM++ 2M", "Karras")`; schedule spellings are
/// canonicalised (`"karras"` → `"Karras"`); an empty schedule is `"Automatic"`.
pub fn sampler_labels(sampler_name: &str, scheduler: Option<&str>) -> (String, String) {
    let label = |s: Schedule| {
        Schedule::ALL
            .iter()
            .find(|(x, _)| *x == s)
            .map_or("Automatic", |(_, n)| n[0])
            .to_string()
    };
    let requested = match Schedule::parse(scheduler) {
        Ok(s) => label(s),
        Err(_) => scheduler.unwrap_or("Automatic").to_string(),
    };
    if let Ok(Resolved::A1111 { sampler, schedule }) = resolve(sampler_name, scheduler)
        && sampler.name() != sampler_name
    {
        return (sampler.name().to_string(), label(schedule));
    }
    (sampler_name.to_string(), requested)
}

/// The infotext of image `index` of `generation` (A1111's key order; `None` values omitted).
pub fn infotext(generation: &Generation, index: usize) -> String {
    let p = &generation.params;
    let seed = generation
        .all_seeds
        .get(index)
        .copied()
        .unwrap_or(p.seed as u64);
    let subseed = generation
        .all_subseeds
        .get(index)
        .copied()
        .unwrap_or(p.subseed as u64);
    let (sampler, schedule) = sampler_labels(&p.sampler_name, p.scheduler.as_deref());
    let mut kv: Vec<(&str, String)> = vec![
        ("Steps", p.steps.to_string()),
        ("Sampler", sampler),
        ("Schedule type", schedule),
        ("CFG scale", py_float(p.cfg_scale)),
        ("Seed", seed.to_string()),
        ("Size", format!("{}x{}", p.width, p.height)),
        ("Model", generation.model_name.clone()),
    ];
    if p.subseed_strength != 0.0 {
        kv.push(("Variation seed", subseed.to_string()));
        kv.push(("Variation seed strength", format!("{}", p.subseed_strength)));
    }
    if let Some(d) = generation.denoising_strength {
        kv.push(("Denoising strength", format!("{d}")));
    }
    if p.clip_skip > 1 {
        kv.push(("Clip skip", p.clip_skip.to_string()));
    }
    if p.noise_source == GeneratorKind::TorchCpu {
        kv.push(("RNG", "CPU".into()));
    }
    kv.push(("Version", "sdserve".into()));
    let params: Vec<String> = kv
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect();
    let negative = if p.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", p.negative_prompt)
    };
    format!("{}{negative}\n{}", p.prompt, params.join(", "))
        .trim()
        .to_string()
}

/// `json.dumps` of a string (ASCII only, non-ASCII as `\uXXXX`).
fn js(s: &str) -> String {
    let raw = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

/// `YYYYMMDDhhmmss` (UTC) of `secs` since the Unix epoch, A1111's `job_timestamp` format.
pub fn timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The A1111 API's `info` JSON string for `generation`, with the keys of RunPod's callback
/// (seed document 000) plus `"version": "sdserve"`.
pub fn info_json(generation: &Generation) -> String {
    let p = &generation.params;
    let n = generation.images.len().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let fields: Vec<(&str, String)> = vec![
        ("prompt", js(&p.prompt)),
        ("all_prompts", list((0..n).map(|_| js(&p.prompt)))),
        ("negative_prompt", js(&p.negative_prompt)),
        (
            "all_negative_prompts",
            list((0..n).map(|_| js(&p.negative_prompt))),
        ),
        ("seed", p.seed.to_string()),
        (
            "all_seeds",
            list(generation.all_seeds.iter().map(u64::to_string)),
        ),
        ("subseed", p.subseed.to_string()),
        (
            "all_subseeds",
            list(generation.all_subseeds.iter().map(u64::to_string)),
        ),
        ("subseed_strength", format!("{}", p.subseed_strength)),
        ("width", p.width.to_string()),
        ("height", p.height.to_string()),
        (
            "sampler_name",
            js(&sampler_labels(&p.sampler_name, p.scheduler.as_deref()).0),
        ),
        ("cfg_scale", py_float(p.cfg_scale)),
        ("steps", p.steps.to_string()),
        ("batch_size", p.batch_size.to_string()),
        ("restore_faces", "false".into()),
        ("face_restoration_model", "null".into()),
        ("sd_model_hash", "null".into()),
        ("seed_resize_from_w", "-1".into()),
        ("seed_resize_from_h", "-1".into()),
        (
            "denoising_strength",
            format!("{}", generation.denoising_strength.unwrap_or(0.0)),
        ),
        ("extra_generation_params", "{}".into()),
        ("index_of_first_image", "0".into()),
        (
            "infotexts",
            list((0..generation.images.len()).map(|i| js(&infotext(generation, i)))),
        ),
        ("styles", list(p.styles.iter().map(|s| js(s)))),
        ("job_timestamp", js(&timestamp(now))),
        ("clip_skip", p.clip_skip.to_string()),
        ("is_using_inpainting_conditioning", "false".into()),
        ("version", js("sdserve")),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {v}", js(k)))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// Encodes `image` as an 8-bit RGB PNG with a `parameters` chunk holding `parameters`.
pub fn encode_png(image: &RgbImage, parameters: &str) -> Result<Vec<u8>, PipelineError> {
    let err = |e: png::EncodingError| PipelineError::Png(e.to_string());
    let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(PipelineError::Png("image too large".into()));
    };
    if image.data.len() != image.width * image.height * 3 {
        return Err(PipelineError::Png(
            "image data is not width*height*3 bytes".into(),
        ));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| u32::from(c) <= 0xFF) {
            enc.add_text_chunk("parameters".into(), parameters.into())
                .map_err(err)?;
        } else {
            enc.add_itxt_chunk("parameters".into(), parameters.into())
                .map_err(err)?;
        }
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(&image.data).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Every image of `generation` as PNG bytes, each with its own infotext.
pub fn generation_pngs(generation: &Generation) -> Result<Vec<Vec<u8>>, PipelineError> {
    generation
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| encode_png(img, &infotext(generation, i)))
        .collect()
}
