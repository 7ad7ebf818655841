//! Prompts as AUTOMATIC1111's webui reads them: emphasis (`(word)`, `[word]`,
//! `(word:1.3)`, escapes), `BREAK`, prompts longer than 75 tokens in 77-token chunks with a
//! multiplier per token, and the emphasis applied to the text encoder's output.
//!
//! ```
//! use inference_server::model::tokenizer::Tokenizer;
//! use inference_server::pipeline::prompt::{tokenize_line, ChunkOptions};
//! let prompt = tokenize_line(Tokenizer::builtin(), "a (cat:1.5) BREAK [dog]", ChunkOptions::default());
//! assert_eq!(prompt.chunks.len(), 2);
//! assert_eq!(prompt.chunks[0].tokens.len(), 77);
//! ```
//!
//! Each chunk goes through the text encoder on its own; [`emphasize`] then applies the
//! chunk's multipliers, and the chunks' outputs are concatenated along the token axis.

mod attention;
mod chunks;
mod reweight;

pub use attention::{BREAK_WEIGHT, PromptPart, parse_prompt_attention, parse_prompt_parts};
pub use chunks::{
    CHUNK_LENGTH, ChunkOptions, DEFAULT_COMMA_PADDING_BACKTRACK, PromptChunk, TokenizedPrompt,
    tokenize_line, tokenize_parts,
};
pub use reweight::{apply_emphasis, emphasize};
