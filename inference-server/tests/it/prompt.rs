//! A1111 prompt emphasis and chunking against the goldens of `parity/prompt_goldens.py`.

use inference_server::engine::{Device, Tensor};
use inference_server::model::tokenizer::Tokenizer;
use inference_server::pipeline::prompt::{
    ChunkOptions, PromptChunk, PromptPart, apply_emphasis, emphasize, parse_prompt_attention,
    parse_prompt_parts, tokenize_line,
};
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = format!("{}/tests/goldens/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn attention_matches_a1111() {
    let cases = golden("prompt_attention.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<(String, f64)> = case["parsed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
            .collect();
        let got = parse_prompt_attention(prompt);
        let ok = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && close(g.1, w.1));
        if !ok {
            failures.push(format!("{prompt:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn chunks_match_a1111() {
    let tok = Tokenizer::builtin();
    let cases = golden("prompt_chunks.json");
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let backtrack = case["comma_padding_backtrack"].as_u64().unwrap() as usize;
        let options = ChunkOptions {
            comma_padding_backtrack: backtrack,
            emphasis: true,
        };
        let got = tokenize_line(tok, prompt, options);
        let want: Vec<(Vec<u32>, Vec<f64>)> = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let t = c["tokens"].as_array().unwrap();
                let m = c["multipliers"].as_array().unwrap();
                (
                    t.iter().map(|v| v.as_u64().unwrap() as u32).collect(),
                    m.iter().map(|v| v.as_f64().unwrap()).collect(),
                )
            })
            .collect();
        let same = got.chunks.len() == want.len()
            && got.chunks.iter().zip(&want).all(|(g, w)| {
                g.tokens == w.0
                    && g.multipliers.len() == w.1.len()
                    && g.multipliers.iter().zip(&w.1).all(|(&a, &b)| close(a, b))
            });
        let count = case["token_count"].as_u64().unwrap() as usize;
        if !same || got.token_count != count {
            failures.push(format!(
                "{prompt:?} (backtrack {backtrack}): got {:?} / {}, want {:?} / {count}",
                got.chunks.iter().map(|c| &c.tokens).collect::<Vec<_>>(),
                got.token_count,
                want.iter().map(|w| &w.0).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn breaks_are_explicit() {
    let parts = parse_prompt_parts("(a:1.2) BREAK [b]");
    assert!(parts.contains(&PromptPart::Break));
    // Weighted "BREAK" text is a word, as in A1111.
    assert!(!parse_prompt_parts("(a BREAK b)").contains(&PromptPart::Break));
    // A1111 sees a merged "BREAK" of weight -1 as a break too.
    assert!(parse_prompt_parts(r"(BRE\AK:-1) x").contains(&PromptPart::Break));
}

#[test]
fn bad_weights_stay_text() {
    // A1111 raises ValueError on these; here the colon is text and scanning goes on.
    assert_eq!(
        parse_prompt_attention("(a:1..2)"),
        vec![("a:1..2".to_string(), 1.1)]
    );
    assert_eq!(
        parse_prompt_attention("(a:.)"),
        vec![("a:.".to_string(), 1.1)]
    );
}

#[test]
fn emphasis_off_is_one_piece() {
    let tok = Tokenizer::builtin();
    let options = ChunkOptions {
        emphasis: false,
        ..ChunkOptions::default()
    };
    let got = tokenize_line(tok, "(a) BREAK b", options);
    assert_eq!(got.chunks.len(), 1);
    assert!(got.chunks[0].multipliers.iter().all(|&m| m == 1.0));
}

#[test]
fn sd2_padding_after_first_eos() {
    let tok = Tokenizer::builtin();
    let chunk = &tokenize_line(tok, "a cat", ChunkOptions::default()).chunks[0];
    let padded = chunk.tokens_padded_with(tok.eos_id(), 0);
    assert_eq!(&padded[..4], &chunk.tokens[..4]);
    assert_eq!(padded[3], tok.eos_id());
    assert!(padded[4..].iter().all(|&t| t == 0));
    assert_eq!(PromptChunk::empty(tok).tokens[0], tok.bos_id());
}

test_device!(emphasis_restores_mean);
fn emphasis_restores_mean(device: &Device) {
    let mut z: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let before: f64 = z.iter().map(|&v| f64::from(v)).sum::<f64>() / 12.0;
    let mults = [1.0, 1.5, 0.5];
    // A1111: z * m, then * (mean(z) / mean(z * m)).
    let weighted: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, &v)| v * mults[i / 4])
        .collect();
    let after: f64 = weighted.iter().map(|&v| f64::from(v)).sum::<f64>() / 12.0;
    apply_emphasis(&mut z, &mults).unwrap();
    for (g, w) in z.iter().zip(&weighted) {
        assert!((f64::from(*g) - f64::from(*w) * before / after).abs() < 1e-5);
    }
    let mean: f64 = z.iter().map(|&v| f64::from(v)).sum::<f64>() / 12.0;
    assert!((mean - before).abs() < 1e-5);
    assert!(apply_emphasis(&mut z, &[1.0; 5]).is_err());

    let t = Tensor::from_vec(vec![1.0; 2 * 3 * 4], [2, 3, 4], device).unwrap();
    let out = emphasize(&t, &[1.0, 2.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
    assert_eq!(out.dims(), &[2, 3, 4]);
    assert!(emphasize(&t, &[1.0; 3]).is_err());
    // All-zero multipliers: no division by zero, no NaN.
    let mut zeros = vec![1.0f32; 8];
    apply_emphasis(&mut zeros, &[0.0, 0.0]).unwrap();
    assert!(zeros.iter().all(|v| v.is_finite()));
}

#[test]
fn random_prompts_never_panic() {
    let tok = Tokenizer::builtin();
    let alphabet: Vec<char> = "()[]:\\ ,.+-0123456789aBREAKbreak\t\n猫🐱é_"
        .chars()
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        let mut s = String::new();
        let len = (state % 120) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            s.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        state = state.wrapping_add(1);
        let parsed = parse_prompt_attention(&s);
        assert!(!parsed.is_empty());
        let chunks = tokenize_line(tok, &s, ChunkOptions::default());
        assert!(
            chunks
                .chunks
                .iter()
                .all(|c| c.tokens.len() == 77 && c.multipliers.len() == 77)
        );
    }
}

#[test]
fn deep_nesting_is_handled() {
    let depth = 5000;
    let prompt = format!("{}{}", "(a ".repeat(depth), ")".repeat(depth + 10));
    let start = std::time::Instant::now();
    let parsed = parse_prompt_attention(&prompt);
    // `depth` pieces of weights 1.1 .. 1.1^depth, then the 10 unmatched `)` as text.
    assert_eq!(parsed.len(), depth + 1);
    assert_eq!(parsed[0], ("a ".to_string(), 1.1));
    // 1.1^5000 overflows f32, as it does when A1111 hands the weight to torch.
    assert_eq!(parsed[depth - 1].1, f32::INFINITY);
    assert_eq!(parsed[depth].0, ")".repeat(10));
    eprintln!("depth {depth}: {:?}", start.elapsed());
}
