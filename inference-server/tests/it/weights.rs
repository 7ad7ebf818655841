//! Checkpoint loading: both layouts of the tiny test models, zero-copy mapping, and the errors
//! for truncated files, wrong shapes, missing tensors and bad configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use inference_server::model::testmodel::{
    published_configs, test_configs, write_header_only_single_file, write_test_model,
};
use inference_server::model::tokenizer::{SD1_PAD_ID, SD2_PAD_ID, Tokenizer};
use inference_server::model::weights::{
    Checkpoint, Layout, OwnedTensor, Param, PerBlock, SafetensorsFile, StoredDType, Variant,
    WeightSet, WeightsError, clip_params, unet_params, vae_params, write_safetensors,
};
use inference_server::sampling::SchedulerConfig;

use Layout::{Diffusers, SingleFile};
use StoredDType::{BF16, F16, F32};
use Variant::{Sd1, Sd2};

fn write(dir: &Path, name: &str, variant: Variant, layout: Layout, dtype: StoredDType) -> PathBuf {
    write_test_model(&dir.join(name), variant, layout, dtype).expect("test model is written")
}

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_same(a: &WeightSet, b: &WeightSet, params: &[Param]) {
    let names_a: Vec<&str> = a.names().collect();
    let names_b: Vec<&str> = b.names().collect();
    assert_eq!(names_a, names_b);
    let mut expected: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names_a, expected);
    a.check(params).expect("folder has every parameter");
    b.check(params).expect("single file has every parameter");
    for (name, shape) in params {
        let (ta, tb) = (
            a.get(name, shape).expect("present"),
            b.get(name, shape).expect("present"),
        );
        assert_eq!(ta.dtype, tb.dtype, "{name}");
        assert!(
            ta.bytes() == tb.bytes(),
            "{name}: bytes differ between layouts"
        );
    }
}

fn both_layouts_identical(variant: Variant, dtype: StoredDType) {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = open(&write(dir.path(), "folder", variant, Diffusers, dtype));
    let single = open(&write(
        dir.path(),
        "model.safetensors",
        variant,
        SingleFile,
        dtype,
    ));
    assert_eq!((folder.variant, single.variant), (variant, variant));
    assert_eq!((folder.layout, single.layout), (Diffusers, SingleFile));
    assert!(folder.tokenizer_dir.as_deref().is_some_and(Path::is_dir));
    assert_eq!(single.tokenizer_dir, None);
    assert_eq!(folder.scheduler, SchedulerConfig::default());
    assert_eq!(single.scheduler, SchedulerConfig::default());
    let (clip, unet, vae) = test_configs(variant);
    assert_eq!(folder.text_encoder.0, clip);
    assert_eq!(single.text_encoder.0, clip);
    assert_eq!((&folder.unet.0, &single.unet.0), (&unet, &unet));
    assert_eq!((&folder.vae.0, &single.vae.0), (&vae, &vae));
    assert_same(
        &folder.text_encoder.1,
        &single.text_encoder.1,
        &clip_params(&clip),
    );
    assert_same(&folder.unet.1, &single.unet.1, &unet_params(&unet));
    assert_same(&folder.vae.1, &single.vae.1, &vae_params(&vae));
}

#[test]
fn sd1_f32_layouts_load_identical_tensors() {
    both_layouts_identical(Sd1, F32);
}

#[test]
fn sd2_f32_layouts_load_identical_tensors() {
    both_layouts_identical(Sd2, F32);
}

#[test]
fn sd2_f16_layouts_load_identical_tensors() {
    both_layouts_identical(Sd2, F16);
}

