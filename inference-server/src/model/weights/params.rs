//! Every parameter (diffusers name, shape) of each model, derived from its config. The lists
//! equal the `state_dict()` key sets of transformers' `CLIPTextModel` and diffusers'
//! `UNet2DConditionModel` / `AutoencoderKL` (checked by `tests/parity/make_goldens.py`).

use super::config::{ClipTextConfig, UNetConfig, VaeConfig};

/// One parameter: its diffusers name and shape.
pub type Param = (String, Vec<usize>);

struct List(Vec<Param>);

impl List {
    fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push((name.into(), shape.to_vec()));
    }

    fn weight_bias(&mut self, prefix: &str, weight: &[usize]) {
        self.add(format!("{prefix}.weight"), weight);
        self.add(format!("{prefix}.bias"), &weight[..1]);
    }

    fn norm(&mut self, prefix: &str, c: usize) {
        self.weight_bias(prefix, &[c]);
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) {
        self.weight_bias(prefix, &[out, inp]);
    }

    fn conv(&mut self, prefix: &str, out: usize, inp: usize, k: usize) {
        self.weight_bias(prefix, &[out, inp, k, k]);
    }

    /// A diffusers `ResnetBlock2D`; `temb` is the time-embedding width (UNet) or none (VAE).
    fn resnet(&mut self, p: &str, cin: usize, cout: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), cin);
        self.conv(&format!("{p}.conv1"), cout, cin, 3);
        if let Some(t) = temb {
            self.linear(&format!("{p}.time_emb_proj"), cout, t);
        }
        self.norm(&format!("{p}.norm2"), cout);
        self.conv(&format!("{p}.conv2"), cout, cout, 3);
        if cin != cout {
            self.conv(&format!("{p}.conv_shortcut"), cout, cin, 1);
        }
    }

    /// A diffusers `Transformer2DModel` with one `BasicTransformerBlock`.
    fn transformer(&mut self, p: &str, c: usize, context: usize, linear_proj: bool) {
        self.norm(&format!("{p}.norm"), c);
        let proj = |l: &mut List, name: &str| {
            if linear_proj {
                l.linear(&format!("{p}.{name}"), c, c);
            } else {
                l.conv(&format!("{p}.{name}"), c, c, 1);
            }
        };
        proj(self, "proj_in");
        let b = format!("{p}.transformer_blocks.0");
        for (attn, kv) in [("attn1", c), ("attn2", context)] {
            self.add(format!("{b}.{attn}.to_q.weight"), &[c, c]);
            self.add(format!("{b}.{attn}.to_k.weight"), &[c, kv]);
            self.add(format!("{b}.{attn}.to_v.weight"), &[c, kv]);
            self.linear(&format!("{b}.{attn}.to_out.0"), c, c);
        }
        for n in 1..=3 {
            self.norm(&format!("{b}.norm{n}"), c);
        }
        self.linear(&format!("{b}.ff.net.0.proj"), 8 * c, c);
        self.linear(&format!("{b}.ff.net.2"), c, 4 * c);
        proj(self, "proj_out");
    }

    /// The single-head self-attention of the VAE's mid block.
    fn vae_attention(&mut self, p: &str, c: usize) {
        self.norm(&format!("{p}.group_norm"), c);
        for name in ["to_q", "to_k", "to_v", "to_out.0"] {
            self.linear(&format!("{p}.{name}"), c, c);
        }
    }
}

/// Parameters of transformers' `CLIPTextModel`.
pub fn clip_params(c: &ClipTextConfig) -> Vec<Param> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut l = List(Vec::new());
    l.add(
        "text_model.embeddings.token_embedding.weight",
        &[c.vocab_size, h],
    );
    l.add(
        "text_model.embeddings.position_embedding.weight",
        &[c.max_position_embeddings, h],
    );
    for n in 0..c.num_hidden_layers {
        let p = format!("text_model.encoder.layers.{n}");
        for proj in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            l.linear(&format!("{p}.self_attn.{proj}"), h, h);
        }
        l.norm(&format!("{p}.layer_norm1"), h);
        l.linear(&format!("{p}.mlp.fc1"), i, h);
        l.linear(&format!("{p}.mlp.fc2"), h, i);
        l.norm(&format!("{p}.layer_norm2"), h);
    }
    l.norm("text_model.final_layer_norm", h);
    l.0
}

