//! The generation pipeline on the tiny SD 1.x model: parameter validation before any work,
//! seed determinism, batch/seed rules, cancellation, PNG infotext, the A1111 info JSON, the
//! `generate` CLI, and pixel parity with diffusers' `StableDiffusionPipeline` goldens.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use inference_server::engine::Device;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Layout, StoredDType, Variant};
use inference_server::pipeline::images::{decode_image_rgb, resize_to};
use inference_server::pipeline::png::{encode_png, generation_pngs, info_json, infotext};
use inference_server::pipeline::{
    Img2ImgParams, Pipeline, PipelineError, RgbImage, RunOptions, StepEvent, Txt2ImgParams,
};

mod a1111;
mod bf16;

fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = dir.join("tiny-sd1");
        write_test_model(&out, Variant::Sd1, Layout::Diffusers, StoredDType::F32)
            .expect("write model");
        out
    })
}

/// The tiny SD 1.x pipeline on `device`, loaded once per device and shared by the tests.
fn pipeline(device: &Device) -> &'static Pipeline {
    static LOADED: Mutex<BTreeMap<String, &'static Pipeline>> = Mutex::new(BTreeMap::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.entry(device.to_string()).or_insert_with(|| {
        Box::leak(Box::new(
            Pipeline::load(model_dir(), device).expect("load tiny model"),
        ))
    })
}

fn small(seed: i64) -> Txt2ImgParams {
    Txt2ImgParams {
        prompt: "a (red:1.3) cat".into(),
        negative_prompt: "blurry".into(),
        seed,
        subseed: 7,
        steps: 3,
        width: 64,
        height: 64,
        sampler_name: "Euler".into(),
        ..Txt2ImgParams::default()
    }
}

fn run(p: &Txt2ImgParams, device: &Device) -> inference_server::pipeline::Generation {
    pipeline(device)
        .txt2img(p, RunOptions::default(), &mut |_: &StepEvent<'_>| {
            ControlFlow::Continue(())
        })
        .expect("generate")
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn assert_invalid(p: Txt2ImgParams, field: &str, rule: &str, device: &Device) {
    let mut calls = 0;
    let err = pipeline(device)
        .txt2img(&p, RunOptions::default(), &mut |_: &StepEvent<'_>| {
            calls += 1;
            ControlFlow::Continue(())
        })
        .expect_err("must be rejected");
    assert_eq!(calls, 0, "no step may run for an invalid request");
    match err {
        PipelineError::Invalid { field: f, rule: r } => {
            assert_eq!(f, field);
            assert!(r.contains(rule), "{r}");
        }
        other => panic!("expected Invalid {field}, got {other:?}"),
    }
}

test_device!(bad_parameters_are_rejected_naming_field_and_rule);
fn bad_parameters_are_rejected_naming_field_and_rule(device: &Device) {
    assert_invalid(
        Txt2ImgParams {
            width: 65,
            ..small(1)
        },
        "width",
        "must be a multiple of 8",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            height: 4096,
            ..small(1)
        },
        "height",
        "between 64 and 2048",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            steps: 0,
            ..small(1)
        },
        "steps",
        "between 1 and 150",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            cfg_scale: -1.0,
            ..small(1)
        },
        "cfg_scale",
        "between 1 and 30",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            batch_size: 1000,
            ..small(1)
        },
        "batch_size",
        "between 1 and 16",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            n_iter: 0,
            ..small(1)
        },
        "n_iter",
        "between 1 and 100",
        device,
    );
    assert_invalid(
        Txt2ImgParams {
            clip_skip: 0,
            ..small(1)
        },
        "clip_skip",
        "between 1 and 12",
        device,
    );
    let msg = Txt2ImgParams {
        width: 65,
        ..small(1)
    }
    .validate()
    .expect_err("invalid")
    .to_string();
    assert!(msg.starts_with("width: must be a multiple of 8"), "{msg}");
    let err = Txt2ImgParams {
        sampler_name: "Eulerr".into(),
        ..small(1)
    }
    .validate()
    .expect_err("unknown");
    let msg = err.to_string();
    assert!(matches!(err, PipelineError::Sampler(_)), "{err:?}");
    assert!(
        msg.contains("Eulerr") && msg.contains("Euler a") && msg.contains("EulerDiscreteScheduler"),
        "{msg}"
    );
}

