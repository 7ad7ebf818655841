//! Pixels: VAE output to RGB bytes, init images to VAE input, and A1111's "Approx cheap"
//! latent preview.

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
pub fn tensor_to_images(decoded: &[f32], batch: usize, height: usize, width: usize) -> Vec<RgbImage> {
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
            RgbImage { width, height, data }
        })
        .collect()
}

/// An RGB image as the VAE's input `[1, 3, H, W]` in [-1, 1] (`x/127.5 - 1`, as diffusers'
/// `VaeImageProcessor` and A1111 do).
pub fn image_to_tensor(image: &RgbImage, device: &Device) -> Result<Tensor, crate::engine::EngineError> {
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
        data.extend(px.iter().map(|v| ((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0) as u8));
    }
    RgbImage { width, height, data }
}

/// Decodes a PNG (any bit depth / colour type; alpha dropped, grey expanded) to 8-bit RGB, for
/// img2img init images. Errors name the field `init_images`.
pub fn decode_png_rgb(bytes: &[u8]) -> Result<RgbImage, crate::pipeline::PipelineError> {
    let bad = |e: String| crate::pipeline::PipelineError::Invalid { field: "init_images", rule: format!("must be a PNG image: {e}") };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(bad("indexed colour was not expanded".into())),
    };
    let mut data = Vec::with_capacity(width * height * 3);
    for px in buf[..frame.buffer_size()].chunks_exact(channels) {
        match channels {
            1 | 2 => data.extend([px[0]; 3]),
            _ => data.extend(&px[..3]),
        }
    }
    Ok(RgbImage { width, height, data })
}
