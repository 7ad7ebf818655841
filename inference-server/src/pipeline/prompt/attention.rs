//! A1111's emphasis syntax: `parse_prompt_attention` from `modules/prompt_parser.py`
//! (AUTOMATIC1111/stable-diffusion-webui, commit 28bd8e14), re-implemented without regexes.
//!
//! The prompt is scanned as A1111's `re_attention` does, alternatives in this order:
//! `\(` `\)` `\[` `\]` `\\` (escaped literal), a lone `\` (dropped), `(`, `[`,
//! `:` + optional whitespace + `[+-]?[.\d]+` + optional whitespace + `)` (explicit weight),
//! `)`, `]`, a run of other characters, a lone `:`.
//!
//! - `(x)` multiplies by 1.1, `[x]` by 1/1.1, `(x:w)` by `w`; nesting multiplies.
//! - Unbalanced openers apply to the end of the prompt (round ones first, then square ones);
//!   unmatched closers and a weight without an open `(` stay text.
//! - A weight that is not a number (`(a:b)`, `(a:1e1)`) is text, as in A1111.
//! - `BREAK` as a whole word (surrounding whitespace dropped) inside text becomes a break.
//! - Adjacent pieces of equal weight are merged; an empty result is `[("", 1.0)]`.
//!
//! Weights are computed in f64 with A1111's order of multiplications (so merging decides as
//! Python does) and returned as f32.
//!
//! Deliberate differences, all on input where A1111 raises or is ill-defined:
//! - a weight that matches the pattern but is not a float (`(a:1.2.3)`, `(a:.)`) makes A1111
//!   raise `ValueError`; here its `:` is text and scanning continues after it;
//! - digits in the weight are ASCII only (Python's `\d` also takes other Unicode digits);
//! - `\s` and `\w` (for `BREAK`'s word boundaries) use Rust's Unicode classes
//!   (White_Space plus U+001C..U+001F; alphanumeric or `_`), which agree with Python's except
//!   for a few combining marks.
//!
//! Cost is O(pieces × nesting depth), as in A1111; callers should bound prompt length.

/// The weight A1111 gives a `BREAK` marker in its `(text, weight)` list.
pub const BREAK_WEIGHT: f32 = -1.0;

/// Multiplier of one pair of round brackets.
const ROUND: f64 = 1.1;
/// Multiplier of one pair of square brackets.
const SQUARE: f64 = 1.0 / 1.1;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPart {
    /// Text with its emphasis multiplier.
    Text {
        /// The text, escapes resolved, brackets removed.
        text: String,
        /// The multiplier of every token of `text`.
        weight: f32,
    },
    /// `BREAK`: the next text starts a new 75-token chunk.
    Break,
}

impl PromptPart {
    /// A1111's `(text, weight)` pair: a break is `("BREAK", -1.0)`.
    pub fn to_pair(&self) -> (String, f32) {
        match self {
            PromptPart::Text { text, weight } => (text.clone(), *weight),
            PromptPart::Break => ("BREAK".to_string(), BREAK_WEIGHT),
        }
    }
}

/// A1111's `parse_prompt_attention`: `(text, weight)` pairs, a break as `("BREAK", -1.0)`.
///
/// ```
/// use inference_server::pipeline::prompt::parse_prompt_attention;
/// let parsed = parse_prompt_attention("an (important) word");
/// assert_eq!(parsed[1].0, "important");
/// assert!((parsed[1].1 - 1.1).abs() < 1e-6);
/// ```
pub fn parse_prompt_attention(text: &str) -> Vec<(String, f32)> {
    parse_f64(text)
        .into_iter()
        .map(|(t, w)| (t, w as f32))
        .collect()
}

/// [`parse_prompt_attention`] with breaks as [`PromptPart::Break`]. As in A1111's
/// `tokenize_line`, a piece is a break exactly when its text is `BREAK` and its weight is
/// -1 (so `(BRE\AK:-1)` is a break too, the way A1111 sees it).
pub fn parse_prompt_parts(text: &str) -> Vec<PromptPart> {
    parse_f64(text)
        .into_iter()
        .map(|(text, weight)| {
            if text == "BREAK" && weight == -1.0 {
                PromptPart::Break
            } else {
                PromptPart::Text {
                    text,
                    weight: weight as f32,
                }
            }
        })
        .collect()
}

/// One match of A1111's `re_attention`.
enum Token<'a> {
    /// `\(` and friends: the literal (empty for a lone backslash).
    Escaped(&'a str),
    /// `(`.
    OpenRound,
    /// `[`.
    OpenSquare,
    /// `:w)` with the weight text `w`; `whole` is the full match.
    Weight { whole: &'a str, weight: &'a str },
    /// `)`.
    CloseRound,
    /// `]`.
    CloseSquare,
    /// A run of ordinary characters, or a lone `:`.
    Text(&'a str),
}

/// Python's `str.isspace` (what `\s` matches in a str pattern).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` in a str pattern (alphanumeric or underscore).
fn is_py_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Length in bytes of the prefix of `s` made of characters satisfying `f`.
fn prefix_len(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !f(c))
        .map_or(s.len(), |(i, _)| i)
}