#[test]
fn f16_tensors_are_borrowed_from_the_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let single = open(&write(dir.path(), "m.safetensors", Sd2, SingleFile, F16));
    let set = &single.text_encoder.1;
    let mut starts = Vec::new();
    for proj in ["q_proj", "k_proj", "v_proj"] {
        let t = set
            .get(
                &format!("text_model.encoder.layers.1.self_attn.{proj}.weight"),
                &[32, 32],
            )
            .expect("split");
        assert_eq!(t.dtype, F16);
        let map = t.data.mapping();
        let (base, ptr) = (map.as_ptr() as usize, t.bytes().as_ptr() as usize);
        assert!(
            ptr >= base && ptr + t.bytes().len() <= base + map.len(),
            "{proj} lies outside the mmap"
        );
        assert_eq!(ptr - base, t.data.range().start);
        starts.push(t.data.range().start);
    }
    assert_eq!(
        starts[1] - starts[0],
        32 * 32 * 2,
        "q, k, v are consecutive rows of in_proj_weight"
    );
    assert_eq!(starts[2] - starts[1], 32 * 32 * 2);
    let attn = single
        .vae
        .1
        .get("decoder.mid_block.attentions.0.to_q.weight", &[64, 64])
        .expect("reshaped 1x1 conv");
    let conv = SafetensorsFile::open(&single.path)
        .expect("opens")
        .tensor("first_stage_model.decoder.mid.attn_1.q.weight");
    let conv = conv.expect("present");
    assert_eq!(conv.shape, vec![64, 64, 1, 1]);
    assert_eq!(
        attn.data.range(),
        conv.data.range(),
        "the reshape keeps the same bytes"
    );
}

/// A cast model releases the mapped pages it copied from (`MappedBytes::release_pages`); the
/// mapping must still read the file's bytes afterwards, for this tensor and its neighbours.
#[test]
fn released_pages_read_back_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pages.safetensors");
    let values: Vec<f32> = (0..3 * 70_000).map(|i| (i as f32 * 0.37).sin()).collect();
    let tensors: Vec<OwnedTensor> = (0..3)
        .map(|t| {
            let v = &values[t * 70_000..(t + 1) * 70_000];
            OwnedTensor::from_f32(format!("t{t}"), vec![70_000], v, F32)
        })
        .collect();
    write_safetensors(&path, &tensors, &BTreeMap::new()).expect("written");
    let file = SafetensorsFile::open(&path).expect("opens");
    let raw: Vec<_> = (0..3)
        .map(|t| file.tensor(&format!("t{t}")).expect("present"))
        .collect();
    let before: Vec<Vec<u8>> = raw.iter().map(|t| t.bytes().to_vec()).collect();
    raw[1].data.release_pages();
    for (t, want) in raw.iter().zip(&before) {
        assert_eq!(
            t.bytes(),
            &want[..],
            "{} changed after release_pages",
            t.name
        );
    }
}

#[test]
fn truncated_file_names_the_first_tensor_that_does_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "m.safetensors", Sd1, SingleFile, F16);
    let file = SafetensorsFile::open(&path).expect("opens");
    let mut by_offset: Vec<(usize, String)> = file
        .names()
        .map(|n| {
            (
                file.tensor(n).expect("f16").data.range().start,
                n.to_string(),
            )
        })
        .collect();
    by_offset.sort();
    let (cut_at, victim) = by_offset[by_offset.len() / 2].clone();
    drop(file);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for truncation");
    f.set_len(cut_at as u64 + 1).expect("truncate");
    for err in [
        SafetensorsFile::open(&path).expect_err("truncated"),
        Checkpoint::open(&path).expect_err("truncated"),
    ] {
        let msg = err.to_string();
        assert!(
            matches!(&err, WeightsError::Truncated { tensor, .. } if *tensor == victim),
            "{msg}"
        );
        assert!(msg.contains(&victim), "{msg}");
    }
}

/// Every tensor of a safetensors file (copied) and its metadata.
fn read_all(path: &Path) -> (Vec<OwnedTensor>, BTreeMap<String, String>) {
    let file = SafetensorsFile::open(path).expect("opens");
    let tensors = file
        .names()
        .map(|n| {
            let t = file.tensor(n).expect("supported dtype");
            let data = t.bytes().to_vec();
            OwnedTensor {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                data,
            }
        })
        .collect();
    (tensors, file.metadata().clone())
}

/// Rewrites a safetensors file through `edit` (tensors in name order, metadata).
fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<OwnedTensor>, &mut BTreeMap<String, String>)) {
    let (mut tensors, mut metadata) = read_all(path);
    edit(&mut tensors, &mut metadata);
    write_safetensors(path, &tensors, &metadata).expect("rewritten");
}