test_device!(infotext_quoting_and_non_latin1_prompts);
fn infotext_quoting_and_non_latin1_prompts(device: &Device) {
    use inference_server::pipeline::png::quote;
    assert_eq!(quote("Euler a"), "Euler a");
    use inference_server::pipeline::png::sampler_labels;
    assert_eq!(
        sampler_labels("DPM++ 2M Karras", None),
        ("DPM++ 2M".into(), "Karras".into())
    );
    assert_eq!(
        sampler_labels("Euler a", Some("karras")),
        ("Euler a".into(), "Karras".into())
    );
    assert_eq!(
        sampler_labels("Euler a", Some("")),
        ("Euler a".into(), "Automatic".into())
    );
    assert_eq!(
        sampler_labels("EulerDiscreteScheduler", None),
        ("EulerDiscreteScheduler".into(), "Automatic".into())
    );
    assert_eq!(quote("a, b"), "\"a, b\"");
    let g = run(
        &Txt2ImgParams {
            prompt: "猫 (cat)".into(),
            negative_prompt: String::new(),
            ..small(9)
        },
        device,
    );
    let text = infotext(&g, 0);
    assert!(text.starts_with("猫 (cat)\nSteps: 3,"), "{text}");
    let png = encode_png(&g.images[0], &text).expect("png");
    let reader = png::Decoder::new(std::io::Cursor::new(&png))
        .read_info()
        .expect("png");
    let itxt = reader
        .info()
        .utf8_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .expect("iTXt parameters");
    assert_eq!(itxt.get_text().expect("utf-8"), text);
    assert!(
        info_json(&g).contains("\\u732b"),
        "info JSON escapes non-ASCII like json.dumps"
    );
}

test_device!(same_seed_same_png_different_seed_different);
fn same_seed_same_png_different_seed_different(device: &Device) {
    let a = generation_pngs(&run(&small(1234), device)).expect("png");
    let b = generation_pngs(&run(&small(1234), device)).expect("png");
    let c = generation_pngs(&run(&small(1235), device)).expect("png");
    assert_eq!(a, b);
    assert_ne!(a[0], c[0]);
}

test_device!(batch_item_i_equals_single_run_with_seed_plus_i);
fn batch_item_i_equals_single_run_with_seed_plus_i(device: &Device) {
    for sampler in ["Euler a", "DPM++ 2M Karras"] {
        let batch = run(
            &Txt2ImgParams {
                batch_size: 2,
                n_iter: 2,
                sampler_name: sampler.into(),
                ..small(40)
            },
            device,
        );
        assert_eq!(batch.all_seeds, vec![40, 41, 42, 43]);
        assert_eq!(batch.all_subseeds, vec![7, 8, 9, 10]);
        for i in [1usize, 3] {
            let single = run(
                &Txt2ImgParams {
                    sampler_name: sampler.into(),
                    subseed: 7 + i as i64,
                    ..small(40 + i as i64)
                },
                device,
            );
            let d = max_diff(&batch.images[i].data, &single.images[0].data);
            // Same noise and conditioning; only the GEMM blocking differs with the batch size,
            // which may move a value across a rounding boundary.
            assert!(d <= 1, "{sampler} item {i}: max pixel difference {d}");
        }
    }
}

