//! A job's generation parameters with A1111's defaults filled in, as the vendor formats echo them.
//!
//! The defaults are the ones documented on `sdserve.v1.GenerationParams`; the inference server
//! applies the same ones, so a callback reports what was actually asked for.

use sdserve_proto::v1::GenerationParams;
use serde_json::{Value, json};

/// Parameters with every optional field resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    /// Prompt.
    pub prompt: &'a str,
    /// Negative prompt.
    pub negative_prompt: &'a str,
    /// Requested seed (-1 = random; the seed used is in the images and the info JSON).
    pub seed: i64,
    /// Requested variation seed.
    pub subseed: i64,
    /// Variation strength.
    pub subseed_strength: f32,
    /// Images per batch.
    pub batch_size: u32,
    /// Batches.
    pub n_iter: u32,
    /// Sampling steps.
    pub steps: u32,
    /// Guidance scale.
    pub cfg_scale: f32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Sampler name ("Euler a" when unset).
    pub sampler_name: &'a str,
    /// Schedule type ("Automatic" when unset).
    pub scheduler: &'a str,
    /// img2img strength (0 for txt2img, as A1111 reports it).
    pub denoising_strength: f32,
    /// True when an init image was given.
    pub img2img: bool,
    /// CLIP layers skipped.
    pub clip_skip: u32,
    /// Styles.
    pub styles: &'a [String],
    /// Model asked for ("" = the server's default).
    pub model: &'a str,
}

impl<'a> Resolved<'a> {
    /// Resolves `params` against the documented defaults.
    pub fn new(params: &'a GenerationParams) -> Self {
        let img2img = !params.init_image.is_empty();
        Self {
            prompt: &params.prompt,
            negative_prompt: &params.negative_prompt,
            seed: params.seed.unwrap_or(-1),
            subseed: params.subseed.unwrap_or(-1),
            subseed_strength: params.subseed_strength.unwrap_or(0.0),
            batch_size: params.batch_size.unwrap_or(1),
            n_iter: params.n_iter.unwrap_or(1),
            steps: params.steps.unwrap_or(20),
            cfg_scale: params.cfg_scale.unwrap_or(7.0),
            width: params.width.unwrap_or(512),
            height: params.height.unwrap_or(512),
            sampler_name: non_empty(&params.sampler_name, "Euler a"),
            scheduler: non_empty(&params.scheduler, "Automatic"),
            denoising_strength: params.denoising_strength.unwrap_or(if img2img {
                0.75
            } else {
                0.0
            }),
            img2img,
            clip_skip: params.clip_skip.unwrap_or(1),
            styles: &params.styles,
            model: &params.model,
        }
    }

    /// Images the job produces in all.
    pub fn quantity(&self) -> u32 {
        self.batch_size.saturating_mul(self.n_iter)
    }

    /// The A1111 endpoint the parameters correspond to.
    pub fn endpoint(&self) -> &'static str {
        if self.img2img {
            "/sdapi/v1/img2img"
        } else {
            "/sdapi/v1/txt2img"
        }
    }

    /// The request fields a caller sends to A1111, as RunPod's worker echoes them in `input.payload`.
    pub fn a1111_payload(&self) -> Value {
        json!({
            "batch_size": self.batch_size,
            "cfg_scale": number(self.cfg_scale),
            "denoising_strength": number(self.denoising_strength),
            "height": self.height,
            "n_iter": self.n_iter,
            "negative_prompt": self.negative_prompt,
            "prompt": self.prompt,
            "sampler_index": self.sampler_name,
            "sampler_name": self.sampler_name,
            "scheduler": self.scheduler,
            "seed": self.seed,
            "steps": self.steps,
            "subseed": self.subseed,
            "subseed_strength": number(self.subseed_strength),
            "width": self.width,
        })
    }
}

/// An `f32` as the JSON number a person wrote: 7.0 → 7, 7.5 → 7.5, without f32 noise (0.1 → 0.1).
pub(crate) fn number(value: f32) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        json!(value as i64)
    } else {
        // The shortest decimal that round-trips the f32, read back as f64.
        let shortest: f64 = value.to_string().parse().unwrap_or(f64::from(value));
        json!(shortest)
    }
}

fn non_empty<'a>(value: &'a str, default: &'static str) -> &'a str {
    if value.is_empty() { default } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_the_documented_defaults() {
        let params = GenerationParams {
            prompt: "a cat".into(),
            ..Default::default()
        };
        let r = Resolved::new(&params);
        assert_eq!(
            (r.seed, r.steps, r.width, r.height, r.batch_size, r.n_iter),
            (-1, 20, 512, 512, 1, 1)
        );
        assert_eq!(
            (r.sampler_name, r.scheduler, r.cfg_scale, r.clip_skip),
            ("Euler a", "Automatic", 7.0, 1)
        );
        assert_eq!(r.endpoint(), "/sdapi/v1/txt2img");
        let img2img = GenerationParams {
            init_image: vec![1],
            ..Default::default()
        };
        assert_eq!(Resolved::new(&img2img).denoising_strength, 0.75);
        assert_eq!(Resolved::new(&img2img).endpoint(), "/sdapi/v1/img2img");
    }

    #[test]
    fn numbers_print_as_written() {
        assert_eq!(number(7.0).to_string(), "7");
        assert_eq!(number(7.5).to_string(), "7.5");
        assert_eq!(number(0.1).to_string(), "0.1");
    }
}
