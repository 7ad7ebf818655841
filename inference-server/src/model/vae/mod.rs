//! Stable Diffusion's autoencoder (diffusers' `AutoencoderKL`): the encoder maps an image in
//! [-1, 1] to the mean and log-variance of a latent 1/8 its size (with SD's four levels), the
//! decoder maps a latent back to an image.
//!
//! Scaling: the UNet works on latents multiplied by [`Vae::scaling_factor`] (0.18215 for SD 1,
//! from the config). [`Vae::decode`] takes *unscaled* latents, like diffusers'
//! `AutoencoderKL.decode`; [`Vae::decode_scaled`] first divides by the factor, as the diffusers
//! pipelines do before calling `vae.decode`. [`Vae::encode`] returns the unscaled distribution.
//!
//! Everything is computed in f32 whatever the stored weight dtype. The mid-block attention
//! over all H·W positions (4096 for a 512×512 image) runs through the engine's tiled attention,
//! so no H·W × H·W matrix is ever allocated.

mod decoder;
mod encoder;
mod mid;

use crate::engine::{DType, Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::{VaeConfig, WeightSet};
use crate::nn::Conv2d;

use decoder::Decoder;
use encoder::Encoder;

/// Epsilon of every group norm in diffusers' VAE.
const EPS: f32 = 1e-6;

/// diffusers' `DiagonalGaussianDistribution` clamps the log-variance to this range.
const LOGVAR_RANGE: (f32, f32) = (-30.0, 20.0);

/// A loaded `AutoencoderKL`.
#[derive(Debug)]
pub struct Vae {
    encoder: Encoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    decoder: Decoder,
    in_channels: usize,
    latent_channels: usize,
    scaling_factor: f32,
    device: Device,
    /// The dtype it computes in (its weight set's cast, f32 by default).
    act: DType,
}

impl Vae {
    /// Loads every tensor `config` calls for (diffusers key names) from `weights`; a missing or
    /// mis-shaped tensor is an error naming it.
    pub fn load(
        config: &VaeConfig,
        weights: &WeightSet,
        device: &Device,
    ) -> Result<Vae, ModelError> {
        let bad = |field, rule: &str| {
            Err(ModelError::Input {
                field,
                rule: rule.into(),
            })
        };
        if config.block_out_channels.is_empty() || config.block_out_channels.contains(&0) {
            return bad(
                "vae.config.block_out_channels",
                "must list at least one non-zero width",
            );
        }
        if config.latent_channels == 0 || config.in_channels == 0 || config.out_channels == 0 {
            return bad(
                "vae.config.latent_channels",
                "channel counts must be non-zero",
            );
        }
        if !(config.scaling_factor.is_finite() && config.scaling_factor > 0.0) {
            return bad("vae.config.scaling_factor", "must be a positive number");
        }
        let lat = config.latent_channels;
        Ok(Vae {
            encoder: Encoder::load(config, weights, device)?,
            quant_conv: Conv2d::load(weights, "quant_conv", 2 * lat, 2 * lat, 1, 1, 0, device)?,
            post_quant_conv: Conv2d::load(weights, "post_quant_conv", lat, lat, 1, 1, 0, device)?,
            decoder: Decoder::load(config, weights, device)?,
            in_channels: config.in_channels,
            latent_channels: lat,
            scaling_factor: config.scaling_factor as f32,
            device: device.clone(),
            act: weights.activation_dtype(),
        })
    }

    /// The factor the UNet's latents carry (`latents_for_unet = scaling_factor · latents`).
    pub fn scaling_factor(&self) -> f32 {
        self.scaling_factor
    }

    /// Channels of a latent (4 for SD).
    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }

    /// Decodes unscaled latents `[B, latent_channels, h, w]` (diffusers `vae.decode(z).sample`)
    /// to an image `[B, out_channels, 8h, 8w]` (factor `2^(levels-1)`), roughly in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        check_nchw("latents", latents, self.latent_channels)?;
        let z = self.post_quant_conv.forward(&latents.to_dtype(self.act)?)?;
        Ok(self.decoder.forward(&z)?.to_dtype(DType::F32)?)
    }

    /// Decodes latents as the UNet produces them: divides by [`Vae::scaling_factor`] first.
    pub fn decode_scaled(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        check_nchw("latents", latents, self.latent_channels)?;
        let factor = Tensor::full(self.scaling_factor, (1, 1, 1, 1), &self.device)?;
        self.decode(&latents.div(&factor)?)
    }

    /// Encodes an image `[B, in_channels, H, W]` in [-1, 1] to the latent distribution's
    /// `(mean, logvar)`, each `[B, latent_channels, H/8, W/8]` (diffusers
    /// `vae.encode(x).latent_dist.mean` / `.logvar`, the latter clamped to [-30, 20]).
    pub fn encode(&self, image: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        check_nchw("image", image, self.in_channels)?;
        let moments = self
            .quant_conv
            .forward(&self.encoder.forward(&image.to_dtype(self.act)?)?)?
            .to_dtype(DType::F32)?;
        let mean = moments.narrow(1, 0, self.latent_channels)?;
        let logvar = moments.narrow(1, self.latent_channels, self.latent_channels)?;
        Ok((mean, logvar.clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1)?))
    }
}

fn check_nchw(field: &'static str, t: &Tensor, channels: usize) -> Result<(), ModelError> {
    match t.dims() {
        &[b, c, h, w] if b > 0 && c == channels && h > 0 && w > 0 => Ok(()),
        _ => Err(ModelError::Input {
            field,
            rule: format!(
                "must be [B, {channels}, H, W] with B, H, W >= 1, got {}",
                t.shape()
            ),
        }),
    }
}
