//! Pixels: VAE output to RGB bytes, init images (PNG/JPEG, resized) to VAE input, and A1111's
//! "Approx cheap" latent preview.

use crate::engine::{Device, Tensor};
use crate::pipeline::params::RgbImage;

/// A1111's `sd_vae_approx.cheap_approximation` coefficients for SD 1.x/2.x latents: row `l`
/// (latent channel) holds the weights of R, G, B.
pub const APPROX_CHEAP_SD1: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// `[-1, 1]` to a byte as diffusers' `numpy_to_pil` does: `round(clamp((x+1)/2, 0, 1)·255)`
/// (diffusers clamps in `postprocess`, then `(images * 255).round()`; NaN maps to 0).
pub fn to_u8(x: f32) -> u8 {
    let v = ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round();
    if v.is_nan() { 0 } else { v as u8 }
}

/// Splits a decoded batch `[B, 3, H, W]` (values around [-1, 1]) into RGB images.
pub fn tensor_to_images(
    decoded: &[f32],
    batch: usize,
    height: usize,
    width: usize,
) -> Vec<RgbImage> {
    let plane = height * width;
    (0..batch)
        .map(|b| {
            let item = &decoded[b * 3 * plane..(b + 1) * 3 * plane];
            let mut data = Vec::with_capacity(plane * 3);
            for p in 0..plane {
                for c in 0..3 {
                    data.push(to_u8(item[c * plane + p]));
                }
            }
            RgbImage {
                width,
                height,
                data,
            }
        })
        .collect()
}

/// An RGB image as the VAE's input `[1, 3, H, W]` in [-1, 1] (`x/127.5 - 1`, as diffusers'
/// `VaeImageProcessor` and A1111 do).
pub fn image_to_tensor(
    image: &RgbImage,
    device: &Device,
) -> Result<Tensor, crate::engine::EngineError> {
    let plane = image.width * image.height;
    let mut data = vec![0f32; 3 * plane];
    for p in 0..plane {
        for c in 0..3 {
            data[c * plane + p] = f32::from(image.data[p * 3 + c]) / 255.0 * 2.0 - 1.0;
        }
    }
    Tensor::from_vec(data, (1, 3, image.height, image.width), device)
}

/// A1111's "Approx cheap" preview of one latent `[4, h, w]` (the denoised prediction in the
/// UNet's VAE-scaled space, as A1111 feeds it): the fixed linear map [`APPROX_CHEAP_SD1`], then
/// `clamp(x·0.5 + 0.5)·255`. The preview is `w × h` pixels (1/8 of the image).
pub fn approx_cheap(latent: &[f32], height: usize, width: usize) -> RgbImage {
    let plane = height * width;
    let mut data = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        let mut px = [0f32; 3];
        for (l, row) in APPROX_CHEAP_SD1.iter().enumerate() {
            let z = latent.get(l * plane + p).copied().unwrap_or(0.0);
            for (acc, c) in px.iter_mut().zip(row) {
                *acc += z * c;
            }
        }
        data.extend(
            px.iter()
                .map(|v| ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0) as u8),
        );
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// Largest init image side accepted, in pixels (a decompression-bomb guard; outputs are at most
/// 2048, and A1111 users upload photos of a few thousand pixels).
pub const MAX_INIT_SIDE: u32 = 8192;

/// Decodes a PNG or JPEG (any bit depth / colour type; alpha dropped as PIL's
/// `convert("RGB")` does, grey expanded) to 8-bit RGB, for img2img init images. Errors name the
/// field `init_image`.
pub fn decode_image_rgb(bytes: &[u8]) -> Result<RgbImage, crate::pipeline::PipelineError> {
    let bad = |e: String| crate::pipeline::PipelineError::Invalid {
        field: "init_image",
        rule: format!("must be a PNG or JPEG image: {e}"),
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_INIT_SIDE);
    limits.max_image_height = Some(MAX_INIT_SIDE);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| bad(e.to_string()))?.into_rgb8();
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    Ok(RgbImage {
        width,
        height,
        data: decoded.into_raw(),
    })
}

/// `image` at `width × height`: itself when it already has that size, otherwise resampled with
/// Lanczos-3 exactly as PIL's `LANCZOS` (A1111's default resize mode "Just resize").
/// Errors (naming `init_image`) when `image.data` does not hold its `width × height` pixels.
pub fn resize_to(
    image: &RgbImage,
    width: usize,
    height: usize,
) -> Result<RgbImage, crate::pipeline::PipelineError> {
    if image.width == width && image.height == height {
        return Ok(image.clone());
    }
    if image.width == 0 || image.height == 0 || image.data.len() != image.width * image.height * 3 {
        return Err(crate::pipeline::PipelineError::Invalid {
            field: "init_image",
            rule: format!(
                "must hold {}x{} RGB pixels, got {} bytes",
                image.width,
                image.height,
                image.data.len()
            ),
        });
    }
    Ok(crate::pipeline::resize::lanczos_rgb(image, width, height))
}
