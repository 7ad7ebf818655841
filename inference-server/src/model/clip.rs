//! The CLIP text encoder of Stable Diffusion (transformers' `CLIPTextModel`): token and position
//! embeddings, pre-norm transformer layers with causal self-attention, a final layer norm.
//!
//! SD 1.x uses OpenAI's CLIP ViT-L/14 (768 wide, quick GELU); SD 2.x OpenCLIP ViT-H/14 (1024
//! wide, exact GELU) read at its penultimate layer, which diffusers checkpoints store as a model
//! one layer shorter. `clip_skip` counts as A1111 does: 1 is the last layer, 2 the one before,
//! and the final layer norm is applied to whichever layer is taken.

use crate::engine::{DType, Device, Tensor};
use crate::model::ModelError;
use crate::model::weights::{ClipTextConfig, HiddenAct, WeightSet};
use crate::nn::{LayerNorm, Linear, WeightSource};

const PREFIX: &str = "text_model";

/// One pre-norm transformer layer: causal self-attention then an MLP, each with a residual.
#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP text encoder, ready to turn token ids into the embeddings the UNet attends to.
#[derive(Debug)]
pub struct ClipTextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    heads: usize,
    hidden: usize,
    max_positions: usize,
    activation: HiddenAct,
    /// The dtype it computes in (its weight set's cast, f32 by default).
    act: DType,
}

impl ClipTextEncoder {
    /// Loads every tensor `config` calls for (transformers' key names, `text_model.` prefix) from
    /// `weights`; a missing or mis-shaped tensor is an error naming it.
    pub fn load(
        config: &ClipTextConfig,
        weights: &WeightSet,
        device: &Device,
    ) -> Result<ClipTextEncoder, ModelError> {
        let hidden = config.hidden_size;
        let activation = config.hidden_act;
        if config.num_attention_heads == 0 || !hidden.is_multiple_of(config.num_attention_heads) {
            return Err(ModelError::Input {
                field: "text_encoder.config.num_attention_heads",
                rule: format!("must divide hidden_size {hidden}"),
            });
        }
        let eps = config.layer_norm_eps as f32;
        let emb = format!("{PREFIX}.embeddings");
        let token_embedding = WeightSource::get(
            weights,
            &format!("{emb}.token_embedding.weight"),
            &[config.vocab_size, hidden],
            device,
        )?;
        let position_embedding = WeightSource::get(
            weights,
            &format!("{emb}.position_embedding.weight"),
            &[config.max_position_embeddings, hidden],
            device,
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                EncoderLayer::load(
                    config,
                    weights,
                    &format!("{PREFIX}.encoder.layers.{i}"),
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let final_layer_norm = LayerNorm::load(
            weights,
            &format!("{PREFIX}.final_layer_norm"),
            hidden,
            eps,
            device,
        )?;
        Ok(ClipTextEncoder {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            heads: config.num_attention_heads,
            hidden,
            max_positions: config.max_position_embeddings,
            activation,
            act: weights.activation_dtype(),
        })
    }

    /// Number of transformer layers, the upper bound of `clip_skip`.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Encodes a batch of equally long id sequences to `[batch, tokens, hidden]`, taking the
    /// output of layer `num_layers - clip_skip + 1` (1 = last) through the final layer norm.
    pub fn forward(&self, ids: &[Vec<u32>], clip_skip: usize) -> Result<Tensor, ModelError> {
        let tokens = ids.first().map_or(0, Vec::len);
        if ids.is_empty() || tokens == 0 {
            return Err(input(
                "input_ids",
                "must hold at least one non-empty sequence".into(),
            ));
        }
        if let Some(i) = ids.iter().position(|seq| seq.len() != tokens) {
            return Err(input(
                "input_ids",
                format!("sequence {i} is not {tokens} tokens long like the first"),
            ));
        }
        if tokens > self.max_positions {
            return Err(input(
                "input_ids",
                format!("at most {} tokens, got {tokens}", self.max_positions),
            ));
        }
        if clip_skip == 0 || clip_skip > self.layers.len() {
            return Err(input(
                "clip_skip",
                format!("must be between 1 and {}", self.layers.len()),
            ));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        // The embedding rows are the first activation: they take the activation dtype here
        // (f32 unless the weights were cast), whatever the checkpoint stores.
        let embedded = self.token_embedding.index_select(&flat, 0)?.reshape((
            ids.len(),
            tokens,
            self.hidden,
        ))?;
        let positions = self.position_embedding.narrow(0, 0, tokens)?;
        let mut x = embedded
            .to_dtype(self.act)?
            .add(&positions.to_dtype(self.act)?)?;
        for layer in &self.layers[..self.layers.len() + 1 - clip_skip] {
            x = layer.forward(&x, self.heads, self.activation)?;
        }
        Ok(self.final_layer_norm.forward(&x)?.to_dtype(DType::F32)?)
    }
}

impl EncoderLayer {
    fn load(
        config: &ClipTextConfig,
        weights: &WeightSet,
        prefix: &str,
        device: &Device,
    ) -> Result<EncoderLayer, ModelError> {
        let (h, inner) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps as f32;
        let linear = |name: &str, i, o| {
            Linear::load(weights, &format!("{prefix}.{name}"), i, o, true, device)
        };
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(
                weights,
                &format!("{prefix}.layer_norm1"),
                h,
                eps,
                device,
            )?,
            q_proj: linear("self_attn.q_proj", h, h)?,
            k_proj: linear("self_attn.k_proj", h, h)?,
            v_proj: linear("self_attn.v_proj", h, h)?,
            out_proj: linear("self_attn.out_proj", h, h)?,
            layer_norm2: LayerNorm::load(
                weights,
                &format!("{prefix}.layer_norm2"),
                h,
                eps,
                device,
            )?,
            fc1: linear("mlp.fc1", h, inner)?,
            fc2: linear("mlp.fc2", inner, h)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        heads: usize,
        activation: HiddenAct,
    ) -> Result<Tensor, ModelError> {
        let (batch, tokens, hidden) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let head_dim = hidden / heads;
        let split = |t: Tensor| -> Result<Tensor, ModelError> {
            Ok(t.reshape((batch, tokens, heads, head_dim))?
                .permute(&[0, 2, 1, 3])?)
        };
        let h = self.layer_norm1.forward(x)?;
        let q = split(self.q_proj.forward(&h)?)?;
        let k = split(self.k_proj.forward(&h)?)?;
        let v = split(self.v_proj.forward(&h)?)?;
        let scale = (head_dim as f32).powf(-0.5);
        let attended = Tensor::attention(&q, &k, &v, scale, true)?
            .permute(&[0, 2, 1, 3])?
            .reshape((batch, tokens, hidden))?;
        let x = x.add(&self.out_proj.forward(&attended)?)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let h = match activation {
            HiddenAct::QuickGelu => h.gelu_quick()?,
            HiddenAct::Gelu => h.gelu()?,
        };
        Ok(x.add(&self.fc2.forward(&h)?)?)
    }
}

fn input(field: &'static str, rule: String) -> ModelError {
    ModelError::Input { field, rule }
}