#[test]
fn wrong_shape_and_missing_tensor_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "folder", Sd1, Diffusers, F32);
    let weights = root.join("text_encoder/model.safetensors");
    rewrite(&weights, |tensors, _| {
        tensors.retain(|t| t.name != "text_model.final_layer_norm.weight");
        let t = tensors
            .iter_mut()
            .find(|t| t.name == "text_model.encoder.layers.1.mlp.fc1.weight")
            .expect("fc1");
        t.shape = vec![t.shape[1], t.shape[0]];
    });
    let ckpt = open(&root);
    let set = &ckpt.text_encoder.1;
    let err = set
        .get("text_model.encoder.layers.1.mlp.fc1.weight", &[37, 32])
        .expect_err("transposed");
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("text_model.encoder.layers.1.mlp.fc1.weight")
            && msg.contains("[32, 37]")
            && msg.contains("[37, 32]"),
        "{msg}"
    );
    let err = set
        .get("text_model.final_layer_norm.weight", &[32])
        .expect_err("dropped");
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Missing { .. }), "{msg}");
    assert!(
        msg.contains("text_model.final_layer_norm.weight") && msg.contains("[32]"),
        "{msg}"
    );
    let err = set
        .check(&clip_params(&ckpt.text_encoder.0))
        .expect_err("incomplete");
    assert!(
        matches!(
            err,
            WeightsError::Shape { .. } | WeightsError::Missing { .. }
        ),
        "{err}"
    );
}

#[test]
fn single_file_configs_follow_sd_rules_without_metadata() {
    for variant in [Sd1, Sd2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "m.safetensors", variant, SingleFile, F16);
        rewrite(&path, |_, metadata| {
            metadata.clear();
        });
        let ckpt = open(&path);
        let (mut clip, mut unet, mut vae) = test_configs(variant);
        // What shapes cannot tell comes from the SD rules: 64-wide heads, 32 groups (or the
        // largest divisor of every width), SD's sample sizes.
        clip.num_attention_heads = 1;
        unet.attention_head_dim = match variant {
            Sd1 => PerBlock::All(8),
            Sd2 => PerBlock::Each(vec![1, 1]),
        };
        unet.norm_num_groups = 32;
        let vae_groups = if variant == Sd1 { 16 } else { 32 };
        unet.sample_size = Some(if variant == Sd1 { 64 } else { 96 });
        vae.norm_num_groups = vae_groups;
        vae.sample_size = if variant == Sd1 { 512 } else { 768 };
        assert_eq!(ckpt.text_encoder.0, clip);
        assert_eq!(ckpt.unet.0, unet);
        assert_eq!(ckpt.vae.0, vae);
        ckpt.unet
            .1
            .check(&unet_params(&unet))
            .expect("all UNet tensors found");
        ckpt.vae
            .1
            .check(&vae_params(&vae))
            .expect("all VAE tensors found");
        ckpt.text_encoder
            .1
            .check(&clip_params(&clip))
            .expect("all CLIP tensors found");
    }
}

fn edit_json(path: &Path, key: &str, value: serde_json::Value) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    v[key] = value;
    std::fs::write(path, v.to_string()).expect("write");
}

#[test]
fn bad_config_fields_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "folder", Sd2, Diffusers, F16);
    let cases = [
        (
            "unet/config.json",
            "norm_num_groups",
            serde_json::json!("eight"),
        ),
        (
            "unet/config.json",
            "transformer_layers_per_block",
            serde_json::json!([1, 2]),
        ),
        (
            "unet/config.json",
            "addition_embed_type",
            serde_json::json!("text_time"),
        ),
        (
            "scheduler/scheduler_config.json",
            "prediction_type",
            serde_json::json!("x0"),
        ),
        (
            "unet/config.json",
            "block_out_channels",
            serde_json::json!([32, 60]),
        ),
        (
            "unet/config.json",
            "attention_head_dim",
            serde_json::json!([2, 4, 8]),
        ),
        (
            "text_encoder/config.json",
            "hidden_act",
            serde_json::json!("relu"),
        ),
        (
            "text_encoder/config.json",
            "num_attention_heads",
            serde_json::json!(5),
        ),
        (
            "vae/config.json",
            "down_block_types",
            serde_json::json!(["DownEncoderBlock2D"]),
        ),
    ];
    for (file, field, value) in cases {
        let path = root.join(file);
        let original = std::fs::read_to_string(&path).expect("read");
        edit_json(&path, field, value);
        let err = Checkpoint::open(&root).expect_err("bad config");
        let msg = err.to_string();
        assert!(
            matches!(&err, WeightsError::Config { field: f, .. } if f == field),
            "{file} {field}: {msg}"
        );
        assert!(msg.contains(field) && msg.contains(file), "{msg}");
        std::fs::write(&path, original).expect("restore");
    }
    open(&root);
}