test_device!(cancellation_after_k_steps);
fn cancellation_after_k_steps(device: &Device) {
    let mut seen = Vec::new();
    let p = Txt2ImgParams {
        steps: 5,
        ..small(3)
    };
    let err = pipeline(device)
        .txt2img(&p, RunOptions { preview: true }, &mut |e: &StepEvent<
            '_,
        >| {
            seen.push((
                e.step,
                e.total,
                e.previews.map(|v| (v.len(), v[0].width, v[0].height)),
            ));
            if e.step == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect_err("cancelled");
    assert!(matches!(err, PipelineError::Cancelled), "{err:?}");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0], (0, 5, None));
    assert_eq!(seen[2], (2, 5, Some((1, 8, 8))), "preview is latent-sized");
}

test_device!(png_carries_parameters_and_info_json_has_runpod_keys);
fn png_carries_parameters_and_info_json_has_runpod_keys(device: &Device) {
    let p = Txt2ImgParams {
        clip_skip: 2,
        cfg_scale: 7.0,
        styles: vec!["Cinematic".into()],
        ..small(1234)
    };
    let g = run(&p, device);
    let text = infotext(&g, 0);
    assert_eq!(
        text,
        "a (red:1.3) cat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: Automatic, \
         CFG scale: 7.0, Seed: 1234, Size: 64x64, Model: tiny-sd1, Clip skip: 2, RNG: CPU, Version: sdserve"
    );
    let png = encode_png(&g.images[0], &text).expect("png");
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let reader = decoder.read_info().expect("png reads");
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 64));
    let chunk = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .expect("parameters chunk");
    assert_eq!(chunk.text, text);

    let json: serde_json::Value = serde_json::from_str(&info_json(&g)).expect("info is JSON");
    let seed_doc = std::fs::read_to_string("/work/shared/seeds/000_8ebd6940cb1acc57.txt").ok();
    let keys = [
        "prompt",
        "all_prompts",
        "negative_prompt",
        "all_negative_prompts",
        "seed",
        "all_seeds",
        "subseed",
        "all_subseeds",
        "subseed_strength",
        "width",
        "height",
        "sampler_name",
        "cfg_scale",
        "steps",
        "batch_size",
        "restore_faces",
        "face_restoration_model",
        "sd_model_hash",
        "seed_resize_from_w",
        "seed_resize_from_h",
        "denoising_strength",
        "extra_generation_params",
        "index_of_first_image",
        "infotexts",
        "styles",
        "job_timestamp",
        "clip_skip",
        "is_using_inpainting_conditioning",
    ];
    for k in keys {
        assert!(json.get(k).is_some(), "info lacks {k}");
        if let Some(doc) = &seed_doc {
            assert!(
                doc.contains(&format!("\\\"{k}\\\"")),
                "{k} is not a key of the RunPod sample"
            );
        }
    }
    assert_eq!(json["seed"], 1234);
    assert_eq!(json["all_seeds"], serde_json::json!([1234]));
    assert_eq!(json["cfg_scale"], 7.0);
    assert_eq!(json["infotexts"][0], text);
    assert_eq!(json["version"], "sdserve");
    assert_eq!(json["styles"], serde_json::json!(["Cinematic"]));
    assert_eq!(json["job_timestamp"].as_str().map(str::len), Some(14));
}