/// The `:w)` alternative at the start of `s` (which starts with `:`): byte length of the
/// match and the byte range of the weight.
fn match_weight(s: &str) -> Option<(usize, usize, usize)> {
    let mut pos = 1;
    pos += prefix_len(&s[pos..], is_py_space);
    let start = pos;
    if s[pos..].starts_with(['+', '-']) {
        pos += 1;
    }
    let digits = prefix_len(&s[pos..], |c| c == '.' || c.is_ascii_digit());
    if digits == 0 {
        return None;
    }
    pos += digits;
    let end = pos;
    pos += prefix_len(&s[pos..], is_py_space);
    s[pos..].starts_with(')').then_some((pos + 1, start, end))
}

/// The next `re_attention` match at the start of non-empty `s`, and its byte length.
fn next_token(s: &str) -> (Token<'_>, usize) {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return (Token::Text(""), 0);
    };
    match first {
        '\\' => match chars.next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                (Token::Escaped(&s[1..1 + c.len_utf8()]), 2)
            }
            _ => (Token::Escaped(""), 1),
        },
        '(' => (Token::OpenRound, 1),
        '[' => (Token::OpenSquare, 1),
        ':' => match match_weight(s) {
            Some((len, a, b)) => (
                Token::Weight {
                    whole: &s[..len],
                    weight: &s[a..b],
                },
                len,
            ),
            None => (Token::Text(":"), 1),
        },
        ')' => (Token::CloseRound, 1),
        ']' => (Token::CloseSquare, 1),
        _ => {
            let len = prefix_len(s, |c| !matches!(c, '\\' | '(' | ')' | '[' | ']' | ':'));
            (Token::Text(&s[..len]), len)
        }
    }
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_break(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(offset) = text[search..].find("BREAK") {
        let k = search + offset;
        let end = k + "BREAK".len();
        let before_ok = text[..k].chars().next_back().is_none_or(|c| !is_py_word(c));
        let after_ok = text[end..].chars().next().is_none_or(|c| !is_py_word(c));
        if !(before_ok && after_ok) {
            search = k + 1;
            continue;
        }
        let lead = text[start..k].len() - text[start..k].trim_end_matches(is_py_space).len();
        parts.push(&text[start..k - lead]);
        start = end + prefix_len(&text[end..], is_py_space);
        search = start;
    }
    parts.push(&text[start..]);
    parts
}

/// Multiplies the weights of `res[from..]` by `by`.
fn multiply_range(res: &mut [(String, f64)], from: usize, by: f64) {
    for piece in res.iter_mut().skip(from) {
        piece.1 *= by;
    }
}

/// The parser proper, weights in f64 as in Python.
fn parse_f64(text: &str) -> Vec<(String, f64)> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (token, mut len) = next_token(rest);
        let literal = match token {
            Token::Escaped(lit) => {
                res.push((lit.to_string(), 1.0));
                None
            }
            Token::OpenRound => {
                round.push(res.len());
                None
            }
            Token::OpenSquare => {
                square.push(res.len());
                None
            }
            Token::Weight { whole, weight } => match round.last().copied() {
                None => Some(whole),
                Some(pos) => match weight.parse::<f64>() {
                    Ok(w) => {
                        round.pop();
                        multiply_range(&mut res, pos, w);
                        None
                    }
                    // A1111 raises here; the colon stays text and scanning goes on after it.
                    Err(_) => {
                        len = 1;
                        Some(":")
                    }
                },
            },
            Token::CloseRound => match round.pop() {
                Some(pos) => {
                    multiply_range(&mut res, pos, ROUND);
                    None
                }
                None => Some(")"),
            },
            Token::CloseSquare => match square.pop() {
                Some(pos) => {
                    multiply_range(&mut res, pos, SQUARE);
                    None
                }
                None => Some("]"),
            },
            Token::Text(t) => Some(t),
        };
        if let Some(t) = literal {
            for (i, part) in split_break(t).into_iter().enumerate() {
                if i > 0 {
                    res.push(("BREAK".to_string(), -1.0));
                }
                res.push((part.to_string(), 1.0));
            }
        }
        if len == 0 {
            break;
        }
        rest = &rest[len..];
    }
    for pos in round {
        multiply_range(&mut res, pos, ROUND);
    }
    for pos in square {
        multiply_range(&mut res, pos, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    merged
}
