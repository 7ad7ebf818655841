//! Prompts to UNet context, as A1111's `FrozenCLIPEmbedderWithCustomWords` does it: the prompt is
//! parsed for emphasis and cut into 77-token chunks ([`tokenize_line`]); each chunk goes through
//! CLIP on its own (reading `clip_skip` layers from the end, through the final layer norm);
//! [`emphasize`] applies the chunk's multipliers and restores its mean; the chunks are
//! concatenated along the token axis. Prompt and negative prompt are padded to the same number
//! of chunks with empty chunks (BOS, then EOS), which A1111 does within a batch and with its
//! "pad prompt/negative prompt to be same length" option.
//!
//! With a short prompt free of emphasis this is exactly diffusers' `encode_prompt` (one chunk,
//! multipliers 1, so [`emphasize`] is the identity).

use crate::engine::{Device, Tensor};
use crate::model::ModelError;
use crate::model::text::TextConditioner;
use crate::model::weights::Checkpoint;
use crate::pipeline::prompt::{ChunkOptions, PromptChunk, emphasize, tokenize_line};

/// The checkpoint's tokenizer and text encoder, turning prompt lines into contexts.
#[derive(Debug)]
pub struct Conditioner {
    text: TextConditioner,
    options: ChunkOptions,
}

/// Prompt and negative prompt embeddings for one batch, each `[B, 77·chunks, hidden]`.
#[derive(Debug, Clone)]
pub struct CondPair {
    /// The prompts' context.
    pub cond: Tensor,
    /// The negative prompts' context (same shape).
    pub uncond: Tensor,
}

impl Conditioner {
    /// Loads the tokenizer and CLIP text encoder of `checkpoint` onto `device`.
    pub fn load(checkpoint: &Checkpoint, device: &Device) -> Result<Conditioner, ModelError> {
        let text = TextConditioner::load(checkpoint, device)?;
        Ok(Conditioner {
            text,
            options: ChunkOptions::default(),
        })
    }

    /// The chunks of each prompt line, padded with empty chunks to `min_chunks` and to the
    /// longest line's count.
    pub fn chunks(&self, prompts: &[&str], min_chunks: usize) -> Vec<Vec<PromptChunk>> {
        let tok = self.text.tokenizer();
        let mut all: Vec<Vec<PromptChunk>> = prompts
            .iter()
            .map(|p| tokenize_line(tok, p, self.options).chunks)
            .collect();
        let n = all.iter().map(Vec::len).max().unwrap_or(1).max(min_chunks);
        for chunks in &mut all {
            chunks.resize(n, PromptChunk::empty(tok));
        }
        all
    }

    /// Encodes chunked prompts (all with the same chunk count) to `[B, 77·chunks, hidden]`.
    pub fn encode_chunks(
        &self,
        prompts: &[Vec<PromptChunk>],
        clip_skip: usize,
    ) -> Result<Tensor, ModelError> {
        let tok = self.text.tokenizer();
        let (eos, pad) = (tok.eos_id(), self.text.pad_id());
        let n = prompts.first().map_or(0, Vec::len);
        let mut per_chunk = Vec::with_capacity(n);
        for c in 0..n {
            let ids: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| p[c].tokens_padded_with(eos, pad))
                .collect();
            let z = self.text.encoder().forward(&ids, clip_skip)?;
            let multipliers: Vec<f32> = prompts
                .iter()
                .flat_map(|p| p[c].multipliers.iter().copied())
                .collect();
            // emphasize restores the mean over the whole tensor: apply it per prompt, as A1111.
            let mut items = Vec::with_capacity(prompts.len());
            for (i, _) in prompts.iter().enumerate() {
                let zi = z.narrow(0, i, 1)?;
                let m = &multipliers[i * zi.dims()[1]..(i + 1) * zi.dims()[1]];
                items.push(emphasize(&zi, m)?);
            }
            let refs: Vec<&Tensor> = items.iter().collect();
            per_chunk.push(Tensor::cat(&refs, 0)?);
        }
        let refs: Vec<&Tensor> = per_chunk.iter().collect();
        Ok(Tensor::cat(&refs, 1)?)
    }

    /// Context for `prompts` and `negative_prompts` (same length), padded to a common chunk
    /// count so that both halves fit one UNet batch.
    pub fn encode_pair(
        &self,
        prompts: &[&str],
        negative_prompts: &[&str],
        clip_skip: usize,
    ) -> Result<CondPair, ModelError> {
        if prompts.is_empty() || prompts.len() != negative_prompts.len() {
            return Err(ModelError::Input {
                field: "prompt",
                rule: "one prompt and one negative prompt per image, at least one".into(),
            });
        }
        let cond_chunks = self.chunks(prompts, 1);
        let uncond_chunks = self.chunks(negative_prompts, 1);
        let n = cond_chunks[0].len().max(uncond_chunks[0].len());
        let cond_chunks = self.chunks(prompts, n);
        let uncond_chunks = self.chunks(negative_prompts, n);
        Ok(CondPair {
            cond: self.encode_chunks(&cond_chunks, clip_skip)?,
            uncond: self.encode_chunks(&uncond_chunks, clip_skip)?,
        })
    }
}
