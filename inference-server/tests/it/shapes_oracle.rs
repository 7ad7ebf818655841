//! The quality oracle of the built-in `sdserve-shapes`: held-out prompts (shape × colour ×
//! background × position combinations never seen in training, listed in
//! `data/sdserve-shapes-heldout.json` by the training script) are generated at their fixed
//! seeds with an A1111 sampler and a diffusers sampler, and a pixel-statistics checker (the
//! rules of `tools/train-default-model/checker.py`) reads the shape's colour, the background's
//! colour and the shape's position from each image. Per sampler, the test asserts each
//! fraction right (shape colour, background, position, all three) against the score measured
//! when the committed weights were made, minus [`MARGIN`]: switched-off guidance, a wrong sigma
//! schedule or a broken network drop below it.
//!
//! `SDSERVE_ORACLE_OUT=DIR` also writes every image there as PNG.

use std::ops::ControlFlow;

use inference_server::engine::Device;
use inference_server::model::builtin::{BUILTIN_MODEL_NAME, BUILTIN_MODEL_SOURCE, materialize_in};
use inference_server::pipeline::png::encode_png;
use inference_server::pipeline::{Pipeline, RgbImage, RunOptions, StepEvent, Txt2ImgParams};

/// Palette of the training data (nominal colours; images jitter each channel by ≤ 10).
const PALETTE: [(&str, [f32; 3]); 8] = [
    ("red", [220.0, 30.0, 30.0]),
    ("green", [30.0, 170.0, 50.0]),
    ("blue", [30.0, 60.0, 220.0]),
    ("yellow", [240.0, 220.0, 30.0]),
    ("orange", [245.0, 135.0, 20.0]),
    ("purple", [140.0, 40.0, 180.0]),
    ("white", [245.0, 245.0, 245.0]),
    ("black", [15.0, 15.0, 15.0]),
];
/// Fewer pixels of the second colour than this: no shape found.
const MIN_SHAPE_PIXELS: usize = 12;
/// A centroid within this many pixels of the middle on both axes is "center".
const CENTER_RADIUS: f32 = 8.0;
/// Steps and guidance of every generation (the training script's evaluation uses the same).
const STEPS: usize = 20;
const GUIDANCE: f32 = 6.0;
/// The samplers: one A1111 name, one diffusers class name.
const SAMPLERS: [&str; 2] = ["DPM++ 2M", "DDIMScheduler"];
/// Images right (shape colour, background, position, all three) of the 48 held-out prompts,
/// scored by this test when the committed weights were made (2026-11-30), per sampler (same
/// order as [`SAMPLERS`]). The training script's own evaluation (diffusers' Euler and DDIM on
/// the f32 weights) gave 48, 48, 35, 35 for both.
const TRAINED_RIGHT: [[usize; 4]; 2] = [[48, 48, 34, 34], [48, 48, 35, 35]];
/// Allowed drop below [`TRAINED_RIGHT`], as a fraction: three of the 48 images. The scores are
/// deterministic on one machine; the margin absorbs float differences between CPUs and builds,
/// which can flip an image whose shape sits on the edge of a region or between two colours. It
/// is kept this tight because a model this well trained draws fair images even without
/// guidance: with guidance 1 the position score falls by 4–5 images, which this margin catches.
const MARGIN: f64 = 3.0 / 48.0;

/// One held-out prompt, as the training script lists it.
#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    colour: String,
    background: String,
    position: String,
    seed: i64,
}

/// What the checker reads from an image: shape colour, background colour, position.
#[derive(Debug, PartialEq)]
struct Seen {
    colour: Option<&'static str>,
    background: &'static str,
    position: Option<&'static str>,
}

fn nearest(px: &[u8]) -> usize {
    let dist = |c: &[f32; 3]| {
        (0..3)
            .map(|k| (f32::from(px[k]) - c[k]).powi(2))
            .sum::<f32>()
    };
    (0..PALETTE.len())
        .min_by(|&a, &b| dist(&PALETTE[a].1).total_cmp(&dist(&PALETTE[b].1)))
        .unwrap_or(0)
}

/// The checker: nearest palette colour per pixel; the most common is the background, the next
/// the shape; the shape's centroid gives the position.
fn inspect(img: &RgbImage) -> Seen {
    let labels: Vec<usize> = img.data.chunks_exact(3).map(nearest).collect();
    let mut counts = [0usize; PALETTE.len()];
    labels.iter().for_each(|&l| counts[l] += 1);
    let argmax = |c: &[usize; 8]| {
        (0..8)
            .max_by_key(|&i| (c[i], std::cmp::Reverse(i)))
            .unwrap()
    };
    let bg = argmax(&counts);
    counts[bg] = 0;
    let fg = argmax(&counts);
    let background = PALETTE[bg].0;
    if counts[fg] < MIN_SHAPE_PIXELS {
        return Seen {
            colour: None,
            background,
            position: None,
        };
    }
    let (mut sx, mut sy) = (0.0f64, 0.0f64);
    for (i, _) in labels.iter().enumerate().filter(|(_, l)| **l == fg) {
        sx += (i % img.width) as f64;
        sy += (i / img.width) as f64;
    }
    let n = counts[fg] as f64;
    let dx = (sx / n + 0.5 - img.width as f64 / 2.0) as f32;
    let dy = (sy / n + 0.5 - img.height as f64 / 2.0) as f32;
    let position = if dx.abs() < CENTER_RADIUS && dy.abs() < CENTER_RADIUS {
        "center"
    } else {
        match (dy < 0.0, dx < 0.0) {
            (true, true) => "top left",
            (true, false) => "top right",
            (false, true) => "bottom left",
            (false, false) => "bottom right",
        }
    };
    Seen {
        colour: Some(PALETTE[fg].0),
        background,
        position: Some(position),
    }
}