#[test]
fn cli_generate_writes_pngs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("img.png");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_inference-server"))
        .args(["generate", "--model"])
        .arg(model_dir())
        .args(["--prompt", "a cat", "--out"])
        .arg(&out)
        .args([
            "--seed",
            "5",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--batch-size",
            "2",
        ])
        .env("SDSERVE_SAMPLER", "DDIM")
        .output()
        .expect("binary runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for name in ["img-1.png", "img-2.png"] {
        let bytes = std::fs::read(dir.path().join(name)).expect("png written");
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .expect("png");
        let text = &reader.info().uncompressed_latin1_text[0].text;
        assert!(
            text.contains("Sampler: DDIM") && text.contains("Size: 64x64"),
            "{text}"
        );
    }
    let i2i_out = dir.path().join("i2i.png");
    let golden_init = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/pipeline_init.png");
    let i2i = std::process::Command::new(env!("CARGO_BIN_EXE_inference-server"))
        .args(["generate", "--model"])
        .arg(model_dir())
        .args(["--prompt", "a cat", "--out"])
        .arg(&i2i_out)
        .arg("--init-image")
        .arg(&golden_init)
        .args([
            "--seed",
            "5",
            "--steps",
            "3",
            "--denoising-strength",
            "0.5",
            "--sampler",
            "Euler",
        ])
        .output()
        .expect("binary runs");
    assert!(
        i2i.status.success(),
        "{}",
        String::from_utf8_lossy(&i2i.stderr)
    );
    let reader = png::Decoder::new(std::io::Cursor::new(std::fs::read(&i2i_out).expect("png")))
        .read_info()
        .expect("png");
    let text = &reader.info().uncompressed_latin1_text[0].text;
    assert!(
        text.contains("Denoising strength: 0.5") && text.contains("Size: 64x64"),
        "{text}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_inference-server"))
        .args(["generate", "--model"])
        .arg(model_dir())
        .args(["--prompt", "a cat", "--out"])
        .arg(&out)
        .args(["--width", "65"])
        .output()
        .expect("binary runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("width: must be a multiple of 8"));
}

fn read_golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_image_rgb(&bytes).expect("golden png").data
}

test_device!(parity_with_diffusers_pipeline);
/// `tests/parity/pipeline_goldens.py`: diffusers' StableDiffusionPipeline, 64×64 (and 72×72,
/// whose 4×9×9 latent is not a multiple of 16 values, for the ancestral noise), 5 steps, CFG 7,
/// `Generator().manual_seed(1234)`. Tolerance: max pixel difference 2/255.
fn parity_with_diffusers_pipeline(device: &Device) {
    let cases = [
        (
            "EulerDiscreteScheduler",
            None,
            64,
            "pipeline_EulerDiscreteScheduler.png",
        ),
        ("DDIMScheduler", None, 64, "pipeline_DDIMScheduler.png"),
        (
            "DPMSolverMultistepScheduler",
            Some("Karras"),
            64,
            "pipeline_DPMSolverMultistepScheduler_karras.png",
        ),
        (
            "EulerAncestralDiscreteScheduler",
            None,
            64,
            "pipeline_EulerAncestralDiscreteScheduler.png",
        ),
        (
            "EulerAncestralDiscreteScheduler",
            None,
            72,
            "pipeline_EulerAncestralDiscreteScheduler_72.png",
        ),
    ];
    for (sampler, schedule, size, golden) in cases {
        let p = Txt2ImgParams {
            width: size,
            height: size,
            scheduler: schedule.map(str::to_string),
            ..golden_params(sampler)
        };
        let ours = run(&p, device);
        let d = max_diff(&ours.images[0].data, &read_golden(golden));
        eprintln!("{sampler} {size}x{size}: max pixel difference {d}");
        assert!(
            d <= 2,
            "{sampler} {size}x{size}: max pixel difference {d} > 2"
        );
    }
}

fn init_image() -> RgbImage {
    RgbImage {
        width: 64,
        height: 64,
        data: read_golden("pipeline_init.png"),
    }
}

/// The settings every pipeline golden was made with (`tests/parity/pipeline_goldens.py`):
/// prompt, negative prompt, seed 1234, 5 steps, CFG 7, 64×64.
fn golden_params(sampler: &str) -> Txt2ImgParams {
    Txt2ImgParams {
        prompt: "a red cat on a sofa".into(),
        negative_prompt: "blurry".into(),
        seed: 1234,
        steps: 5,
        cfg_scale: 7.0,
        width: 64,
        height: 64,
        sampler_name: sampler.into(),
        ..Txt2ImgParams::default()
    }
}

