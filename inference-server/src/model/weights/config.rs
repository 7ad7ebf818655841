//! The diffusers / transformers `config.json` of each component, with diffusers' defaults.

use serde::{Deserialize, Serialize};

/// Activation of the CLIP text encoder's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP, SD 2.x).
    Gelu,
}

/// `text_encoder/config.json` (transformers `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Number of token embeddings.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Number of position embeddings (the context length).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Padding token id as the config states it.
    pub pad_token_id: i64,
    /// Begin-of-text token id as the config states it.
    pub bos_token_id: i64,
    /// End-of-text token id as the config states it.
    pub eos_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// Attention heads of a UNet given as one number for all blocks or one per down block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    All(usize),
    /// One value per down block (up blocks use them reversed).
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for down block `block`.
    pub fn get(&self, block: usize) -> Option<usize> {
        match self {
            PerBlock::All(v) => Some(*v),
            PerBlock::Each(v) => v.get(block).copied(),
        }
    }
}

/// `unet/config.json` (diffusers `UNet2DConditionModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent side the model was trained at.
    pub sample_size: Option<usize>,
    /// Channels of the noisy latent.
    pub in_channels: usize,
    /// Channels of the prediction.
    pub out_channels: usize,
    /// Whether the timestep embedding is `[cos, sin]` (true) or `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D` per level, deepest first.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Width of the text embeddings attended to.
    pub cross_attention_dim: usize,
    /// Despite its name, the number of attention heads in diffusers' SD configs.
    pub attention_head_dim: PerBlock,
    /// Overrides `attention_head_dim` as the head count when set.
    pub num_attention_heads: Option<PerBlock>,
    /// Linear (SD 2) rather than 1×1 conv (SD 1) `proj_in` / `proj_out`.
    pub use_linear_projection: bool,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of every group norm.
    pub norm_eps: f64,
    /// Transformer blocks per attention: 1 in SD 1.x / 2.x (SDXL's larger counts are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transformer_layers_per_block: Option<PerBlock>,
    /// Extra conditioning of SDXL and upscalers; refused when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addition_embed_type: Option<String>,
    /// Class conditioning of upscalers; refused when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_embed_type: Option<String>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: [
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            up_block_types: [
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            cross_attention_dim: 1280,
            attention_head_dim: PerBlock::All(8),
            num_attention_heads: None,
            use_linear_projection: false,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            transformer_layers_per_block: None,
            addition_embed_type: None,
            class_embed_type: None,
        }
    }
}

impl UNetConfig {
    /// Attention heads of down block `block` (the mid block uses the last one).
    pub fn heads(&self, block: usize) -> Option<usize> {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(block)
    }

    /// Whether down block `block` has cross-attention.
    pub fn down_has_attention(&self, block: usize) -> bool {
        self.down_block_types
            .get(block)
            .is_some_and(|t| t == "CrossAttnDownBlock2D")
    }

    /// Whether up block `block` (deepest first) has cross-attention.
    pub fn up_has_attention(&self, block: usize) -> bool {
        self.up_block_types
            .get(block)
            .is_some_and(|t| t == "CrossAttnUpBlock2D")
    }
}

/// `vae/config.json` (diffusers `AutoencoderKL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Channels of the latent.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Image side the model was trained at.
    pub sample_size: usize,
    /// Factor applied to latents before the UNet sees them.
    pub scaling_factor: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
        }
    }
}
