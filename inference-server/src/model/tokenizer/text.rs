//! Text clean-up and splitting into BPE words, as the `tokenizers`-backed `CLIPTokenizer` of
//! transformers 5 does it: special-token extraction on the raw text, then NFC, whitespace runs
//! to one space, per-character lowercasing, the CLIP split pattern, and byte-level mapping.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// The start-of-text token, matched literally in the raw prompt.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// The end-of-text token, matched literally in the raw prompt.
pub const EOS_TOKEN: &str = "<|endoftext|>";

static SPECIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<\|startoftext\|>|<\|endoftext\|>").expect("special-token pattern")
});
static WHITESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+").expect("whitespace pattern"));
static CLIP_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
        .expect("CLIP split pattern")
});
// The byte-level pre-tokenizer re-splits each CLIP piece with GPT-2's pattern. Pieces never hold
// whitespace, so its whitespace alternatives (which need look-ahead) can be left out. In
// practice this only splits a differently-cased special token such as `<|EndOfText|>`.
static GPT2_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+")
        .expect("GPT-2 split pattern")
});

/// A stretch of the raw prompt: either a literal special token or text to be tokenized.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Segment<'a> {
    Special(&'a str),
    Text(&'a str),
}

/// Cuts the raw prompt at literal `<|startoftext|>` / `<|endoftext|>` (case-sensitive, before
/// any normalization, as `tokenizers`' added vocabulary does).
pub(super) fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut last = 0;
    for m in SPECIAL.find_iter(text) {
        if m.start() > last {
            out.push(Segment::Text(&text[last..m.start()]));
        }
        out.push(Segment::Special(m.as_str()));
        last = m.end();
    }
    if last < text.len() {
        out.push(Segment::Text(&text[last..]));
    }
    out
}

/// NFC, every whitespace run to a single space, then lowercasing character by character (no
/// final-sigma rule, unlike `str::to_lowercase`).
pub(super) fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    WHITESPACE
        .replace_all(&nfc, " ")
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

/// Calls `word` for each BPE word of already-normalized text, in order.
pub(super) fn for_each_word(normalized: &str, mut word: impl FnMut(&str)) {
    for piece in CLIP_SPLIT.find_iter(normalized) {
        for sub in GPT2_SPLIT.find_iter(piece.as_str()) {
            word(sub.as_str());
        }
    }
}

/// GPT-2's reversible byte → printable character table, in the order CLIP lists its base
/// vocabulary: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
pub(super) fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let code = if printable(b as u8) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).expect("byte table stays below the surrogates");
    }
    table
}

fn printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 256 byte characters in CLIP's vocabulary order (printable bytes first, then the rest).
pub(super) fn byte_chars_in_vocab_order() -> Vec<char> {
    let table = byte_chars();
    let mut order: Vec<u8> = (0..=255u8).filter(|&b| printable(b)).collect();
    order.extend((0..=255u8).filter(|&b| !printable(b)));
    order.into_iter().map(|b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let t = byte_chars();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xAD], 'Ń');
        let order = byte_chars_in_vocab_order();
        assert_eq!(order[0], '!');
        assert_eq!(order[188], 'Ā');
    }

    #[test]
    fn normalization_and_split() {
        assert_eq!(normalize("  A\t\nΣΑΣ "), " a σασ ");
        let mut words = Vec::new();
        for_each_word(&normalize("Don't <|EndOfText|> x1!?"), |w| {
            words.push(w.to_owned())
        });
        assert_eq!(
            words,
            ["don", "'t", "<|", "endoftext", "|>", "x", "1", "!?"]
        );
        assert_eq!(
            segments("a<|endoftext|>"),
            [Segment::Text("a"), Segment::Special(EOS_TOKEN)]
        );
    }
}
