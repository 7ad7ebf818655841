//! The shared layers (`Conv2d`, `GroupNorm`, `ResnetBlock2D`, `Attention`, `Downsample2D`,
//! `Upsample2D`) against plain f64 references written from the diffusers definitions, on random
//! weights loaded through a real safetensors file. Tolerance: |got − want| ≤ 1e-4 · (1 + |want|);
//! the engine computes in f32, so only summation order and rounding differ (~1e-6 here).

use std::collections::BTreeMap;

use crate::support::{Rng, assert_close, f64s, rand_tensor};
use inference_server::engine::Device;
use inference_server::model::weights::{
    OwnedTensor, SafetensorsFile, StoredDType, WeightSet, write_safetensors,
};
use inference_server::nn::{
    Attention, Conv2d, Downsample2D, GroupNorm, NnError, ResnetBlock2D, Upsample2D,
};

const TOL: f64 = 1e-4;

/// Random weights for `params`, written to a temporary file and read back as a `WeightSet`.
struct Weights {
    set: WeightSet,
    values: BTreeMap<String, Vec<f64>>,
    _dir: tempfile::TempDir,
}

impl Weights {
    fn new(seed: u64, params: &[(String, Vec<usize>)]) -> Weights {
        let mut rng = Rng::new(seed);
        let mut values = BTreeMap::new();
        let tensors: Vec<OwnedTensor> = params
            .iter()
            .map(|(name, shape)| {
                let v = rng.vec(shape.iter().product(), -0.5, 0.5);
                values.insert(name.clone(), f64s(&v));
                OwnedTensor {
                    name: name.clone(),
                    dtype: StoredDType::F32,
                    shape: shape.clone(),
                    data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_safetensors(&path, &tensors, &BTreeMap::new()).unwrap();
        let set = WeightSet::from_files(&[SafetensorsFile::open(&path).unwrap()]);
        Weights {
            set,
            values,
            _dir: dir,
        }
    }

    fn get(&self, name: &str) -> &[f64] {
        &self.values[name]
    }
}

fn p(name: &str, shape: &[usize]) -> (String, Vec<usize>) {
    (name.to_string(), shape.to_vec())
}

fn conv_params(prefix: &str, o: usize, c: usize, k: usize) -> Vec<(String, Vec<usize>)> {
    vec![
        p(&format!("{prefix}.weight"), &[o, c, k, k]),
        p(&format!("{prefix}.bias"), &[o]),
    ]
}

/// NCHW convolution with bias, `pad` zeros on every side (`extra` more on right and bottom).
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    dims: [usize; 4],
    w: &[f64],
    b: &[f64],
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    extra: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = dims;
    let ho = (h + 2 * pad + extra - k) / stride + 1;
    let wo = (wd + 2 * pad + extra - k) / stride + 1;
    let mut out = vec![0.0; n * o * ho * wo];
    for ni in 0..n {
        for oi in 0..o {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = b[oi];
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (
                                    (y * stride + ky) as isize - pad as isize,
                                    (xo * stride + kx) as isize - pad as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                acc += w[((oi * c + ci) * k + ky) * k + kx]
                                    * x[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    out[((ni * o + oi) * ho + y) * wo + xo] = acc;
                }
            }
        }
    }
    (out, [n, o, ho, wo])
}

#[allow(clippy::too_many_arguments)]
fn group_norm_ref(
    x: &[f64],
    n: usize,
    c: usize,
    g: usize,
    w: &[f64],
    b: &[f64],
    eps: f64,
    silu: bool,
) -> Vec<f64> {
    let s = x.len() / (n * c);
    let per = c / g * s;
    let mut out = x.to_vec();
    for (chunk_i, chunk) in out.chunks_mut(per).enumerate() {
        let mean = chunk.iter().sum::<f64>() / per as f64;
        let var = chunk.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per as f64;
        for (i, v) in chunk.iter_mut().enumerate() {
            let ch = (chunk_i % g) * (c / g) + i / s;
            let y = (*v - mean) / (var + eps).sqrt() * w[ch] + b[ch];
            *v = if silu { y / (1.0 + (-y).exp()) } else { y };
        }
    }
    out
}

fn linear_ref(x: &[f64], inp: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let out = w.len() / inp;
    x.chunks(inp)
        .flat_map(|row| {
            (0..out).map(move |o| {
                b.map_or(0.0, |b| b[o]) + (0..inp).map(|i| row[i] * w[o * inp + i]).sum::<f64>()
            })
        })
        .collect()
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

test_device!(conv_and_group_norm);
fn conv_and_group_norm(device: &Device) {
    let mut params = conv_params("c", 5, 4, 3);
    params.extend([p("gn.weight", &[4]), p("gn.bias", &[4])]);
    let w = Weights::new(1, &params);
    let (x, xd) = rand_tensor(&mut Rng::new(2), &[2, 4, 7, 6], device);
    let xd = f64s(&xd);
    let conv = Conv2d::load(&w.set, "c", 4, 5, 3, 2, 1, device).unwrap();
    let (want, dims) = conv_ref(
        &xd,
        [2, 4, 7, 6],
        w.get("c.weight"),
        w.get("c.bias"),
        5,
        3,
        2,
        1,
        0,
    );
    let got = conv.forward(&x).unwrap();
    assert_eq!(got.dims(), dims);
    assert_close("conv", &got.to_vec_f32().unwrap(), &want, TOL);

    let gn = GroupNorm::load(&w.set, "gn", 2, 4, 1e-6, device).unwrap();
    for silu in [false, true] {
        let got = if silu {
            gn.forward_silu(&x)
        } else {
            gn.forward(&x)
        }
        .unwrap();
        let want = group_norm_ref(
            &xd,
            2,
            4,
            2,
            w.get("gn.weight"),
            w.get("gn.bias"),
            1e-6,
            silu,
        );
        assert_close("group_norm", &got.to_vec_f32().unwrap(), &want, TOL);
    }
    let err = GroupNorm::load(&w.set, "gn", 3, 4, 1e-6, device).unwrap_err();
    assert!(
        matches!(
            err,
            NnError::Input {
                field: "norm_num_groups",
                ..
            }
        ),
        "{err}"
    );
    let err = Conv2d::load(&w.set, "c", 4, 6, 3, 1, 1, device).unwrap_err();
    assert!(err.to_string().contains("c.weight"), "{err}");
}

fn resnet_params(
    pre: &str,
    cin: usize,
    cout: usize,
    temb: Option<usize>,
) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![
        p(&format!("{pre}.norm1.weight"), &[cin]),
        p(&format!("{pre}.norm1.bias"), &[cin]),
    ];
    v.extend(conv_params(&format!("{pre}.conv1"), cout, cin, 3));
    if let Some(t) = temb {
        v.extend([
            p(&format!("{pre}.time_emb_proj.weight"), &[cout, t]),
            p(&format!("{pre}.time_emb_proj.bias"), &[cout]),
        ]);
    }
    v.extend([
        p(&format!("{pre}.norm2.weight"), &[cout]),
        p(&format!("{pre}.norm2.bias"), &[cout]),
    ]);
    v.extend(conv_params(&format!("{pre}.conv2"), cout, cout, 3));
    if cin != cout {
        v.extend(conv_params(&format!("{pre}.conv_shortcut"), cout, cin, 1));
    }
    v
}

test_device!(resnet_block_with_and_without_time_embedding);
fn resnet_block_with_and_without_time_embedding(device: &Device) {
    let (n, h, wd, groups, eps) = (2, 5, 4, 4, 1e-5);
    for (cin, cout, temb) in [(8, 12, Some(6)), (8, 8, None)] {
        let w = Weights::new(3, &resnet_params("r", cin, cout, temb));
        let g = |k: &str| w.get(&format!("r.{k}"));
        let block =
            ResnetBlock2D::load(&w.set, "r", cin, cout, temb, groups, eps as f32, device).unwrap();
        let mut rng = Rng::new(4);
        let (x, xd) = rand_tensor(&mut rng, &[n, cin, h, wd], device);
        let xd = f64s(&xd);
        let (t, td) = rand_tensor(&mut rng, &[n, temb.unwrap_or(1)], device);
        let got = block.forward(&x, temb.map(|_| &t)).unwrap();

        let a = group_norm_ref(
            &xd,
            n,
            cin,
            groups,
            g("norm1.weight"),
            g("norm1.bias"),
            eps,
            true,
        );
        let (mut a, dims) = conv_ref(
            &a,
            [n, cin, h, wd],
            g("conv1.weight"),
            g("conv1.bias"),
            cout,
            3,
            1,
            1,
            0,
        );
        if let Some(tc) = temb {
            let silu: Vec<f64> = f64s(&td).iter().map(|v| v / (1.0 + (-v).exp())).collect();
            let proj = linear_ref(
                &silu,
                tc,
                g("time_emb_proj.weight"),
                Some(g("time_emb_proj.bias")),
            );
            for (i, v) in a.iter_mut().enumerate() {
                *v += proj[i / (h * wd)];
            }
        }
        let a = group_norm_ref(
            &a,
            n,
            cout,
            groups,
            g("norm2.weight"),
            g("norm2.bias"),
            eps,
            true,
        );
        let (a, _) = conv_ref(
            &a,
            dims,
            g("conv2.weight"),
            g("conv2.bias"),
            cout,
            3,
            1,
            1,
            0,
        );
        let shortcut = match cin != cout {
            true => {
                conv_ref(
                    &xd,
                    [n, cin, h, wd],
                    g("conv_shortcut.weight"),
                    g("conv_shortcut.bias"),
                    cout,
                    1,
                    1,
                    0,
                    0,
                )
                .0
            }
            false => xd.clone(),
        };
        assert_close(
            "resnet",
            &got.to_vec_f32().unwrap(),
            &add(&shortcut, &a),
            TOL,
        );
        let wrong = if temb.is_some() { None } else { Some(&t) };
        assert!(matches!(
            block.forward(&x, wrong),
            Err(NnError::Input { field: "temb", .. })
        ));
    }
}

test_device!(attention_self_and_cross);
fn attention_self_and_cross(device: &Device) {
    let (b, l, s, qd, cd, heads, hd) = (2, 9, 5, 6, 7, 2, 4);
    for (context_dim, bias) in [(Some(cd), false), (None, true)] {
        let kv = context_dim.unwrap_or(qd);
        let mut params = Vec::new();
        for (name, inp) in [("to_q", qd), ("to_k", kv), ("to_v", kv)] {
            params.push(p(&format!("a.{name}.weight"), &[heads * hd, inp]));
            if bias {
                params.push(p(&format!("a.{name}.bias"), &[heads * hd]));
            }
        }
        params.extend([
            p("a.to_out.0.weight", &[qd, heads * hd]),
            p("a.to_out.0.bias", &[qd]),
        ]);
        let w = Weights::new(5, &params);
        let attn = Attention::load(&w.set, "a", qd, context_dim, heads, hd, bias, device).unwrap();
        let mut rng = Rng::new(6);
        let (x, xd) = rand_tensor(&mut rng, &[b, l, qd], device);
        let (ctx, ctxd) = rand_tensor(&mut rng, &[b, s, cd], device);
        let (xd, ctxd) = (f64s(&xd), f64s(&ctxd));
        let (cdata, sl) = if context_dim.is_some() {
            (&ctxd, s)
        } else {
            (&xd, l)
        };
        let got = attn.forward(&x, context_dim.map(|_| &ctx)).unwrap();
        assert_eq!(got.dims(), &[b, l, qd]);

        let bias_of = |n: &str| bias.then(|| w.get(&format!("a.{n}.bias")));
        let q = linear_ref(&xd, qd, w.get("a.to_q.weight"), bias_of("to_q"));
        let k = linear_ref(cdata, kv, w.get("a.to_k.weight"), bias_of("to_k"));
        let v = linear_ref(cdata, kv, w.get("a.to_v.weight"), bias_of("to_v"));
        let inner = heads * hd;
        let mut mixed = vec![0.0; b * l * inner];
        for bi in 0..b {
            for hi in 0..heads {
                for i in 0..l {
                    let qrow = &q[(bi * l + i) * inner + hi * hd..][..hd];
                    let scores: Vec<f64> = (0..sl)
                        .map(|j| {
                            let krow = &k[(bi * sl + j) * inner + hi * hd..][..hd];
                            qrow.iter().zip(krow).map(|(a, c)| a * c).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        mixed[(bi * l + i) * inner + hi * hd + d] = (0..sl)
                            .map(|j| e[j] / sum * v[(bi * sl + j) * inner + hi * hd + d])
                            .sum::<f64>();
                    }
                }
            }
        }
        let want = linear_ref(
            &mixed,
            inner,
            w.get("a.to_out.0.weight"),
            Some(w.get("a.to_out.0.bias")),
        );
        assert_close("attention", &got.to_vec_f32().unwrap(), &want, TOL);
    }
}

test_device!(down_and_up_sampling);
fn down_and_up_sampling(device: &Device) {
    let w = Weights::new(
        7,
        &[
            conv_params("d.conv", 3, 3, 3),
            conv_params("u.conv", 3, 3, 3),
        ]
        .concat(),
    );
    let (x, xd) = rand_tensor(&mut Rng::new(8), &[1, 3, 6, 8], device);
    let xd = f64s(&xd);
    let (dw, db) = (w.get("d.conv.weight"), w.get("d.conv.bias"));
    for (pad, extra) in [(0, 1), (1, 0)] {
        let down = Downsample2D::load(&w.set, "d", 3, pad, device).unwrap();
        let got = down.forward(&x).unwrap();
        let (want, dims) = conv_ref(&xd, [1, 3, 6, 8], dw, db, 3, 3, 2, pad, extra);
        assert_eq!(got.dims(), dims);
        assert_eq!(dims, [1, 3, 3, 4]);
        assert_close("downsample", &got.to_vec_f32().unwrap(), &want, TOL);
    }
    let up = Upsample2D::load(&w.set, "u", 3, device).unwrap();
    let got = up.forward(&x).unwrap();
    let mut big = vec![0.0; 3 * 12 * 16];
    for (i, v) in big.iter_mut().enumerate() {
        let (c, y, xx) = (i / 192, i / 16 % 12, i % 16);
        *v = xd[(c * 6 + y / 2) * 8 + xx / 2];
    }
    let (want, dims) = conv_ref(
        &big,
        [1, 3, 12, 16],
        w.get("u.conv.weight"),
        w.get("u.conv.bias"),
        3,
        3,
        1,
        1,
        0,
    );
    assert_eq!(got.dims(), dims);
    assert_close("upsample", &got.to_vec_f32().unwrap(), &want, TOL);
}
