//! The VAE against diffusers' `AutoencoderKL` (goldens from `tests/parity/vae_goldens.py`) on
//! the tiny SD1- and SD2-shaped test models, from both checkpoint layouts, with f32 and f16
//! weights: `decode` of fixed latents and `encode` (mean, logvar) of a fixed image.
//!
//! Tolerance: every element within 1e-4 · max(1, |reference|). Both sides compute in f32 (f16
//! weights are widened exactly on both sides), so only summation order in convolutions, group
//! norms and attention differs; over ~20 conv layers that stays around 1e-6 relative on these
//! widths, and outputs are O(1), so 1e-4 leaves a wide margin while still catching any wrong
//! layer, key, epsilon or padding (those move outputs by 1e-2 or more). Measured worst: ~5e-6.

use std::collections::BTreeMap;
use std::path::Path;

use inference_server::engine::{Device, Tensor};
use inference_server::model::ModelError;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::vae::Vae;
use inference_server::model::weights::{
    Checkpoint, Layout, OwnedTensor, SafetensorsFile, StoredDType, Variant, write_safetensors,
};

const TOLERANCE: f32 = 1e-4;

struct Golden {
    latents: Tensor,
    decoded: Vec<f32>,
    image: Tensor,
    mean: Vec<f32>,
    logvar: Vec<f32>,
    scaling_factor: f32,
}

fn golden(variant: &str, dtype: &str, device: &Device) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/goldens/vae_{variant}_{dtype}.safetensors"));
    let bytes = std::fs::read(&path).expect("golden file");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("golden header");
    let scaling_factor = meta.metadata().as_ref().expect("metadata")["scaling_factor"]
        .parse()
        .expect("factor");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden tensors");
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .expect(name)
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("f32")))
            .collect()
    };
    let tensor = |name: &str| {
        Tensor::from_vec(f32s(name), st.tensor(name).expect(name).shape(), device).expect(name)
    };
    Golden {
        latents: tensor("latents"),
        decoded: f32s("decoded"),
        image: tensor("image"),
        mean: f32s("mean"),
        logvar: f32s("logvar"),
        scaling_factor,
    }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst || err.is_nan() {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= TOLERANCE,
        "{what}: element {at} is {} vs {} (relative {worst:e})",
        got[at],
        want[at]
    );
}

fn vae(path: &Path, device: &Device) -> Vae {
    let checkpoint = Checkpoint::open(path).expect("checkpoint opens");
    let (config, weights) = &checkpoint.vae;
    Vae::load(config, weights, device).expect("vae loads")
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().expect("read")
}

/// Both layouts against the golden, and against each other bit for bit.
fn matches_reference(variant: Variant, dtype: StoredDType, device: &Device) {
    let name = if variant == Variant::Sd1 {
        "sd1"
    } else {
        "sd2"
    };
    let stored = if dtype == StoredDType::F16 {
        "f16"
    } else {
        "f32"
    };
    let golden = golden(name, stored, device);
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = write_test_model(
        &dir.path().join("folder"),
        variant,
        Layout::Diffusers,
        dtype,
    )
    .expect("folder");
    let single = write_test_model(
        &dir.path().join("model.safetensors"),
        variant,
        Layout::SingleFile,
        dtype,
    )
    .expect("single file");
    let mut outputs = Vec::new();
    for path in [&folder, &single] {
        let vae = vae(path, device);
        assert_eq!(vae.scaling_factor(), golden.scaling_factor);
        let what = format!("{name} {stored} {}", path.display());
        let decoded = vae.decode(&golden.latents).expect("decode");
        assert_eq!(decoded.dims(), &[1, 3, 64, 64]);
        assert_close(&read(&decoded), &golden.decoded, &format!("{what} decode"));
        let scaled = golden
            .latents
            .affine(golden.scaling_factor, 0.0)
            .expect("scale");
        let from_scaled = vae.decode_scaled(&scaled).expect("decode_scaled");
        assert_close(
            &read(&from_scaled),
            &golden.decoded,
            &format!("{what} decode_scaled"),
        );
        let (mean, logvar) = vae.encode(&golden.image).expect("encode");
        assert_eq!(mean.dims(), &[1, 4, 8, 8]);
        assert_close(&read(&mean), &golden.mean, &format!("{what} mean"));
        assert_close(&read(&logvar), &golden.logvar, &format!("{what} logvar"));
        outputs.push((read(&decoded), read(&mean), read(&logvar)));
    }
    assert!(
        outputs[0] == outputs[1],
        "{name} {stored}: folder and single file give different outputs"
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

test_device!(wrong_tensor_shape_is_named);
fn wrong_tensor_shape_is_named(device: &Device) {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = write_test_model(
        &dir.path().join("m"),
        Variant::Sd1,
        Layout::Diffusers,
        StoredDType::F32,
    )
    .expect("model");
    let file = folder.join("vae/diffusion_pytorch_model.safetensors");
    let bad = "decoder.up_blocks.1.resnets.0.conv1.weight";
    let tensors: Vec<OwnedTensor> = {
        let st = SafetensorsFile::open(&file).expect("vae file");
        st.names()
            .map(|n| {
                let t = st.tensor(n).expect("tensor");
                let mut shape = t.shape.clone();
                if n == bad {
                    shape = vec![shape[0], shape[1] * 9, 1, 1];
                }
                OwnedTensor {
                    name: n.to_string(),
                    dtype: t.dtype,
                    shape,
                    data: t.data.bytes().to_vec(),
                }
            })
            .collect()
    };
    std::fs::remove_file(&file).expect("remove");
    write_safetensors(&file, &tensors, &BTreeMap::new()).expect("rewrite");
    let err = Checkpoint::open(&folder)
        .map_err(ModelError::from)
        .and_then(|c| Vae::load(&c.vae.0, &c.vae.1, device).map(drop))
        .expect_err("a mis-shaped tensor must fail");
    assert!(err.to_string().contains(bad), "{err}");
}

test_device!(bad_inputs_name_the_field);
fn bad_inputs_name_the_field(device: &Device) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vae = vae(
        &write_test_model(
            &dir.path().join("m"),
            Variant::Sd1,
            Layout::Diffusers,
            StoredDType::F32,
        )
        .expect("model"),
        device,
    );
    let field = |r: Result<Tensor, ModelError>| match r {
        Err(ModelError::Input { field, .. }) => field,
        other => panic!("expected an input error, got {other:?}"),
    };
    let zeros = |dims: &[usize]| Tensor::full(0.0, dims, device).expect("zeros");
    assert_eq!(field(vae.decode(&zeros(&[1, 3, 8, 8]))), "latents");
    assert_eq!(field(vae.decode_scaled(&zeros(&[4, 8, 8]))), "latents");
    assert_eq!(
        field(vae.encode(&zeros(&[1, 4, 64, 64])).map(|(m, _)| m)),
        "image"
    );
    assert_eq!(
        field(vae.encode(&zeros(&[1, 3, 0, 64])).map(|(m, _)| m)),
        "image"
    );
}