fn img2img_params(sampler: &str, schedule: Option<&str>, strength: f32) -> Img2ImgParams {
    Img2ImgParams {
        base: Txt2ImgParams {
            scheduler: schedule.map(str::to_string),
            ..golden_params(sampler)
        },
        init_image: init_image(),
        denoising_strength: strength,
    }
}

fn run_img2img(
    p: &Img2ImgParams,
    device: &Device,
) -> Result<inference_server::pipeline::Generation, PipelineError> {
    pipeline(device).img2img(p, RunOptions::default(), &mut |_: &StepEvent<'_>| {
        ControlFlow::Continue(())
    })
}

test_device!(img2img_rejects_bad_strength_and_runs_a1111_names);
fn img2img_rejects_bad_strength_and_runs_a1111_names(device: &Device) {
    let err = run_img2img(&img2img_params("Euler", None, 1.5), device).expect_err("strength 1.5");
    assert!(
        err.to_string()
            .starts_with("denoising_strength: must be between 0 and 1"),
        "{err}"
    );
    let mut torn = img2img_params("Euler", None, 0.5);
    torn.init_image.width = 32;
    let err = run_img2img(&torn, device).expect_err("pixels do not fill width x height");
    assert!(
        matches!(
            err,
            PipelineError::Invalid {
                field: "init_image",
                ..
            }
        ),
        "{err:?}"
    );
    // A1111 img2img with 5 steps at 0.6 runs int(0.6·5) + 1 = 4 steps.
    let mut steps = 0;
    let p = img2img_params("Euler a", None, 0.6);
    let a = pipeline(device)
        .img2img(&p, RunOptions::default(), &mut |e: &StepEvent<'_>| {
            steps = e.total;
            ControlFlow::Continue(())
        })
        .expect("img2img");
    assert_eq!(steps, 4);
    let b = run_img2img(&p, device).expect("img2img");
    assert_eq!(a.images, b.images);
    assert_eq!(a.denoising_strength, Some(0.6));
    assert!(infotext(&a, 0).contains("Denoising strength: 0.6"));
    // Low strength stays close to the init image; it must still change it.
    let low = run_img2img(&img2img_params("Euler", None, 0.05), device).expect("img2img");
    assert_ne!(low.images[0].data, init_image().data);
}

test_device!(img2img_resizes_an_init_image_of_another_size);
fn img2img_resizes_an_init_image_of_another_size(device: &Device) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/resize_src.jpg");
    let odd = decode_image_rgb(&std::fs::read(path).expect("golden jpeg")).expect("jpeg");
    assert_eq!((odd.width, odd.height), (50, 38));
    let mut p = img2img_params("Euler", None, 0.5);
    p.init_image = odd.clone();
    let resized = run_img2img(&p, device).expect("img2img from a 50x38 JPEG");
    assert_eq!(
        (resized.images[0].width, resized.images[0].height),
        (64, 64)
    );
    // The same as sending the image already resized.
    p.init_image = resize_to(&odd, 64, 64).expect("resize");
    assert_eq!(
        run_img2img(&p, device).expect("img2img").images,
        resized.images
    );
}

test_device!(img2img_parity_with_diffusers);
/// `tests/parity/pipeline_goldens.py`: diffusers' `StableDiffusionImg2ImgPipeline`, strength 0.6,
/// 5 steps (3 run), CFG 7, seed 1234. Tolerance: max pixel difference 2/255.
fn img2img_parity_with_diffusers(device: &Device) {
    let cases = [
        (
            "EulerDiscreteScheduler",
            None,
            "pipeline_img2img_EulerDiscreteScheduler.png",
        ),
        ("DDIMScheduler", None, "pipeline_img2img_DDIMScheduler.png"),
        (
            "DPMSolverMultistepScheduler",
            Some("Karras"),
            "pipeline_img2img_DPMSolverMultistepScheduler_karras.png",
        ),
    ];
    for (sampler, schedule, golden) in cases {
        let ours = run_img2img(&img2img_params(sampler, schedule, 0.6), device).expect("img2img");
        let d = max_diff(&ours.images[0].data, &read_golden(golden));
        eprintln!("img2img {sampler}: max pixel difference {d}");
        assert!(d <= 2, "img2img {sampler}: max pixel difference {d} > 2");
    }
}

