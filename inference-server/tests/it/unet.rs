//! The UNet against diffusers' `UNet2DConditionModel` (goldens from
//! `tests/parity/unet_goldens.py`) on the tiny SD1- and SD2-shaped test models, from both
//! checkpoint layouts, with f32 and f16 weights; plus its error paths and the timestep embedding.
//!
//! Tolerance: every element within 1e-4 · max(1, |reference|). Both sides compute in f32 (f16
//! weights are widened exactly on both sides, and the goldens come from the same rounded
//! weights), so the only differences are summation order in convs, GEMMs, group norms and the
//! tiled online-softmax attention, and libm vs PyTorch's sin/cos/exp/erf: each ~1e-6 relative,
//! compounded over ~20 layers of depth with residuals, which stays well under 1e-4 here.

use std::path::Path;

use inference_server::engine::{Device, Tensor};
use inference_server::model::ModelError;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::unet::{UNet, sinusoidal_embedding};
use inference_server::model::weights::{Checkpoint, Layout, StoredDType, Variant};

const TOLERANCE: f32 = 1e-4;

struct Golden {
    latents: (Vec<f32>, Vec<usize>),
    timesteps: Vec<f32>,
    context: (Vec<f32>, Vec<usize>),
    temb_sin: Vec<f32>,
    sample: Vec<f32>,
    sample_t1: Vec<f32>,
    latents_odd: (Vec<f32>, Vec<usize>),
    sample_odd: Vec<f32>,
}

fn golden(variant: &str, dtype: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/goldens/unet_{variant}_{dtype}.safetensors"));
    let bytes = std::fs::read(&path).expect("golden file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden tensors");
    let get = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(name).expect(name);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("f32")))
            .collect();
        (v, t.shape().to_vec())
    };
    Golden {
        latents: get("latents"),
        timesteps: get("timesteps").0,
        context: get("context"),
        temb_sin: get("temb_sin").0,
        sample: get("sample").0,
        sample_t1: get("sample_t1").0,
        latents_odd: get("latents_odd"),
        sample_odd: get("sample_odd").0,
    }
}

/// Largest `|got - want| / max(1, |want|)`, asserted to be within `tol`.
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst || err.is_nan() {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= tol,
        "{what}: element {at} is {} vs {} (relative {worst:e})",
        got[at],
        want[at]
    );
    worst
}

fn unet(path: &Path, device: &Device) -> UNet {
    let checkpoint = Checkpoint::open(path).expect("checkpoint opens");
    let (config, weights) = &checkpoint.unet;
    UNet::load(config, weights, device).expect("unet loads")
}

fn tensor((data, shape): &(Vec<f32>, Vec<usize>), device: &Device) -> Tensor {
    Tensor::from_vec(data.clone(), shape.as_slice(), device).expect("tensor")
}

fn names(variant: Variant, dtype: StoredDType) -> (&'static str, &'static str) {
    let v = if variant == Variant::Sd2 {
        "sd2"
    } else {
        "sd1"
    };
    (
        v,
        if dtype == StoredDType::F16 {
            "f16"
        } else {
            "f32"
        },
    )
}

/// Both layouts against the golden, and against each other bit for bit.
fn matches_reference(variant: Variant, dtype: StoredDType, device: &Device) {
    let (name, stored) = names(variant, dtype);
    let golden = golden(name, stored);
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = write_test_model(
        &dir.path().join("folder"),
        variant,
        Layout::Diffusers,
        dtype,
    )
    .expect("folder");
    let single = write_test_model(
        &dir.path().join("m.safetensors"),
        variant,
        Layout::SingleFile,
        dtype,
    )
    .expect("file");
    let (latents, context) = (
        tensor(&golden.latents, device),
        tensor(&golden.context, device),
    );
    let mut outputs = Vec::new();
    for path in [&folder, &single] {
        let unet = unet(path, device);
        let what = format!("{name} {stored} {}", path.display());
        let out = unet
            .forward(&latents, &golden.timesteps, &context)
            .expect("forward");
        assert_eq!(
            out.dims(),
            golden.latents.1.as_slice(),
            "{what}: output shape"
        );
        let out = out.to_vec_f32().expect("read");
        let worst = assert_close(&out, &golden.sample, TOLERANCE, &format!("{what} sample"));
        let one_t = unet
            .forward(&latents, &[500.0], &context)
            .expect("forward")
            .to_vec_f32()
            .expect("read");
        assert_close(
            &one_t,
            &golden.sample_t1,
            TOLERANCE,
            &format!("{what} single timestep"),
        );
        let first_context = context.narrow(0, 0, 1).expect("narrow");
        let odd = unet
            .forward(
                &tensor(&golden.latents_odd, device),
                &[250.0],
                &first_context,
            )
            .expect("forward odd");
        assert_eq!(
            odd.dims(),
            golden.latents_odd.1.as_slice(),
            "{what}: odd output shape"
        );
        let odd = odd.to_vec_f32().expect("read");
        assert_close(
            &odd,
            &golden.sample_odd,
            TOLERANCE,
            &format!("{what} odd-sized latents"),
        );
        eprintln!("{what}: worst relative error {worst:e}");
        outputs.push((out, one_t, odd));
    }
    assert!(
        outputs[0] == outputs[1],
        "{name} {stored}: folder and single file give different predictions"
    );
}

