//! img2img init images: PNG and JPEG decoding and the resize to the requested size, against
//! PIL (`tests/parity/resize_goldens.py`), which is what A1111 uses.

use std::path::Path;

use inference_server::pipeline::images::{decode_image_rgb, resize_to};
use inference_server::pipeline::{PipelineError, RgbImage};

fn golden(name: &str) -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_image_rgb(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn png_decodes_to_its_rgb_pixels() {
    let src = golden("resize_src.png");
    assert_eq!(
        (src.width, src.height, src.data.len()),
        (50, 38, 50 * 38 * 3)
    );
    // The pattern: 4-pixel checks in red, a horizontal gradient in green.
    assert_eq!(&src.data[..3], &[0, 0, 255]);
    let px = |x: usize, y: usize| &src.data[(y * 50 + x) * 3..][..3];
    assert_eq!(px(4, 0)[0], 255);
    assert_eq!(px(49, 10)[1], 255);
}

/// Tolerance 1/255: the same fixed-point algorithm as PIL, but a coefficient computed with a
/// different `sin` could round the other way.
#[test]
fn resize_matches_pil_lanczos() {
    let src = golden("resize_src.png");
    for (w, h) in [(64, 64), (40, 24), (96, 80)] {
        let ours = resize_to(&src, w, h).expect("resize");
        let d = max_diff(&ours, &golden(&format!("resize_{w}x{h}.png")));
        eprintln!("{w}x{h}: max difference {d}");
        assert!(d <= 1, "{w}x{h}: max difference {d} > 1");
    }
    assert_eq!(resize_to(&src, 50, 38).expect("same size"), src);
}

/// Tolerance 2/255: JPEG decoders may differ by a rounding in the inverse DCT (PIL uses
/// libjpeg-turbo; 4:4:4, so no chroma upsampling is involved).
#[test]
fn jpeg_decodes_like_pil() {
    let ours = golden("resize_src.jpg");
    let d = max_diff(&ours, &golden("resize_src_jpg_decoded.png"));
    assert!(d <= 2, "max difference {d} > 2");
}

#[test]
fn bad_images_name_the_field() {
    for bytes in [
        &b""[..],
        b"not an image",
        &[0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0],
    ] {
        let err = decode_image_rgb(bytes).expect_err("garbage");
        assert!(
            matches!(
                &err,
                PipelineError::Invalid {
                    field: "init_image",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("must be a PNG or JPEG image"),
            "{err}"
        );
    }
    let inconsistent = RgbImage {
        width: 10,
        height: 10,
        data: vec![0; 12],
    };
    let err = resize_to(&inconsistent, 64, 64).expect_err("short data");
    assert!(
        err.to_string()
            .starts_with("init_image: must hold 10x10 RGB pixels"),
        "{err}"
    );
}
