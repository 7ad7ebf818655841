"""Goldens for A1111 prompt emphasis and chunking (inference-server/src/pipeline/prompt/).

Usage: python prompt_goldens.py TEST_MODELS_DIR [OUT_DIR]
  TEST_MODELS_DIR: written by `cargo run -p inference-server --example write_test_models -- DIR`
  (the tokenizer is read from DIR/sd1-diffusers-f32/tokenizer).
  OUT_DIR defaults to inference-server/tests/goldens.

`parse_prompt_attention` below is a faithful copy of the function in
AUTOMATIC1111/stable-diffusion-webui `modules/prompt_parser.py` (commit 28bd8e14).
`tokenize_line` is a copy of `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` from
`modules/sd_hijack_clip.py` (commit 00e09382) without textual-inversion embeddings, with
`opts.comma_padding_backtrack` as a parameter and `self.tokenize` being
`tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]`.
"""

import json
import re
import sys
from pathlib import Path

from transformers import CLIPTokenizer

# --- copied from modules/prompt_parser.py (28bd8e14) ---------------------------------------

re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    round_brackets = []
    square_brackets = []

    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        text = m.group(0)
        weight = m.group(1)

        if text.startswith('\\'):
            res.append([text[1:], 1.0])
        elif text == '(':
            round_brackets.append(len(res))
        elif text == '[':
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ')' and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif text == ']' and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            parts = re.split(re_break, text)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)

    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)

    if len(res) == 0:
        res = [["", 1.0]]

    # merge runs of identical weights
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res


# --- tokenize_line from modules/sd_hijack_clip.py (00e09382), embeddings removed ----------

CHUNK_LENGTH = 75