test_device!(sd1_f32_matches_diffusers);
fn sd1_f32_matches_diffusers(device: &Device) {
    matches_reference(Variant::Sd1, StoredDType::F32, device);
}

test_device!(sd1_f16_matches_diffusers);
fn sd1_f16_matches_diffusers(device: &Device) {
    matches_reference(Variant::Sd1, StoredDType::F16, device);
}

test_device!(sd2_f32_matches_diffusers);
fn sd2_f32_matches_diffusers(device: &Device) {
    matches_reference(Variant::Sd2, StoredDType::F32, device);
}

test_device!(sd2_f16_matches_diffusers);
fn sd2_f16_matches_diffusers(device: &Device) {
    matches_reference(Variant::Sd2, StoredDType::F16, device);
}

#[test]
fn timestep_embedding_by_hand() {
    // dim 4: half 2, frequencies exp(-ln(10000) · i / (2 - shift)).
    let f1 = (-(10000f64.ln()) / 2.0).exp(); // 0.01
    let e = sinusoidal_embedding(&[1.0, 0.0], 4, true, 0.0);
    let want = [
        1f64.cos(),
        f1.cos(),
        1f64.sin(),
        f1.sin(),
        1.0,
        1.0,
        0.0,
        0.0,
    ];
    for (g, w) in e.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{e:?} vs {want:?}");
    }
    // flip_sin_to_cos false gives [sin, cos]; shift 1 makes the second frequency 1e-4; an odd
    // dim pads one zero.
    let e = sinusoidal_embedding(&[3.0], 5, false, 1.0);
    let want = [3f64.sin(), 3e-4f64.sin(), 3f64.cos(), 3e-4f64.cos(), 0.0];
    for (g, w) in e.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{e:?} vs {want:?}");
    }
}

#[test]
fn timestep_embedding_matches_diffusers() {
    for variant in ["sd1", "sd2"] {
        let g = golden(variant, "f32");
        let dim = g.temb_sin.len() / g.timesteps.len();
        let ours = sinusoidal_embedding(&g.timesteps, dim, true, 0.0);
        // Measured: within 6e-8 (one f32 rounding); 1e-6 leaves room for another libm.
        let worst = assert_close(&ours, &g.temb_sin, 1e-6, &format!("{variant} time_proj"));
        eprintln!("{variant} time_proj: worst {worst:e}");
    }
}

fn sd1_folder() -> (tempfile::TempDir, Checkpoint) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_test_model(
        &dir.path().join("m"),
        Variant::Sd1,
        Layout::Diffusers,
        StoredDType::F32,
    )
    .expect("model");
    let checkpoint = Checkpoint::open(&path).expect("opens");
    (dir, checkpoint)
}

test_device!(wrong_shaped_tensor_is_named);
fn wrong_shaped_tensor_is_named(device: &Device) {
    let (_dir, checkpoint) = sd1_folder();
    let (config, weights) = &checkpoint.unet;
    let mut wider_text = config.clone();
    wider_text.cross_attention_dim = 48;
    let err = UNet::load(&wider_text, weights, device).expect_err("context width does not fit");
    let msg = err.to_string();
    assert!(
        msg.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
        "{msg}"
    );
    assert!(msg.contains("48"), "{msg}");
}