#[test]
fn malformed_headers_and_unsupported_dtypes_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.safetensors");
    std::fs::write(&path, b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{").expect("write");
    assert!(matches!(
        SafetensorsFile::open(&path),
        Err(WeightsError::Header { .. })
    ));
    std::fs::write(&path, b"abc").expect("write");
    assert!(matches!(
        SafetensorsFile::open(&path),
        Err(WeightsError::Header { .. })
    ));
    let header = br#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 16]);
    std::fs::write(&path, &bytes).expect("write");
    let file = SafetensorsFile::open(&path).expect("valid file");
    let err = file.tensor("ids").expect_err("I64 is not loadable");
    assert!(
        matches!(err, WeightsError::DType { .. }) && err.to_string().contains("ids"),
        "{err}"
    );
    assert!(matches!(
        Checkpoint::open(dir.path()),
        Err(WeightsError::Layout { .. })
    ));
}

#[test]
fn golden_input_ids_match_the_builtin_tokenizer() {
    let goldens = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens");
    for (variant, pad) in [("sd1", SD1_PAD_ID), ("sd2", SD2_PAD_ID)] {
        let bytes =
            std::fs::read(goldens.join(format!("clip_{variant}_f32.safetensors"))).expect("golden");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let prompts: Vec<String> =
            serde_json::from_str(&meta.metadata().as_ref().expect("metadata")["prompts"])
                .expect("prompts");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden");
        let ids = st.tensor("input_ids").expect("input_ids");
        let ids: Vec<i64> = ids
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        for (p, prompt) in prompts.iter().enumerate() {
            let ours: Vec<i64> = Tokenizer::builtin()
                .encode_padded(prompt, pad)
                .into_iter()
                .map(i64::from)
                .collect();
            assert_eq!(
                ours,
                ids[p * 77..(p + 1) * 77],
                "{variant} prompt {prompt:?}"
            );
        }
    }
}

#[test]
fn sd1_bf16_layouts_load_identical_tensors() {
    both_layouts_identical(Sd1, BF16);
}

#[test]
fn sharded_weights_and_fp16_variant_names_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = write(dir.path(), "folder", Sd1, Diffusers, F16);
    let before = open(&root);
    let unet = root.join("unet/diffusion_pytorch_model.safetensors");
    let (tensors, _) = read_all(&unet);
    std::fs::remove_file(&unet).expect("remove");
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let none = BTreeMap::new();
    let mut weight_map = serde_json::Map::new();
    for (part, shard) in [
        (a, "diffusion_pytorch_model-00001-of-00002.safetensors"),
        (b, "diffusion_pytorch_model-00002-of-00002.safetensors"),
    ] {
        write_safetensors(&root.join("unet").join(shard), part, &none).expect("shard");
        for t in part {
            weight_map.insert(t.name.clone(), serde_json::json!(shard));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        root.join("unet/diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");
    let te = root.join("text_encoder");
    std::fs::rename(
        te.join("model.safetensors"),
        te.join("model.fp16.safetensors"),
    )
    .expect("rename");
    let after = open(&root);
    let (_, unet_config, _) = test_configs(Sd1);
    assert_same(&before.unet.1, &after.unet.1, &unet_params(&unet_config));
    assert_eq!(
        before.text_encoder.1.names().count(),
        after.text_encoder.1.names().count()
    );
}

#[test]
fn pickled_checkpoints_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.ckpt");
    std::fs::write(&path, b"PK\x03\x04 not a safetensors file").expect("write");
    let err = Checkpoint::open(&path).expect_err("pickle");
    assert!(
        matches!(err, WeightsError::Layout { .. }) && err.to_string().contains("pickled"),
        "{err}"
    );
}

#[test]
fn full_size_single_files_infer_the_published_sd_configs() {
    for variant in [Sd1, Sd2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let configs = published_configs(variant);
        let path = dir.path().join("full.safetensors");
        write_header_only_single_file(&path, variant, &configs, F16).expect("written");
        let ckpt = open(&path);
        let (clip, unet, vae) = configs;
        assert_eq!(ckpt.variant, variant);
        assert_eq!(ckpt.text_encoder.0, clip, "{variant:?}");
        assert_eq!(ckpt.unet.0, unet, "{variant:?}");
        assert_eq!(ckpt.vae.0, vae, "{variant:?}");
        ckpt.text_encoder
            .1
            .check(&clip_params(&clip))
            .expect("CLIP complete");
        ckpt.unet
            .1
            .check(&unet_params(&unet))
            .expect("UNet complete");
        ckpt.vae.1.check(&vae_params(&vae)).expect("VAE complete");
    }
}

#[test]
fn original_names_of_full_size_parameters() {
    use inference_server::model::weights::single_file::{clip_source, unet_source, vae_source};
    let (_, unet, vae) = published_configs(Sd1);
    let unet_cases = [
        ("conv_in.weight", "input_blocks.0.0.weight"),
        ("time_embedding.linear_2.bias", "time_embed.2.bias"),
        (
            "down_blocks.0.resnets.1.time_emb_proj.weight",
            "input_blocks.2.0.emb_layers.1.weight",
        ),
        (
            "down_blocks.0.downsamplers.0.conv.weight",
            "input_blocks.3.0.op.weight",
        ),
        (
            "down_blocks.1.attentions.0.proj_in.weight",
            "input_blocks.4.1.proj_in.weight",
        ),
        (
            "down_blocks.1.resnets.0.conv_shortcut.bias",
            "input_blocks.4.0.skip_connection.bias",
        ),
        (
            "down_blocks.3.resnets.1.conv2.weight",
            "input_blocks.11.0.out_layers.3.weight",
        ),
        (
            "mid_block.resnets.1.norm1.weight",
            "middle_block.2.in_layers.0.weight",
        ),
        (
            "up_blocks.0.upsamplers.0.conv.weight",
            "output_blocks.2.1.conv.weight",
        ),
        (
            "up_blocks.1.upsamplers.0.conv.weight",
            "output_blocks.5.2.conv.weight",
        ),
        (
            "up_blocks.3.attentions.2.proj_out.bias",
            "output_blocks.11.1.proj_out.bias",
        ),
        ("conv_norm_out.weight", "out.0.weight"),
    ];
    for (diffusers, original) in unet_cases {
        assert_eq!(unet_source(diffusers, &unet), original);
    }
    let vae_cases = [
        (
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            "encoder.down.1.block.0.nin_shortcut.weight",
        ),
        (
            "encoder.down_blocks.0.downsamplers.0.conv.bias",
            "encoder.down.0.downsample.conv.bias",
        ),
        (
            "encoder.mid_block.attentions.0.to_out.0.weight",
            "encoder.mid.attn_1.proj_out.weight",
        ),
        (
            "decoder.mid_block.attentions.0.group_norm.bias",
            "decoder.mid.attn_1.norm.bias",
        ),
        (
            "decoder.up_blocks.0.resnets.2.norm1.weight",
            "decoder.up.3.block.2.norm1.weight",
        ),
        (
            "decoder.up_blocks.2.upsamplers.0.conv.weight",
            "decoder.up.1.upsample.conv.weight",
        ),
        ("decoder.conv_norm_out.bias", "decoder.norm_out.bias"),
    ];
    for (diffusers, original) in vae_cases {
        assert_eq!(vae_source(diffusers, &vae), original);
    }
    let v = clip_source(
        "text_model.encoder.layers.22.self_attn.v_proj.bias",
        &[1024],
        Sd2,
    );
    assert_eq!(
        v.name,
        "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_bias"
    );
    assert_eq!((v.rows, v.shape), (Some(2048..3072), vec![3072]));
    let fc = clip_source(
        "text_model.encoder.layers.0.mlp.fc2.weight",
        &[1024, 4096],
        Sd2,
    );
    assert_eq!(
        fc.name,
        "cond_stage_model.model.transformer.resblocks.0.mlp.c_proj.weight"
    );
    let pos = clip_source(
        "text_model.embeddings.position_embedding.weight",
        &[77, 768],
        Sd1,
    );
    assert_eq!(
        pos.name,
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
    );
}