def tokenize_line(tokenizer, line, comma_padding_backtrack=20):
    id_start = tokenizer.bos_token_id
    id_end = tokenizer.eos_token_id
    comma_token = tokenizer.get_vocab().get(',</w>', None)

    parsed = parse_prompt_attention(line)
    tokenized = tokenizer([text for text, _ in parsed], truncation=False,
                          add_special_tokens=False)["input_ids"]

    chunks = []
    chunk = {"tokens": [], "multipliers": []}
    token_count = 0
    last_comma = -1

    def next_chunk(is_last=False):
        nonlocal token_count, last_comma, chunk
        if is_last:
            token_count += len(chunk["tokens"])
        else:
            token_count += CHUNK_LENGTH
        to_add = CHUNK_LENGTH - len(chunk["tokens"])
        if to_add > 0:
            chunk["tokens"] += [id_end] * to_add
            chunk["multipliers"] += [1.0] * to_add
        chunk["tokens"] = [id_start] + chunk["tokens"] + [id_end]
        chunk["multipliers"] = [1.0] + chunk["multipliers"] + [1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = {"tokens": [], "multipliers": []}

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == 'BREAK' and weight == -1:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_token:
                last_comma = len(chunk["tokens"])
            elif (comma_padding_backtrack != 0 and len(chunk["tokens"]) == CHUNK_LENGTH
                  and last_comma != -1
                  and len(chunk["tokens"]) - last_comma <= comma_padding_backtrack):
                break_location = last_comma + 1
                reloc_tokens = chunk["tokens"][break_location:]
                reloc_mults = chunk["multipliers"][break_location:]
                chunk["tokens"] = chunk["tokens"][:break_location]
                chunk["multipliers"] = chunk["multipliers"][:break_location]
                next_chunk()
                chunk["tokens"] = reloc_tokens
                chunk["multipliers"] = reloc_mults
            if len(chunk["tokens"]) == CHUNK_LENGTH:
                next_chunk()
            chunk["tokens"].append(token)
            chunk["multipliers"].append(weight)
            position += 1

    if chunk["tokens"] or not chunks:
        next_chunk(is_last=True)

    return chunks, token_count


# --- the prompts ----------------------------------------------------------------------------

ATTENTION_PROMPTS = [
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "",
    "((a))",
    "(((a)))",
    "[[a]]",
    "[[[a]]]",
    "(a:1.5)",
    "(a:0.5)",
    "(a: 1.5 )",
    "(a:+1.5)",
    "(a:-1)",
    "(a:.5)",
    "(a:1.)",
    "(a:1e1)",
    "(a:abc)",
    "(a:1.5",
    "a:1.5)",
    "[a:1.5]",
    "((a:1.2):1.5)",
    "([a])",
    "[(a)]",
    "a)b]c",
    "unbalanced]",
    "\\\\",
    "a\\b",
    "\\",
    "trailing\\",
    "\\(a\\)",
    "(\\(a\\))",
    "a BREAK b",
    "BREAK",
    "a BREAK",
    "BREAKfast BREAK_ xBREAK",
    "(a:1.2) BREAK [b]",
    "a\tBREAK\nb",
    "(a BREAK b)",
    "BREAK BREAK",
    "a,BREAK,b",
    "(BRE\\AK:-1) x",
    "()",
    "[]",
    "(:1.2)",
    "(((",
    ")))",
    "猫 (かわいい:1.2) 🐱",
    "[🎉] émoji (ñ)",
    "a (b (c (d (e))))",
    "(a:0)",
    "(a:1.1)(b)",
    "((masterpiece)), best quality, [[blurry]], (detailed eyes:1.3)",
    ":::",
    "a : b",
    "(a:1.2 :1.3)",
    "BREAK(a)BREAK",
    "  leading and trailing  ",
    "[a [b [c]:2]]",
    "(a:1.5)(b:1.5)[c]",
    "\\[not (emph\\)] asis\\]",
    "mid\\nline",
]

_LONG = "cat " * 80
CHUNK_CASES = [
    ("a photo of a cat", 20),
    ("", 20),
    ("BREAK", 20),
    ("a (cat:1.3) BREAK [dog]", 20),
    ("BREAK BREAK a", 20),
    (_LONG, 20),
    (_LONG + "BREAK (dog:1.2)", 20),
    ("cat " * 70 + ", " + "dog " * 10, 20),           # comma 5 tokens before the end
    ("cat " * 70 + ", " + "dog " * 10, 0),            # backtracking off
    ("cat " * 70 + ", " + "dog " * 10, 4),            # comma too far for 4
    ("cat, " + "dog " * 80, 20),                      # comma too far for 20
    ("cat " * 55 + ", " + "dog " * 30, 20),           # 75 - 55 = 20: moves
    ("cat " * 54 + ", " + "dog " * 30, 20),           # 21: stays
    ("cat " * 75 + ", dog", 20),                      # comma arrives on a full chunk
    ("cat " * 74 + ", dog dog", 20),                  # comma is the 75th token
    ("(" + "red cat, " * 40 + ":1.2) [blue dog], " * 2 + "BREAK green", 20),
    ("masterpiece, " * 60, 20),
    ("(BRE\\AK:-1) x", 20),
]


def random_prompts(seed, count, max_len, pieces):
    """Seeded random prompts from `pieces`, skipping those on which A1111 raises."""
    import random
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        p = "".join(rng.choice(pieces) for _ in range(rng.randrange(max_len)))
        try:
            parse_prompt_attention(p)
        except ValueError:
            continue
        out.append(p)
    return out


RANDOM_PIECES = ["(", ")", "[", "]", ":", "\\", " ", ",", ".", "1", "0.5", ":1.2)", ": 2 )",
                 "a", "cat", "BREAK", " BREAK ", "_", "猫", "🐱", "é", "\t", "+", "-"]
CHUNK_PIECES = ["cat ", "dog ", ", ", "(", ")", "[", "]", ":1.3)", " BREAK ", "red cat, "]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    models = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent.parent / "goldens"
    tokenizer = CLIPTokenizer.from_pretrained(models / "sd1-diffusers-f32" / "tokenizer")

    assert len(ATTENTION_PROMPTS) >= 40
    prompts = ATTENTION_PROMPTS + random_prompts(1, 200, 30, RANDOM_PIECES)
    attention = [{"prompt": p, "parsed": parse_prompt_attention(p)} for p in prompts]
    # The docstring examples of A1111, as a sanity check of the copy.
    assert parse_prompt_attention("an (important) word") == [
        ["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert parse_prompt_attention("(unnecessary)(parens)") == [["unnecessaryparens", 1.1]]

    chunks = []
    cases = CHUNK_CASES + [(p, 20) for p in random_prompts(2, 20, 150, CHUNK_PIECES)]
    for prompt, backtrack in cases:
        cs, count = tokenize_line(tokenizer, prompt, backtrack)
        assert all(len(c["tokens"]) == 77 and len(c["multipliers"]) == 77 for c in cs)
        chunks.append({"prompt": prompt, "comma_padding_backtrack": backtrack,
                       "token_count": count, "chunks": cs})

    (out / "prompt_attention.json").write_text(
        json.dumps(attention, ensure_ascii=False) + "\n")
    (out / "prompt_chunks.json").write_text(json.dumps(chunks, ensure_ascii=False) + "\n")
    print(f"{len(attention)} attention prompts, {len(chunks)} chunk cases -> {out}")


if __name__ == "__main__":
    main()
