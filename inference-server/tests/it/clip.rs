//! The CLIP text encoder against transformers' `CLIPTextModel` (goldens from
//! `tests/parity/make_goldens.py`) on the tiny SD1- and SD2-shaped test models, from both
//! checkpoint layouts, with f32 and f16 weights, and prompts through each layout's tokenizer
//! (the folder's `tokenizer/` files, the built-in vocabulary for single files).
//!
//! Tolerance: every element within 1e-4 · max(1, |reference|). Both sides compute in f32 (f16
//! weights are widened exactly on both sides), so the only differences are summation order in
//! GEMMs and attention and the erf/exp approximations: ~1e-6 on these widths, with room for
//! the 77-token softmax and two layer norms per layer.

use std::path::Path;

use inference_server::engine::Device;
use inference_server::model::ModelError;
use inference_server::model::clip::ClipTextEncoder;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::text::TextConditioner;
use inference_server::model::tokenizer::{SD1_PAD_ID, SD2_PAD_ID, Tokenizer};
use inference_server::model::weights::{Checkpoint, Layout, StoredDType, Variant};

const TOLERANCE: f32 = 1e-4;

struct Golden {
    prompts: Vec<String>,
    ids: Vec<Vec<u32>>,
    last: Vec<f32>,
    penultimate: Vec<f32>,
}

fn golden(variant: &str, dtype: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/goldens/clip_{variant}_{dtype}.safetensors"));
    let bytes = std::fs::read(&path).expect("golden file");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("golden header");
    let prompts = serde_json::from_str(&meta.metadata().as_ref().expect("metadata")["prompts"])
        .expect("prompts list");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden tensors");
    let ids: Vec<u32> = st
        .tensor("input_ids")
        .expect("input_ids")
        .data()
        .chunks_exact(8)
        .map(|c| {
            u32::try_from(i64::from_le_bytes(c.try_into().expect("i64"))).expect("id fits u32")
        })
        .collect();
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .expect(name)
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("f32")))
            .collect()
    };
    Golden {
        prompts,
        ids: ids.chunks(77).map(<[u32]>::to_vec).collect(),
        last: f32s("last_hidden_state"),
        penultimate: f32s("penultimate"),
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

fn encoder(path: &Path, device: &Device) -> ClipTextEncoder {
    let checkpoint = Checkpoint::open(path).expect("checkpoint opens");
    let (config, weights) = &checkpoint.text_encoder;
    ClipTextEncoder::load(config, weights, device).expect("encoder loads")
}

/// Both layouts against the golden, and against each other bit for bit.
fn matches_reference(variant: Variant, dtype: StoredDType, device: &Device) {
    let (name, pad) = match variant {
        Variant::Sd1 => ("sd1", SD1_PAD_ID),
        Variant::Sd2 => ("sd2", SD2_PAD_ID),
    };
    let stored = if dtype == StoredDType::F16 {
        "f16"
    } else {
        "f32"
    };
    let golden = golden(name, stored);
    for (prompt, ids) in golden.prompts.iter().zip(&golden.ids) {
        assert_eq!(
            &Tokenizer::builtin().encode_padded(prompt, pad),
            ids,
            "tokenizer: {prompt:?}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = write_test_model(
        &dir.path().join("folder"),
        variant,
        Layout::Diffusers,
        dtype,
    )
    .expect("folder written");
    let single = write_test_model(
        &dir.path().join("model.safetensors"),
        variant,
        Layout::SingleFile,
        dtype,
    )
    .expect("single file written");
    let mut outputs = Vec::new();
    for path in [&folder, &single] {
        let encoder = encoder(path, device);
        let last = encoder
            .forward(&golden.ids, 1)
            .expect("forward")
            .to_vec_f32()
            .expect("read");
        let penultimate = encoder
            .forward(&golden.ids, 2)
            .expect("forward")
            .to_vec_f32()
            .expect("read");
        let what = format!("{name} {stored} {}", path.display());
        assert_close(&last, &golden.last, &format!("{what} last_hidden_state"));
        assert_close(
            &penultimate,
            &golden.penultimate,
            &format!("{what} clip skip 2"),
        );
        let conditioner = TextConditioner::load(&Checkpoint::open(path).expect("opens"), device)
            .expect("tokenizer and encoder load");
        let prompts: Vec<&str> = golden.prompts.iter().map(String::as_str).collect();
        let from_text = conditioner
            .encode(&prompts, 1)
            .expect("encode")
            .to_vec_f32()
            .expect("read");
        assert!(
            from_text == last,
            "{what}: prompts through the checkpoint's tokenizer differ from the golden ids"
        );
        outputs.push((last, penultimate));
    }
    assert!(
        outputs[0] == outputs[1],
        "{name}: folder and single file give different embeddings"
    );
}

test_device!(sd1_f32_matches_transformers);
fn sd1_f32_matches_transformers(device: &Device) {
    matches_reference(Variant::Sd1, StoredDType::F32, device);
}

test_device!(sd1_f16_matches_transformers);
fn sd1_f16_matches_transformers(device: &Device) {
    matches_reference(Variant::Sd1, StoredDType::F16, device);
}

test_device!(sd2_f32_matches_transformers);
fn sd2_f32_matches_transformers(device: &Device) {
    matches_reference(Variant::Sd2, StoredDType::F32, device);
}

test_device!(sd2_f16_matches_transformers);
fn sd2_f16_matches_transformers(device: &Device) {
    matches_reference(Variant::Sd2, StoredDType::F16, device);
}

test_device!(bad_inputs_name_the_field);
fn bad_inputs_name_the_field(device: &Device) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_test_model(
        &dir.path().join("m"),
        Variant::Sd1,
        Layout::Diffusers,
        StoredDType::F32,
    )
    .expect("written");
    let encoder = encoder(&path, device);
    let ids = vec![Tokenizer::builtin().encode_padded("a cat", SD1_PAD_ID)];
    let field = |r: Result<_, ModelError>| match r {
        Err(ModelError::Input { field, .. }) => field,
        other => panic!(
            "expected an input error, got {:?}",
            other.map(|t: inference_server::engine::Tensor| t.dims().to_vec())
        ),
    };
    assert_eq!(field(encoder.forward(&ids, 0)), "clip_skip");
    assert_eq!(
        field(encoder.forward(&ids, encoder.num_layers() + 1)),
        "clip_skip"
    );
    assert_eq!(field(encoder.forward(&[vec![1; 78]], 1)), "input_ids");
    assert_eq!(
        field(encoder.forward(&[vec![1; 77], vec![1; 76]], 1)),
        "input_ids"
    );
    assert_eq!(field(encoder.forward(&[], 1)), "input_ids");
    let err = encoder
        .forward(&[vec![49408; 77]], 1)
        .expect_err("id past the vocabulary");
    assert!(err.to_string().contains("49408"), "{err}");
}
