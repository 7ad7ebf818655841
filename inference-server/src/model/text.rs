//! Prompt to text embeddings for a checkpoint: its tokenizer (the diffusers folder's
//! `tokenizer/`, or the built-in CLIP vocabulary for single files), its padding rule (SD 1.x pads
//! with `<|endoftext|>`, SD 2.x with `!`) and its CLIP text encoder.

use std::ops::Deref;

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::clip::ClipTextEncoder;
use crate::model::tokenizer::{SD2_PAD_ID, Tokenizer};
use crate::model::weights::{Checkpoint, Variant};

/// The checkpoint's own vocabulary, or the built-in one shared by the process.
#[derive(Debug)]
enum TokenizerSource {
    Builtin(&'static Tokenizer),
    Folder(Box<Tokenizer>),
}

impl Deref for TokenizerSource {
    type Target = Tokenizer;

    fn deref(&self) -> &Tokenizer {
        match self {
            TokenizerSource::Builtin(t) => t,
            TokenizerSource::Folder(t) => t,
        }
    }
}

/// Everything that turns prompts into the embeddings the UNet attends to.
#[derive(Debug)]
pub struct TextConditioner {
    tokenizer: TokenizerSource,
    encoder: ClipTextEncoder,
    pad_id: u32,
}

impl TextConditioner {
    /// Loads the tokenizer and text encoder of `checkpoint` onto `device`.
    pub fn load(checkpoint: &Checkpoint, device: &Device) -> Result<TextConditioner, ModelError> {
        let tokenizer = match &checkpoint.tokenizer_dir {
            Some(dir) => TokenizerSource::Folder(Box::new(Tokenizer::from_files(
                &dir.join("vocab.json"),
                &dir.join("merges.txt"),
            )?)),
            None => TokenizerSource::Builtin(Tokenizer::builtin()),
        };
        let pad_id = match checkpoint.variant {
            Variant::Sd1 => tokenizer.eos_id(),
            Variant::Sd2 => SD2_PAD_ID,
        };
        let (config, weights) = &checkpoint.text_encoder;
        Ok(TextConditioner {
            tokenizer,
            encoder: ClipTextEncoder::load(config, weights, device)?,
            pad_id,
        })
    }

    /// The ids the encoder sees for `prompt`: BOS, at most 75 tokens, EOS, padding to 77.
    pub fn token_ids(&self, prompt: &str) -> Vec<u32> {
        self.tokenizer.encode_padded(prompt, self.pad_id)
    }

    /// The checkpoint's tokenizer (its folder's `tokenizer/` files, parsed once at load, or
    /// the built-in vocabulary).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The padding id in use (`<|endoftext|>` for SD 1.x, 0 for SD 2.x).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The text encoder, for callers that build their own id sequences.
    pub fn encoder(&self) -> &ClipTextEncoder {
        &self.encoder
    }

    /// Embeddings `[prompts.len(), 77, hidden]` of `prompts`, read `clip_skip` layers from the
    /// end (1 = last layer).
    pub fn encode(&self, prompts: &[&str], clip_skip: usize) -> Result<Tensor, ModelError> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.token_ids(p)).collect();
        self.encoder.forward(&ids, clip_skip)
    }
}