fn cases() -> Vec<Case> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sdserve-shapes-heldout.json");
    let text = std::fs::read_to_string(path).expect("read the held-out prompts");
    serde_json::from_str(&text).expect("held-out prompts JSON")
}

fn pipeline() -> Pipeline {
    // The bytes the binary embeds, read at run time (new weights need no rebuild of the test),
    // and put in place the way the binary does.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(BUILTIN_MODEL_SOURCE);
    let bytes = std::fs::read(&source).expect("read the built-in model");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = materialize_in(dir.path(), &bytes).expect("write the built-in model");
    let pipeline = Pipeline::load(&path, &Device::Cpu).expect("load sdserve-shapes");
    assert_eq!(pipeline.name(), BUILTIN_MODEL_NAME);
    pipeline
}

/// Fractions right (shape colour, background, position, all three) with `sampler`.
fn score(pipeline: &Pipeline, cases: &[Case], sampler: &str) -> [f64; 4] {
    let out_dir = std::env::var_os("SDSERVE_ORACLE_OUT").map(std::path::PathBuf::from);
    let mut right = [0usize; 4];
    for (k, case) in cases.iter().enumerate() {
        let params = Txt2ImgParams {
            prompt: case.prompt.clone(),
            seed: case.seed,
            steps: STEPS,
            cfg_scale: GUIDANCE,
            width: 64,
            height: 64,
            sampler_name: sampler.into(),
            ..Txt2ImgParams::default()
        };
        let generation = pipeline
            .txt2img(&params, RunOptions::default(), &mut |_: &StepEvent<'_>| {
                ControlFlow::Continue(())
            })
            .expect("generate");
        let img = &generation.images[0];
        let seen = inspect(img);
        let ok = [
            seen.colour == Some(case.colour.as_str()),
            seen.background == case.background,
            seen.position == Some(case.position.as_str()),
        ];
        for (r, o) in right.iter_mut().zip(ok) {
            *r += usize::from(o);
        }
        right[3] += usize::from(ok.iter().all(|&o| o));
        if !ok.iter().all(|&o| o) {
            eprintln!("{sampler}: {:?} -> {seen:?}", case.prompt);
        }
        if let Some(dir) = &out_dir {
            std::fs::create_dir_all(dir).expect("create SDSERVE_ORACLE_OUT");
            let png = encode_png(img, "").expect("encode");
            let name = format!("{}-{k:02}.png", sampler.replace([' ', '+'], "_"));
            std::fs::write(dir.join(name), png).expect("write png");
        }
    }
    right.map(|r| r as f64 / cases.len() as f64)
}

#[test]
fn held_out_prompts_are_drawn_as_asked() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} held-out prompts", cases.len());
    let pipeline = pipeline();
    let mut failures = Vec::new();
    for (sampler, right) in SAMPLERS.iter().zip(TRAINED_RIGHT) {
        let trained = right.map(|r| r as f64 / cases.len() as f64);
        let got = score(&pipeline, &cases, sampler);
        let names = ["shape colour", "background", "position", "all three"];
        for ((name, g), t) in names.iter().zip(got).zip(trained) {
            eprintln!("{sampler}: {name} {g:.3} (trained {t:.3}, margin {MARGIN:.4})");
            if g < t - MARGIN {
                failures.push(format!("{sampler} {name}: {g:.3} < {t:.3} - {MARGIN:.4}"));
            }
        }
    }
    assert!(failures.is_empty(), "score below the oracle: {failures:?}");
}

#[test]
fn the_checker_reads_a_drawn_scene() {
    // A 64×64 blue background with a 16×16 red square centred at (16, 48): bottom left.
    let mut data = Vec::with_capacity(64 * 64 * 3);
    for y in 0..64 {
        for x in 0..64 {
            let inside = (8..24).contains(&x) && (40..56).contains(&y);
            data.extend_from_slice(if inside {
                &[225, 25, 35]
            } else {
                &[25, 65, 215]
            });
        }
    }
    let img = RgbImage {
        width: 64,
        height: 64,
        data,
    };
    let seen = inspect(&img);
    assert_eq!(
        seen,
        Seen {
            colour: Some("red"),
            background: "blue",
            position: Some("bottom left"),
        }
    );
}
