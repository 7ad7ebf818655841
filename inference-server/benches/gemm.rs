//! GEMM throughput on SD 1.5 shapes through the engine's public API (`Tensor::matmul`, and
//! `Tensor::linear` with an f16 weight), plus tiled attention. Criterion's throughput is set to `2·m·n·k` elements, so
//! its "elem/s" figure reads as FLOP/s. Compare with `bench/gemm_torch.py` (same shapes, same
//! thread count: set `RAYON_NUM_THREADS` here and `--threads` there).
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inference_server::engine::{DType, Device, Tensor};

/// (name, m, k, n): `[m, k] · [k, n]`.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("attn_proj_64x64", 4096, 320, 320),
    ("attn_proj_32x32", 1024, 640, 640),
    ("attn_proj_16x16", 256, 1280, 1280),
    ("conv3x3_im2col_64x64", 4096, 2880, 320),
    ("ff_in_64x64", 4096, 320, 2560),
    ("attn_scores_head_64x64", 4096, 40, 4096),
    ("clip_mlp", 77, 768, 3072),
];

fn filled(rows: usize, cols: usize, seed: u32) -> Tensor {
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu).expect("shape matches data")
}

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    eprintln!("rayon threads: {}", rayon::current_num_threads());
    for &(name, m, k, n) in SHAPES {
        let (a, b) = (filled(m, k, 1), filled(k, n, 2));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_with_input(
            BenchmarkId::new(name, format!("{m}x{k}x{n}")),
            &(a, b),
            |bench, (a, b)| bench.iter(|| a.matmul(b).expect("matmul")),
        );
    }
    group.finish();
}

fn bench_linear_f16(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_f16_weight");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    for &(name, m, k, n) in SHAPES
        .iter()
        .filter(|s| s.0.starts_with("attn_proj") || s.0 == "clip_mlp")
    {
        let x = filled(m, k, 3);
        let w = filled(n, k, 4).to_dtype(DType::F16).expect("to f16");
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_with_input(
            BenchmarkId::new(name, format!("{m}x{k}x{n}")),
            &(x, w),
            |bench, (x, w)| bench.iter(|| x.linear(w, None).expect("linear")),
        );
    }
    group.finish();
}

/// Tiled attention on SD 1.5 self-attention shapes (CFG batch 2, 8 heads); throughput counts the
/// two products, `4·Lq·Lk·D` FLOPs per head.
fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(5));
    for (name, l, d) in [("self_32x32", 1024usize, 80usize), ("self_64x64", 4096, 40)] {
        let qkv = filled(2 * 8 * l, d, 5)
            .reshape((2, 8, l, d))
            .expect("reshape");
        group.throughput(Throughput::Elements((4 * 2 * 8 * l * l * d) as u64));
        group.bench_with_input(
            BenchmarkId::new(name, format!("2x8x{l}x{d}")),
            &qkv,
            |bench, t| {
                bench.iter(|| {
                    Tensor::attention(t, t, t, 1.0 / (d as f32).sqrt(), false).expect("attention")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_linear_f16, bench_attention);
criterion_main!(benches);
