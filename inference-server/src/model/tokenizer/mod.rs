//! The CLIP text tokenizer of Stable Diffusion: byte-level BPE that gives the same ids as
//! transformers' `CLIPTokenizer` (the `tokenizers`-backed one of transformers 5) loaded from
//! `openai/clip-vit-large-patch14`.
//!
//! Special tokens written literally in a prompt (`<|startoftext|>`, `<|endoftext|>`, exact case)
//! become their ids, as in the reference. The built-in vocabulary is OpenAI's
//! `bpe_simple_vocab_16e6.txt.gz`, shipped in `inference-server/data/`.

mod bpe;
mod error;
mod files;
mod text;

use std::collections::HashMap;
use std::path::Path;

pub use error::TokenizerError;
pub use text::{BOS_TOKEN, EOS_TOKEN};

use bpe::Bpe;
use text::Segment;

/// Id of `<|startoftext|>` in the built-in vocabulary.
pub const BOS_ID: u32 = 49406;
/// Id of `<|endoftext|>` in the built-in vocabulary.
pub const EOS_ID: u32 = 49407;
/// Number of token positions the CLIP text encoder takes, BOS and EOS included.
pub const CONTEXT_LENGTH: usize = 77;
/// Padding id used by Stable Diffusion 1.x (its tokenizer pads with `<|endoftext|>`).
pub const SD1_PAD_ID: u32 = EOS_ID;
/// Padding id used by Stable Diffusion 2.x (its tokenizer pads with `!`, id 0).
///
/// Only the padding differs: transformers loaded with `pad_token="!"` would also turn every
/// literal `!` of a prompt into id 0, which [`Tokenizer::encode`] does not do.
pub const SD2_PAD_ID: u32 = 0;

/// A CLIP BPE tokenizer: vocabulary, merge ranks and a cache of encoded words.
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    bpe: Bpe,
    bos_id: u32,
    eos_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merges.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face style `vocab.json` (token → id) and `merges.txt` (one `left right`
    /// pair per line, best first, optional `#version` header).
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Tokenizer, TokenizerError> {
        files::load(vocab_json, merges_txt)
    }

    /// The built-in CLIP vocabulary (49,408 tokens, ids as in `openai/clip-vit-large-patch14`),
    /// decompressed and built on first use.
    pub fn builtin() -> &'static Tokenizer {
        files::builtin()
    }

    /// Writes `vocab.json` and `merges.txt` into `dir` (which must exist), in the format
    /// [`Tokenizer::from_files`] and transformers read.
    pub fn write_files(&self, dir: &Path) -> Result<(), TokenizerError> {
        files::write(self, dir)
    }

    /// Content ids of `text`: no BOS/EOS, no truncation.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for segment in text::segments(text) {
            match segment {
                Segment::Special(token) => ids.push(if token == BOS_TOKEN {
                    self.bos_id
                } else {
                    self.eos_id
                }),
                Segment::Text(raw) => {
                    text::for_each_word(&text::normalize(raw), |word| {
                        self.bpe.encode_word(word, &mut ids)
                    });
                }
            }
        }
        ids
    }

    /// The text encoder's input: BOS, at most 75 content ids, EOS, then `pad_id` up to
    /// [`CONTEXT_LENGTH`] ids.
    pub fn encode_padded(&self, text: &str, pad_id: u32) -> Vec<u32> {
        let mut content = self.encode(text);
        content.truncate(CONTEXT_LENGTH - 2);
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content);
        ids.push(self.eos_id);
        ids.resize(CONTEXT_LENGTH, pad_id);
        ids
    }

    /// Id of `<|startoftext|>` in this vocabulary.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>` in this vocabulary; also stands for unknown symbols.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Id of a vocabulary entry (byte-level form, e.g. `"cat</w>"`), if present.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }
}
