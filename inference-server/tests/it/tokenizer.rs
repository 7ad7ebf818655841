//! Parity of the CLIP tokenizer with transformers' `CLIPTokenizer`, on the goldens written by
//! `tests/parity/tokenizer_goldens.py`, and its file-loading errors.

use std::path::Path;

use inference_server::model::tokenizer::{
    BOS_ID, CONTEXT_LENGTH, EOS_ID, SD1_PAD_ID, SD2_PAD_ID, Tokenizer, TokenizerError,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Goldens {
    sd1_pad_id: u32,
    sd2_pad_id: u32,
    cases: Vec<Case>,
    sd2_cases: Vec<Sd2Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    input_ids: Vec<u32>,
    content_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Sd2Case {
    prompt: String,
    input_ids: Vec<u32>,
}

fn goldens() -> Goldens {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("read goldens");
    let goldens: Goldens = serde_json::from_str(&text).expect("parse goldens");
    assert!(
        goldens.cases.len() >= 300,
        "too few golden prompts: {}",
        goldens.cases.len()
    );
    assert_eq!(
        (goldens.sd1_pad_id, goldens.sd2_pad_id),
        (SD1_PAD_ID, SD2_PAD_ID)
    );
    goldens
}

fn assert_parity(tokenizer: &Tokenizer, goldens: &Goldens) {
    let mut failures = Vec::new();
    for case in &goldens.cases {
        let content = tokenizer.encode(&case.prompt);
        if content != case.content_ids {
            failures.push(format!(
                "{:?}\n  content  ours {content:?}\n  expected {:?}",
                case.prompt, case.content_ids
            ));
        }
        let padded = tokenizer.encode_padded(&case.prompt, SD1_PAD_ID);
        if padded != case.input_ids {
            failures.push(format!(
                "{:?}\n  padded   ours {padded:?}\n  expected {:?}",
                case.prompt, case.input_ids
            ));
        }
    }
    for case in &goldens.sd2_cases {
        let padded = tokenizer.encode_padded(&case.prompt, SD2_PAD_ID);
        if padded != case.input_ids {
            failures.push(format!(
                "{:?}\n  SD2      ours {padded:?}\n  expected {:?}",
                case.prompt, case.input_ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn builtin_matches_transformers() {
    let tokenizer = Tokenizer::builtin();
    assert_eq!(tokenizer.vocab_size(), 49_408);
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (BOS_ID, EOS_ID));
    assert_eq!(
        tokenizer.encode("a photo of a cat"),
        [320, 1125, 539, 320, 2368]
    );
    assert_parity(tokenizer, &goldens());
}

#[test]
fn written_files_load_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    Tokenizer::builtin().write_files(dir.path()).unwrap();
    let merges = std::fs::read_to_string(dir.path().join("merges.txt")).unwrap();
    assert!(
        merges.starts_with("#version: 0.2\ni n\n"),
        "unexpected merges.txt start"
    );
    assert_eq!(merges.lines().count(), 1 + 48_894);

    let loaded = Tokenizer::from_files(
        &dir.path().join("vocab.json"),
        &dir.path().join("merges.txt"),
    )
    .unwrap();
    assert_eq!(loaded.vocab_size(), 49_408);
    assert_eq!(loaded.token_id("cat</w>"), Some(2368));
    assert_parity(&loaded, &goldens());
}

#[test]
fn padding_and_truncation() {
    let tokenizer = Tokenizer::builtin();
    let sd2 = tokenizer.encode_padded("a photo of a cat", SD2_PAD_ID);
    assert_eq!(sd2.len(), CONTEXT_LENGTH);
    assert_eq!(sd2[..7], [BOS_ID, 320, 1125, 539, 320, 2368, EOS_ID]);
    assert!(sd2[7..].iter().all(|&id| id == 0));

    let long = "cat ".repeat(100);
    assert_eq!(tokenizer.encode(&long).len(), 100);
    let padded = tokenizer.encode_padded(&long, SD2_PAD_ID);
    assert_eq!(padded.len(), CONTEXT_LENGTH);
    assert_eq!((padded[0], padded[76]), (BOS_ID, EOS_ID));
    assert!(padded[1..76].iter().all(|&id| id == 2368));
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn load_error(vocab: &Path, merges: &Path) -> (TokenizerError, String) {
    let err = Tokenizer::from_files(vocab, merges).expect_err("loading should fail");
    let message = err.to_string();
    (err, message)
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    Tokenizer::builtin().write_files(dir.path()).unwrap();
    let vocab = dir.path().join("vocab.json");
    let merges = dir.path().join("merges.txt");

    let absent = dir.path().join("absent-vocab.json");
    let (err, message) = load_error(&absent, &merges);
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    assert!(message.contains(&absent.display().to_string()), "{message}");

    let absent = dir.path().join("absent-merges.txt");
    let (_, message) = load_error(&vocab, &absent);
    assert!(message.contains(&absent.display().to_string()), "{message}");
}

#[test]
fn garbled_vocab_is_named() {
    let dir = tempfile::tempdir().unwrap();
    Tokenizer::builtin().write_files(dir.path()).unwrap();
    let merges = dir.path().join("merges.txt");

    let vocab = write(dir.path(), "vocab.json", "{\"a\": 0, \"b\": ");
    let (err, message) = load_error(&vocab, &merges);
    assert!(matches!(err, TokenizerError::Invalid { .. }), "{err:?}");
    assert!(
        message.contains(&vocab.display().to_string()) && message.contains("JSON"),
        "{message}"
    );

    let vocab = write(dir.path(), "vocab.json", r#"["not", "an", "object"]"#);
    let (_, message) = load_error(&vocab, &merges);
    assert!(message.contains(&vocab.display().to_string()), "{message}");

    let vocab = write(
        dir.path(),
        "vocab.json",
        r#"{"a": 0, "b": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}"#,
    );
    let (_, message) = load_error(&vocab, &merges);
    assert!(
        message.contains("vocab.json") && message.contains("id 0"),
        "{message}"
    );

    let vocab = write(dir.path(), "vocab.json", r#"{"a": 0, "<|endoftext|>": 1}"#);
    let (_, message) = load_error(&vocab, &merges);
    assert!(
        message.contains("vocab.json") && message.contains("<|startoftext|>"),
        "{message}"
    );
}

#[test]
fn bad_merges_are_named_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = write(
        dir.path(),
        "vocab.json",
        r#"{"a": 0, "b</w>": 1, "ab</w>": 2, "<|startoftext|>": 3, "<|endoftext|>": 4}"#,
    );

    let merges = write(dir.path(), "merges.txt", "#version: 0.2\na b</w>\nab\n");
    let (_, message) = load_error(&vocab, &merges);
    assert!(
        message.contains(&merges.display().to_string()) && message.contains("line 3"),
        "{message}"
    );

    let merges = write(dir.path(), "merges.txt", "#version: 0.2\na c\n");
    let (_, message) = load_error(&vocab, &merges);
    assert!(
        message.contains("merges.txt") && message.contains("line 2") && message.contains("\"c\""),
        "{message}"
    );

    let merges = write(dir.path(), "merges.txt", "#version: 0.2\na b</w>\n");
    let tokenizer = Tokenizer::from_files(&vocab, &merges).unwrap();
    assert_eq!(tokenizer.encode("ab"), [2]);
    assert_eq!(
        tokenizer.encode("ba"),
        [4, 4],
        "bytes missing from the vocabulary map to <|endoftext|>"
    );
}