test_device!(sd2_single_file_generates_with_clip_skip_and_long_prompts);
fn sd2_single_file_generates_with_clip_skip_and_long_prompts(device: &Device) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tiny-sd2.safetensors");
    write_test_model(&file, Variant::Sd2, Layout::SingleFile, StoredDType::F16).expect("write sd2");
    let sd2 = Pipeline::load(&file, device).expect("load sd2");
    let long = "a cat, ".repeat(40); // > 75 tokens: two chunks against one for the negative prompt
    let p = Txt2ImgParams {
        prompt: long,
        clip_skip: 2,
        steps: 2,
        sampler_name: "DPM++ 2M".into(),
        ..small(11)
    };
    let go = || {
        sd2.txt2img(&p, RunOptions::default(), &mut |_: &StepEvent<'_>| {
            ControlFlow::Continue(())
        })
    };
    let a = go().expect("sd2 generates");
    let b = go().expect("sd2 generates");
    assert_eq!(a.images.len(), 1);
    assert_eq!(
        (
            a.images[0].width,
            a.images[0].height,
            a.images[0].data.len()
        ),
        (64, 64, 64 * 64 * 3)
    );
    assert_eq!(a.images, b.images);
    assert!(infotext(&a, 0).contains("Model: tiny-sd2, Clip skip: 2"));
}

test_device!(img2img_refuses_a_prediction_type_the_sampler_does_not_support);
/// A checkpoint whose UNet predicts `sample`: A1111 samplers have no denoiser for it, so
/// img2img (and txt2img) refuse the request naming the prediction type and the sampler
/// before any step runs, rather than reading the prediction as epsilon.
fn img2img_refuses_a_prediction_type_the_sampler_does_not_support(device: &Device) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tiny-sample");
    write_test_model(&root, Variant::Sd1, Layout::Diffusers, StoredDType::F32)
        .expect("write model");
    let file = root.join("scheduler/scheduler_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    config["prediction_type"] = "sample".into();
    std::fs::write(&file, config.to_string()).expect("write");
    let pipeline = Pipeline::load(&root, device).expect("load");
    for (sampler, supported) in [
        ("Euler a", false),
        ("DPM++ 2M", false),
        ("EulerDiscreteScheduler", false),
        ("DDIMScheduler", true),
    ] {
        let mut steps = 0;
        let result = pipeline.img2img(
            &img2img_params(sampler, None, 0.6),
            RunOptions::default(),
            &mut |_: &StepEvent<'_>| {
                steps += 1;
                ControlFlow::Continue(())
            },
        );
        match (result, supported) {
            (Ok(_), true) => assert!(steps > 0),
            (Err(PipelineError::Invalid { field, rule }), false) => {
                assert_eq!(field, "sampler_name");
                assert!(
                    rule.contains(&format!(
                        "prediction_type \"sample\" is not supported by sampler \"{sampler}\""
                    )),
                    "{rule}"
                );
                assert_eq!(steps, 0, "{sampler}: no step may run");
            }
            (other, _) => panic!("{sampler}: unexpected {:?}", other.map(|g| g.images.len())),
        }
    }
    let err = pipeline
        .txt2img(&small(1), RunOptions::default(), &mut |_: &StepEvent<
            '_,
        >| {
            ControlFlow::Continue(())
        })
        .expect_err("Euler cannot run a sample model");
    assert!(
        err.to_string()
            .contains("prediction_type \"sample\" is not supported by sampler \"Euler\""),
        "{err}"
    );
}
