//! Long prompts in 77-token chunks with per-token multipliers: A1111's `tokenize_line` from
//! `modules/sd_hijack_clip.py` (AUTOMATIC1111/stable-diffusion-webui, commit 00e09382),
//! without textual-inversion embeddings.
//!
//! Every piece of the parsed prompt is tokenized on its own (no BOS/EOS). Tokens fill
//! chunks of 75; a full chunk gets BOS in front, EOS behind (77 ids, multiplier 1.0 on both)
//! and the next starts. When a chunk is full, the next token is not a comma and a comma
//! sits at most `comma_padding_backtrack` tokens from the end, the tokens after that comma
//! move to the next chunk. `BREAK` closes the current chunk (even an empty one). The last
//! chunk is padded with EOS (multiplier 1.0); a prompt with no tokens is one padded chunk.

use super::attention::{PromptPart, parse_prompt_parts};
use crate::model::tokenizer::{CONTEXT_LENGTH, Tokenizer};

/// Prompt tokens per chunk (the 77 of CLIP minus BOS and EOS).
pub const CHUNK_LENGTH: usize = CONTEXT_LENGTH - 2;

/// A1111's default `comma_padding_backtrack`.
pub const DEFAULT_COMMA_PADDING_BACKTRACK: usize = 20;

/// How a prompt line is chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Move text after a comma this close to a chunk's end into the next chunk; 0 disables
    /// (A1111 setting `comma_padding_backtrack`, default 20).
    pub comma_padding_backtrack: usize,
    /// Parse emphasis and `BREAK`; when false the line is one piece of weight 1.0 (A1111's
    /// emphasis mode "None").
    pub emphasis: bool,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            comma_padding_backtrack: DEFAULT_COMMA_PADDING_BACKTRACK,
            emphasis: true,
        }
    }
}

/// One text-encoder input: [`CONTEXT_LENGTH`] ids and as many multipliers.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    /// BOS, 75 prompt or EOS-padding ids, EOS.
    pub tokens: Vec<u32>,
    /// The emphasis multiplier of each id (1.0 for BOS, EOS and padding).
    pub multipliers: Vec<f32>,
}

impl PromptChunk {
    /// A chunk of no prompt tokens (BOS, then EOS up to 77); A1111's `empty_chunk`, used to
    /// pad a batch whose prompts have different chunk counts.
    pub fn empty(tokenizer: &Tokenizer) -> PromptChunk {
        let mut tokens = vec![tokenizer.eos_id(); CONTEXT_LENGTH];
        tokens[0] = tokenizer.bos_id();
        PromptChunk {
            tokens,
            multipliers: vec![1.0; CONTEXT_LENGTH],
        }
    }

    /// The ids with everything after the first EOS replaced by `pad_id` (SD 2 pads with id 0,
    /// SD 1 with EOS, where this is the identity); A1111's `process_tokens` does this.
    pub fn tokens_padded_with(&self, eos_id: u32, pad_id: u32) -> Vec<u32> {
        let mut out = self.tokens.clone();
        if let Some(first_eos) = out.iter().position(|&t| t == eos_id) {
            out[first_eos + 1..].iter_mut().for_each(|t| *t = pad_id);
        }
        out
    }
}

/// The chunks of one prompt line.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    /// At least one chunk.
    pub chunks: Vec<PromptChunk>,
    /// A1111's token count: 75 per closed chunk plus the tokens of the last one (what its UI
    /// shows against the 75-token limit).
    pub token_count: usize,
}

/// Parses `line` (unless emphasis is off) and chunks it: A1111's `tokenize_line`.
pub fn tokenize_line(tokenizer: &Tokenizer, line: &str, options: ChunkOptions) -> TokenizedPrompt {
    let parts = if options.emphasis {
        parse_prompt_parts(line)
    } else {
        vec![PromptPart::Text {
            text: line.to_string(),
            weight: 1.0,
        }]
    };
    tokenize_parts(tokenizer, &parts, options)
}

/// Chunks already parsed pieces (see [`tokenize_line`]).
pub fn tokenize_parts(
    tokenizer: &Tokenizer,
    parts: &[PromptPart],
    options: ChunkOptions,
) -> TokenizedPrompt {
    let mut builder = Builder {
        bos: tokenizer.bos_id(),
        eos: tokenizer.eos_id(),
        chunks: Vec::new(),
        tokens: Vec::new(),
        multipliers: Vec::new(),
        token_count: 0,
        last_comma: None,
    };
    let comma = tokenizer.token_id(",</w>");
    let backtrack = options.comma_padding_backtrack;
    for part in parts {
        let (text, weight) = match part {
            PromptPart::Break => {
                builder.next_chunk(false);
                continue;
            }
            PromptPart::Text { text, weight } => (text, *weight),
        };
        for token in tokenizer.encode(text) {
            if Some(token) == comma {
                builder.last_comma = Some(builder.tokens.len());
            } else if let Some(last_comma) = builder.last_comma {
                let len = builder.tokens.len();
                if backtrack != 0 && len == CHUNK_LENGTH && len - last_comma <= backtrack {
                    let reloc_tokens = builder.tokens.split_off(last_comma + 1);
                    let reloc_mults = builder.multipliers.split_off(last_comma + 1);
                    builder.next_chunk(false);
                    builder.tokens = reloc_tokens;
                    builder.multipliers = reloc_mults;
                }
            }
            if builder.tokens.len() == CHUNK_LENGTH {
                builder.next_chunk(false);
            }
            builder.tokens.push(token);
            builder.multipliers.push(weight);
        }
    }
    if !builder.tokens.is_empty() || builder.chunks.is_empty() {
        builder.next_chunk(true);
    }
    TokenizedPrompt {
        chunks: builder.chunks,
        token_count: builder.token_count,
    }
}

/// The state of `tokenize_line`.
struct Builder {
    bos: u32,
    eos: u32,
    chunks: Vec<PromptChunk>,
    tokens: Vec<u32>,
    multipliers: Vec<f32>,
    token_count: usize,
    /// Index in `tokens` of the last comma of the current chunk.
    last_comma: Option<usize>,
}

impl Builder {
    /// A1111's `next_chunk`: pads, wraps in BOS/EOS and starts an empty chunk.
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last {
            self.tokens.len()
        } else {
            CHUNK_LENGTH
        };
        let mut tokens = Vec::with_capacity(CONTEXT_LENGTH);
        tokens.push(self.bos);
        tokens.append(&mut self.tokens);
        tokens.resize(CONTEXT_LENGTH - 1, self.eos);
        tokens.push(self.eos);
        let mut multipliers = Vec::with_capacity(CONTEXT_LENGTH);
        multipliers.push(1.0);
        multipliers.append(&mut self.multipliers);
        multipliers.resize(CONTEXT_LENGTH, 1.0);
        self.last_comma = None;
        self.chunks.push(PromptChunk {
            tokens,
            multipliers,
        });
    }
}