/// Parameters of diffusers' `UNet2DConditionModel` (SD 1.x / 2.x block types); empty when
/// `block_out_channels` is (a config that fails validation).
pub fn unet_params(c: &UNetConfig) -> Vec<Param> {
    let ch = &c.block_out_channels;
    let n = ch.len();
    if n == 0 {
        return Vec::new();
    }
    let (b0, temb, ctx, lin) = (
        ch[0],
        4 * ch[0],
        c.cross_attention_dim,
        c.use_linear_projection,
    );
    let mut l = List(Vec::new());
    l.conv("conv_in", b0, c.in_channels, 3);
    l.linear("time_embedding.linear_1", temb, b0);
    l.linear("time_embedding.linear_2", temb, temb);

    let mut cin = b0;
    for (i, &cout) in ch.iter().enumerate() {
        for j in 0..c.layers_per_block {
            l.resnet(
                &format!("down_blocks.{i}.resnets.{j}"),
                if j == 0 { cin } else { cout },
                cout,
                Some(temb),
            );
            if c.down_has_attention(i) {
                l.transformer(&format!("down_blocks.{i}.attentions.{j}"), cout, ctx, lin);
            }
        }
        if i + 1 < n {
            l.conv(
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        cin = cout;
    }

    let top = ch[n - 1];
    l.resnet("mid_block.resnets.0", top, top, Some(temb));
    l.transformer("mid_block.attentions.0", top, ctx, lin);
    l.resnet("mid_block.resnets.1", top, top, Some(temb));

    let mut prev = top;
    for i in 0..n {
        let out = ch[n - 1 - i];
        let skip_in = ch[n - 1 - (i + 1).min(n - 1)];
        for j in 0..=c.layers_per_block {
            let skip = if j == c.layers_per_block {
                skip_in
            } else {
                out
            };
            let res_in = if j == 0 { prev } else { out };
            l.resnet(
                &format!("up_blocks.{i}.resnets.{j}"),
                res_in + skip,
                out,
                Some(temb),
            );
            if c.up_has_attention(i) {
                l.transformer(&format!("up_blocks.{i}.attentions.{j}"), out, ctx, lin);
            }
        }
        if i + 1 < n {
            l.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
        }
        prev = out;
    }
    l.norm("conv_norm_out", b0);
    l.conv("conv_out", c.out_channels, b0, 3);
    l.0
}

/// Parameters of diffusers' `AutoencoderKL`; empty when `block_out_channels` is.
pub fn vae_params(c: &VaeConfig) -> Vec<Param> {
    let ch = &c.block_out_channels;
    let n = ch.len();
    if n == 0 {
        return Vec::new();
    }
    let (b0, top, lat) = (ch[0], ch[n - 1], c.latent_channels);
    let mut l = List(Vec::new());

    l.conv("encoder.conv_in", b0, c.in_channels, 3);
    let mut cin = b0;
    for (i, &cout) in ch.iter().enumerate() {
        for j in 0..c.layers_per_block {
            l.resnet(
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                if j == 0 { cin } else { cout },
                cout,
                None,
            );
        }
        if i + 1 < n {
            l.conv(
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        cin = cout;
    }
    mid(&mut l, "encoder.mid_block", top);
    l.norm("encoder.conv_norm_out", top);
    l.conv("encoder.conv_out", 2 * lat, top, 3);
    l.conv("quant_conv", 2 * lat, 2 * lat, 1);
    l.conv("post_quant_conv", lat, lat, 1);

    l.conv("decoder.conv_in", top, lat, 3);
    mid(&mut l, "decoder.mid_block", top);
    let mut prev = top;
    for i in 0..n {
        let out = ch[n - 1 - i];
        for j in 0..=c.layers_per_block {
            l.resnet(
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                if j == 0 { prev } else { out },
                out,
                None,
            );
        }
        if i + 1 < n {
            l.conv(
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                out,
                out,
                3,
            );
        }
        prev = out;
    }
    l.norm("decoder.conv_norm_out", b0);
    l.conv("decoder.conv_out", c.out_channels, b0, 3);
    l.0
}

fn mid(l: &mut List, p: &str, c: usize) {
    l.resnet(&format!("{p}.resnets.0"), c, c, None);
    l.vae_attention(&format!("{p}.attentions.0"), c);
    l.resnet(&format!("{p}.resnets.1"), c, c, None);
}
