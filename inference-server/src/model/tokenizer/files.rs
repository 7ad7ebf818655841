//! Building a [`Tokenizer`]: from `vocab.json` + `merges.txt`, from the built-in OpenAI merge
//! list, and writing the two files back out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use super::bpe::Bpe;
use super::text::{BOS_TOKEN, EOS_TOKEN, byte_chars, byte_chars_in_vocab_order};
use super::{Tokenizer, TokenizerError};

const BUILTIN_GZ: &[u8] = include_bytes!("../../../data/bpe_simple_vocab_16e6.txt.gz");
const BUILTIN_NAME: &str = "built-in bpe_simple_vocab_16e6.txt.gz";
/// OpenAI CLIP keeps merge lines 1..=48894 of the file (49152 − 256 − 2 of them).
const BUILTIN_MERGES: usize = 49152 - 256 - 2;
const END_OF_WORD: &str = "</w>";
const MERGES_HEADER: &str = "#version: 0.2";

/// A merge as read: its 1-based line number (for errors) and its two halves.
type Merge = (usize, String, String);

pub(super) fn load(vocab_path: &Path, merges_path: &Path) -> Result<Tokenizer, TokenizerError> {
    let raw = std::fs::read(vocab_path).map_err(|e| TokenizerError::io(vocab_path, e))?;
    let vocab: HashMap<String, u32> = serde_json::from_slice(&raw).map_err(|e| {
        TokenizerError::invalid(
            vocab_path,
            format!("not a JSON object mapping tokens to ids: {e}"),
        )
    })?;

    let raw = std::fs::read(merges_path).map_err(|e| TokenizerError::io(merges_path, e))?;
    let text = String::from_utf8(raw)
        .map_err(|e| TokenizerError::invalid(merges_path, format!("not UTF-8: {e}")))?;
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() || (index == 0 && line.starts_with("#version")) {
            continue;
        }
        let Some((left, right)) = line.split_once(' ').filter(|(_, r)| !r.contains(' ')) else {
            return Err(TokenizerError::invalid(
                merges_path,
                format!(
                    "line {}: expected two tokens separated by one space, found {line:?}",
                    index + 1
                ),
            ));
        };
        merges.push((index + 1, left.to_owned(), right.to_owned()));
    }
    build(vocab, merges, vocab_path, merges_path)
}

pub(super) fn builtin() -> &'static Tokenizer {
    static BUILTIN: OnceLock<Tokenizer> = OnceLock::new();
    BUILTIN.get_or_init(|| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(BUILTIN_GZ)
            .read_to_string(&mut text)
            .expect("the built-in merge list is valid gzip-compressed UTF-8");
        let (vocab, merges) = openai_vocab(&text);
        let name = Path::new(BUILTIN_NAME);
        build(vocab, merges, name, name).expect("the built-in merge list forms a valid vocabulary")
    })
}

/// Vocabulary and merges exactly as OpenAI CLIP derives them from its merge list: the 256 byte
/// characters, the same with `</w>`, each merge's concatenation, then the two special tokens.
fn openai_vocab(text: &str) -> (HashMap<String, u32>, Vec<Merge>) {
    let merges: Vec<Merge> = text
        .split('\n')
        .enumerate()
        .skip(1)
        .take(BUILTIN_MERGES)
        .map(|(index, line)| {
            let mut parts = line.split_whitespace();
            let left = parts.next().unwrap_or_default().to_owned();
            let right = parts.next().unwrap_or_default().to_owned();
            (index + 1, left, right)
        })
        .collect();
    let bytes = byte_chars_in_vocab_order();
    let tokens = bytes
        .iter()
        .map(|c| c.to_string())
        .chain(bytes.iter().map(|c| format!("{c}{END_OF_WORD}")))
        .chain(merges.iter().map(|(_, l, r)| format!("{l}{r}")))
        .chain([BOS_TOKEN.to_owned(), EOS_TOKEN.to_owned()]);
    let vocab = tokens
        .enumerate()
        .map(|(id, token)| (token, id as u32))
        .collect();
    (vocab, merges)
}

fn build(
    vocab: HashMap<String, u32>,
    merges: Vec<Merge>,
    vocab_path: &Path,
    merges_path: &Path,
) -> Result<Tokenizer, TokenizerError> {
    let mut by_id: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (token, &id) in &vocab {
        if let Some(other) = by_id.insert(id, token) {
            let (a, b) = if other < token.as_str() {
                (other, token.as_str())
            } else {
                (token.as_str(), other)
            };
            return Err(TokenizerError::invalid(
                vocab_path,
                format!("id {id} is given to both {a:?} and {b:?}"),
            ));
        }
    }
    let special = |token: &str| {
        vocab.get(token).copied().ok_or_else(|| {
            TokenizerError::invalid(
                vocab_path,
                format!("special token {token:?} is not in the vocabulary"),
            )
        })
    };
    let bos_id = special(BOS_TOKEN)?;
    let eos_id = special(EOS_TOKEN)?;

    let mut ranks = HashMap::with_capacity(merges.len());
    for (rank, (line, left, right)) in merges.iter().enumerate() {
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                TokenizerError::invalid(
                    merges_path,
                    format!("line {line}: token {token:?} is not in the vocabulary"),
                )
            })
        };
        ranks.insert(
            (id(left)?, id(right)?),
            (rank as u32, id(&format!("{left}{right}"))?),
        );
    }

    let chars = byte_chars();
    let lookup = |b: usize, suffix: &str| {
        vocab
            .get(&format!("{}{suffix}", chars[b]))
            .copied()
            .unwrap_or(eos_id)
    };
    let byte_ids = std::array::from_fn(|b| lookup(b, ""));
    let byte_end_ids = std::array::from_fn(|b| lookup(b, END_OF_WORD));

    let merges = merges.into_iter().map(|(_, l, r)| (l, r)).collect();
    Ok(Tokenizer {
        bpe: Bpe::new(ranks, byte_ids, byte_end_ids),
        vocab,
        merges,
        bos_id,
        eos_id,
    })
}

pub(super) fn write(tokenizer: &Tokenizer, dir: &Path) -> Result<(), TokenizerError> {
    let mut entries: Vec<(&String, &u32)> = tokenizer.vocab.iter().collect();
    entries.sort_by_key(|&(_, &id)| id);
    let mut json = String::from("{");
    for (i, (token, id)) in entries.into_iter().enumerate() {
        let key = serde_json::to_string(token).expect("a string always serializes");
        let sep = if i == 0 { "" } else { "," };
        write!(json, "{sep}{key}:{id}").expect("writing to a String cannot fail");
    }
    json.push('}');
    let vocab_path = dir.join("vocab.json");
    std::fs::write(&vocab_path, json).map_err(|e| TokenizerError::io(&vocab_path, e))?;

    let mut merges = String::from(MERGES_HEADER);
    merges.push('\n');
    for (left, right) in &tokenizer.merges {
        writeln!(merges, "{left} {right}").expect("writing to a String cannot fail");
    }
    let merges_path = dir.join("merges.txt");
    std::fs::write(&merges_path, merges).map_err(|e| TokenizerError::io(&merges_path, e))
}
