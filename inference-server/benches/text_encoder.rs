//! The CLIP text encoder on the real SD 1.5 shape (ViT-L/14 text tower: 12 layers, 768 wide,
//! 49,408-token vocabulary) with random weights, stored as f32 and as f16: time of one forward
//! at batch 2 × 77 tokens (prompt and negative prompt, as classifier-free guidance runs it) and
//! the process's anonymous memory after loading, which shows that mmap-backed f16 weights are
//! not copied. `bench/text_encoder.py` runs this and PyTorch side by side and prints ratios.
//!
//! Output: a Markdown table, plus `RESULT <key> <value>` lines for the driver script.
#![allow(missing_docs)]

use std::time::Instant;

use inference_server::engine::Device;
use inference_server::model::clip::ClipTextEncoder;
use inference_server::model::testmodel::param_values;
use inference_server::model::tokenizer::{SD1_PAD_ID, Tokenizer};
use inference_server::model::weights::{
    ClipTextConfig, HiddenAct, OwnedTensor, SafetensorsFile, StoredDType, WeightSet, clip_params,
    write_safetensors,
};

const RUNS: usize = 7;

fn sd15_config() -> ClipTextConfig {
    ClipTextConfig {
        vocab_size: 49408,
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        max_position_embeddings: 77,
        hidden_act: HiddenAct::QuickGelu,
        layer_norm_eps: 1e-5,
        ..ClipTextConfig::default()
    }
}

/// `RssAnon` of this process in MiB: heap and other private memory, not file-backed pages.
fn anon_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let threads = rayon::current_num_threads();
    let config = sd15_config();
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = vec![
        Tokenizer::builtin().encode_padded(
            "a photograph of an astronaut riding a horse on mars",
            SD1_PAD_ID,
        ),
        Tokenizer::builtin().encode_padded("", SD1_PAD_ID),
    ];
    println!(
        "| text encoder, SD 1.5 shape, batch 2 × 77, {threads} threads | median of {RUNS} | anon MiB after load | checkpoint MiB |"
    );
    println!("|---|---|---|---|");
    for (dtype, key) in [(StoredDType::F32, "f32"), (StoredDType::F16, "f16")] {
        let path = dir.path().join(format!("clip_{key}.safetensors"));
        {
            let tensors: Vec<OwnedTensor> = clip_params(&config)
                .iter()
                .map(|(name, shape)| {
                    OwnedTensor::from_f32(
                        name.clone(),
                        shape.clone(),
                        &param_values(name, shape),
                        dtype,
                    )
                })
                .collect();
            write_safetensors(&path, &tensors, &Default::default()).expect("write checkpoint");
        }
        let file_mib =
            std::fs::metadata(&path).expect("checkpoint size").len() as f64 / (1 << 20) as f64;
        let before = anon_mib();
        let file = SafetensorsFile::open(&path).expect("open checkpoint");
        let weights = WeightSet::from_files(&[file]);
        let encoder = ClipTextEncoder::load(&config, &weights, &Device::Cpu).expect("load encoder");
        let loaded = anon_mib() - before;
        encoder.forward(&ids, 1).expect("warm-up forward");
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                encoder.forward(&ids, 1).expect("forward");
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[RUNS / 2];
        println!(
            "| ours, {key} weights | {:.1} ms | {loaded:.1} | {file_mib:.1} |",
            median * 1e3
        );
        println!("RESULT clip_{key}_seconds {median}");
        println!("RESULT clip_{key}_anon_mib {loaded}");
        println!("RESULT clip_{key}_file_mib {file_mib}");
    }
}