test_device!(wrong_shaped_tensor_in_a_file_is_named);
fn wrong_shaped_tensor_in_a_file_is_named(device: &Device) {
    use inference_server::model::testmodel::{param_values, test_configs};
    use inference_server::model::weights::{
        OwnedTensor, SafetensorsFile, WeightSet, unet_params, write_safetensors,
    };
    let (_, config, _) = test_configs(Variant::Sd2);
    let bad = "mid_block.attentions.0.proj_in.weight";
    let tensors: Vec<OwnedTensor> = unet_params(&config)
        .into_iter()
        .map(|(name, mut shape)| {
            if name == bad {
                shape = vec![64, 63];
            }
            let values = param_values(&name, &shape);
            OwnedTensor::from_f32(name, shape, &values, StoredDType::F16)
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("unet.safetensors");
    write_safetensors(&path, &tensors, &Default::default()).expect("written");
    let weights = WeightSet::from_files(&[SafetensorsFile::open(&path).expect("opens")]);
    let msg = UNet::load(&config, &weights, device)
        .expect_err("wrong shape")
        .to_string();
    assert!(msg.contains(bad) && msg.contains("63"), "{msg}");
}

#[test]
fn unet_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<UNet>();
}

test_device!(batch_elements_are_independent);
fn batch_elements_are_independent(device: &Device) {
    // The server batches requests: one element alone must predict what it does in a batch.
    let g = golden("sd1", "f32");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_test_model(
        &dir.path().join("m"),
        Variant::Sd1,
        Layout::Diffusers,
        StoredDType::F32,
    )
    .expect("model");
    let unet = unet(&path, device);
    assert_eq!(
        (unet.in_channels(), unet.out_channels(), unet.context_dim()),
        (4, 4, 32)
    );
    let (latents, context) = (tensor(&g.latents, device), tensor(&g.context, device));
    let both = unet
        .forward(&latents, &g.timesteps, &context)
        .expect("batch")
        .to_vec_f32()
        .expect("read");
    let n = both.len() / 2;
    for i in 0..2 {
        let one = unet
            .forward(
                &latents.narrow(0, i, 1).expect("narrow"),
                &g.timesteps[i..=i],
                &context.narrow(0, i, 1).expect("narrow"),
            )
            .expect("single")
            .to_vec_f32()
            .expect("read");
        assert_close(
            &one,
            &both[i * n..(i + 1) * n],
            1e-5,
            &format!("element {i} alone"),
        );
    }
}

test_device!(bad_configs_name_the_field);
fn bad_configs_name_the_field(device: &Device) {
    let (_dir, checkpoint) = sd1_folder();
    let (config, weights) = &checkpoint.unet;
    let field = |r: Result<UNet, ModelError>| match r {
        Err(ModelError::Input { field, rule }) => (field, rule),
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, got a UNet"),
    };
    let mut c = config.clone();
    c.down_block_types[1] = "SimpleCrossAttnDownBlock2D".into();
    let (f, rule) = field(UNet::load(&c, weights, device));
    assert_eq!(f, "unet.config.down_block_types");
    assert!(rule.contains("SimpleCrossAttnDownBlock2D"), "{rule}");
    let mut c = config.clone();
    c.up_block_types[0] = "AttnUpBlock2D".into();
    assert_eq!(
        field(UNet::load(&c, weights, device)).0,
        "unet.config.up_block_types"
    );
    let mut c = config.clone();
    c.up_block_types.pop();
    assert_eq!(
        field(UNet::load(&c, weights, device)).0,
        "unet.config.up_block_types"
    );
    let mut c = config.clone();
    c.block_out_channels.clear();
    assert_eq!(
        field(UNet::load(&c, weights, device)).0,
        "unet.config.block_out_channels"
    );
    let mut c = config.clone();
    c.addition_embed_type = Some("text_time".into());
    assert_eq!(
        field(UNet::load(&c, weights, device)).0,
        "unet.config.addition_embed_type"
    );
}

test_device!(bad_inputs_name_the_field);
fn bad_inputs_name_the_field(device: &Device) {
    let (_dir, checkpoint) = sd1_folder();
    let (config, weights) = &checkpoint.unet;
    let unet = UNet::load(config, weights, device).expect("loads");
    let dev = device;
    let latents =
        Tensor::zeros((2, 4, 8, 8), inference_server::engine::DType::F32, dev).expect("zeros");
    let context =
        Tensor::zeros((2, 77, 32), inference_server::engine::DType::F32, dev).expect("zeros");
    let field = |r: Result<Tensor, ModelError>| match r {
        Err(ModelError::Input { field, .. }) => field,
        Err(other) => panic!("expected an input error, got {other}"),
        Ok(t) => panic!("expected an input error, got {:?}", t.dims()),
    };
    assert_eq!(
        field(unet.forward(&latents, &[1.0, 2.0, 3.0], &context)),
        "timesteps"
    );
    assert_eq!(field(unet.forward(&latents, &[], &context)), "timesteps");
    assert_eq!(
        field(unet.forward(&latents, &[f32::NAN], &context)),
        "timesteps"
    );
    let empty =
        Tensor::zeros((2, 4, 0, 8), inference_server::engine::DType::F32, dev).expect("zeros");
    assert_eq!(field(unet.forward(&empty, &[1.0], &context)), "latents");
    let three =
        Tensor::zeros((2, 3, 8, 8), inference_server::engine::DType::F32, dev).expect("zeros");
    assert_eq!(field(unet.forward(&three, &[1.0], &context)), "latents");
    assert_eq!(
        field(unet.forward(&latents.reshape((8, 64)).expect("r"), &[1.0], &context)),
        "latents"
    );
    let one_ctx = context.narrow(0, 0, 1).expect("narrow");
    assert_eq!(field(unet.forward(&latents, &[1.0], &one_ctx)), "context");
    let wide =
        Tensor::zeros((2, 77, 48), inference_server::engine::DType::F32, dev).expect("zeros");
    assert_eq!(field(unet.forward(&latents, &[1.0], &wide)), "context");
}

test_device!(full_size_sd15, #[ignore = "full-size: 1.7 GB of weights, run in release"]);
/// Full SD 1.5 shapes (860M parameters, f16, random N(0, 1/fan_in) weights), ignored by default:
/// run in release with `SDSERVE_UNET_FULL_DIR=DIR cargo test --release -p inference-server
/// --test it unet::full_size_sd15 -- --ignored --nocapture`. It writes `DIR/unet/` (config +
/// weights, 1.7 GB) if missing and times one forward of batch 2 at 64×64 latents (512×512 images). When
/// `unet_goldens.py --full DIR` has written `DIR/full_golden.safetensors`, it also checks the
/// prediction for its `[1, 4, 32, 32]` latents within the same 1e-4 · max(1, |ref|) as the tiny
/// models (measured 1.0e-5 on 2026-11-23, despite 1280-wide GEMMs and 1024-token attention).
fn full_size_sd15(device: &Device) {
    use inference_server::model::testmodel::{param_values, published_configs};
    use inference_server::model::weights::{
        OwnedTensor, SafetensorsFile, WeightSet, unet_params, write_safetensors,
    };
    let Some(dir) = std::env::var_os("SDSERVE_UNET_FULL_DIR").map(std::path::PathBuf::from) else {
        eprintln!("set SDSERVE_UNET_FULL_DIR to run");
        return;
    };
    let (_, config, _) = published_configs(Variant::Sd1);
    let unet_dir = dir.join("unet");
    let weights_path = unet_dir.join("diffusion_pytorch_model.safetensors");
    if !weights_path.exists() {
        std::fs::create_dir_all(&unet_dir).expect("mkdir");
        let mut json = serde_json::to_value(&config).expect("config json");
        json["_class_name"] = "UNet2DConditionModel".into();
        std::fs::write(unet_dir.join("config.json"), json.to_string()).expect("config written");
        let tensors: Vec<OwnedTensor> = unet_params(&config)
            .into_iter()
            .map(|(name, shape)| {
                let values = param_values(&name, &shape);
                OwnedTensor::from_f32(name, shape, &values, StoredDType::F16)
            })
            .collect();
        write_safetensors(&weights_path, &tensors, &Default::default()).expect("weights written");
    }
    let file = SafetensorsFile::open(&weights_path).expect("weights open");
    let weights = WeightSet::from_files(&[file]);
    let started = std::time::Instant::now();
    let unet = UNet::load(&config, &weights, device).expect("loads");
    eprintln!("load: {:.2?}", started.elapsed());
    let dev = device;
    // Standard normals: a 2-D "weight" with fan-in 1.
    let normals = |name: &str, n: usize| param_values(name, &[n, 1]);
    let latents = Tensor::from_vec(normals("latents", 2 * 4 * 64 * 64), (2, 4, 64, 64), dev)
        .expect("latents");
    let context =
        Tensor::from_vec(normals("context", 2 * 77 * 768), (2, 77, 768), dev).expect("context");
    let started = std::time::Instant::now();
    let out = unet
        .forward(&latents, &[999.0, 1.0], &context)
        .expect("forward");
    eprintln!("forward batch 2 at 64x64: {:.2?}", started.elapsed());
    assert!(
        out.to_vec_f32()
            .expect("read")
            .iter()
            .all(|v| v.is_finite())
    );

    let golden_path = dir.join("full_golden.safetensors");
    let Ok(bytes) = std::fs::read(&golden_path) else {
        eprintln!(
            "no {} (run unet_goldens.py --full); parity not checked",
            golden_path.display()
        );
        return;
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden tensors");
    let get = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(name).expect(name);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("f32")))
            .collect();
        (v, t.shape().to_vec())
    };
    let started = std::time::Instant::now();
    let out = unet
        .forward(
            &tensor(&get("latents"), device),
            &get("timesteps").0,
            &tensor(&get("context"), device),
        )
        .expect("forward");
    eprintln!("forward batch 1 at 32x32: {:.2?}", started.elapsed());
    let worst = assert_close(
        &out.to_vec_f32().expect("read"),
        &get("sample").0,
        TOLERANCE,
        "full-size SD 1.5 UNet",
    );
    eprintln!("full-size parity: worst relative error {worst:e}");
}
