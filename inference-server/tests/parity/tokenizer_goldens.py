"""Write the CLIP tokenizer goldens used by `inference-server/tests/it/tokenizer.rs`.

The reference is Hugging Face transformers' `CLIPTokenizer` (transformers 5: the
`tokenizers`-backed class). Its vocabulary is built here, independently of the Rust code,
from the OpenAI merge list that the repository ships
(`inference-server/data/bpe_simple_vocab_16e6.txt.gz`), the way OpenAI CLIP builds it; that
gives the ids of `openai/clip-vit-large-patch14` with no download.

Run from anywhere, with any Python that has `transformers` (5.x) and `tokenizers`:

    /work/.venv-ref/bin/python inference-server/tests/parity/tokenizer_goldens.py

or `python -m venv v && v/bin/pip install transformers tokenizers && v/bin/python ...`.
It rewrites `inference-server/tests/goldens/tokenizer.json`; prompts are deterministic, so
re-running with the same library versions gives the same file.
"""

import gzip
import json
import random
import tempfile
from pathlib import Path

import tokenizers
import transformers
from transformers import CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
BPE_GZ = ROOT / "inference-server" / "data" / "bpe_simple_vocab_16e6.txt.gz"
OUT = ROOT / "inference-server" / "tests" / "goldens" / "tokenizer.json"
CONTEXT_LENGTH = 77


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_vocabulary(folder: Path) -> None:
    """vocab.json, merges.txt and tokenizer_config.json as for openai/clip-vit-large-patch14."""
    lines = gzip.open(BPE_GZ).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), "utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")


FIXED = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT",
    "a photograph of an astronaut riding a horse",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer",
    "(masterpiece:1.3), (best quality:1.2), [lowres], ((detailed eyes))",
    "a cat BREAK a dog BREAK a bird",
    "portrait of a woman, (freckles:0.8), [[[blurry]]], {highres}",
    "<lora:detail_tweaker:0.7> a castle on a hill",
    "(red:1.1) (green:0.9) (blue) [yellow:purple:0.5]",
    "photo (of:1.5e-1) a [cat|dog] AND a fox :: 2",
    "embedding:easynegative, nsfw, worst quality, low quality:1.4",
    "don't stop",
    "it's a dog's life",
    "we're they've I'm you'll he'd",
    "DON'T IT'S WE'RE THEY'VE I'M YOU'LL HE'D",
    "rock 'n' roll 'quoted' ''double'' '''triple'''",
    "'s 't 're 've 'm 'll 'd",
    "o'clock, y'all, ma'am, ne'er-do-well",
    "the year 2023 and 3.14159 and 1,000,000 and 007",
    "0123456789",
    "½ ⅓ ² ³ ① ④ Ⅻ ٣ ۴ ५ ๙ 〇",
    "hello, world! how are you? (fine.) [ok] {yes} <no>",
    "!!!??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& |||",
    "a/b\\c|d~e`f^g",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "C++ and C# and F# and .NET",
    "café crème brûlée naïve façade",
    "Ångström Øresund Æther Œuvre straße",
    "e\u0301 vs \u00e9 (combining acute vs precomposed)",
    "A\u030a vs \u00c5 vs \u212b",
    "ΣΑΣ ΟΔΥΣΣΕΥΣ σοφός",
    "İstanbul ıi IJ ǅ ẞ",
    "Привет, мир! Съешь же ещё этих мягких французских булок",
    "東京タワー 夜景 高精細",
    "日本語のテキスト、句読点。",
    "中文提示词：一只可爱的猫",
    "한국어 프롬프트 고양이",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "😀 😃 😄 😁 😆",
    "a cat 🐱 wearing a hat 🎩",
    "👨‍👩‍👧‍👦 family emoji with zwj",
    "🏳️‍🌈 flag and 👍🏽 skin tone",
    "★☆♥♦♣♠ ♪♫ ☀☁☂",
    "→ ← ↑ ↓ ⇒ ∞ ≈ ≠ ≤ ≥ ± × ÷",
    "“smart quotes” ‘single’ «guillemets» „low“",
    "em—dash en–dash ellipsis… bullet•",
    "zero\u200bwidth\u200cjoiners\u200dhere\ufeffbom",
    "soft\u00adhyphen",
    "nbsp\u00a0between\u2003em\u3000ideographic",
    "nel\u0085line\u2028sep\u2029para",
    "file\x1csep\x1dgroup\x1erecord\x1funit",
    "bell\x07null\x00del\x7f",
    "tab\tseparated\tvalues",
    "new\nline\r\nwindows\rmac",
    "   leading spaces",
    "trailing spaces   ",
    "   both   sides   ",
    "many     internal      spaces",
    "\t\n \t\n mixed whitespace \n\t ",
    "\n\n\n",
    "&amp; &lt; &gt; &quot; &#39; &nbsp;",
    "&amp;amp; double escaped",
    "Tom &amp; Jerry",
    "<b>bold</b> <i>italic</i>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|startoftext|>a cat<|endoftext|>",
    "a <|endoftext|> b <|startoftext|> c",
    "x<|endoftext|>y",
    "<|ENDOFTEXT|> <|StartOfText|>",
    "<|endoftext|",
    "|endoftext|>",
    "< |endoftext| >",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababab",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "thequickbrownfoxjumpsoverthelazydog",
    "x" * 300,
    "lorem ipsum " * 40,
    "1 2 3 4 5 6 7 8 9 10 " * 10,
    ", ".join(f"tag{i}" for i in range(80)),
    "a " * 74 + "end",
    "a " * 75 + "end",
    "a " * 76 + "end",
    "word " * 200,
    "CamelCaseWordsAreHere and snake_case_words and kebab-case-words",
    "UPPER lower MiXeD",
    "ALLCAPSPROMPT WITH SHOUTING",
    "8k uhd, dslr, soft lighting, high quality, film grain, Fujifilm XT3",
    "trending on artstation, by greg rutkowski and alphonse mucha",
    "studio ghibli style, hayao miyazaki",
    "a painting in the style of Van Gogh's Starry Night",
    "cyberpunk city at night, neon lights, rain, 35mm, f/1.8",
    "f/2.8 1/250s ISO-100 24-70mm",
    "1920x1080, 16:9, 4:3",
    "#hashtag @mention $dollar 100% ^caret",
    "(((((nested)))))",
    "[[[[[nested]]]]]",
    "{{{{{nested}}}}}",
    "(word:1.3)",
    "[word]",
    "(word)",
    "(word:0)",
    "(word:-1.5)",
    "\\(escaped parens\\) \\[escaped brackets\\]",
    "BREAK",
    "break BREAK Break",
    "AND",
    "a:b:c::d",
    "....",
    "'",
    "''",
    "'''",
    "'s",
    "s'",
    "!'s",
    "?'t",
    "'re'",
    "it'S IT'll",
    "‘s ’s ’t",
    "ʼs modifier apostrophe",
    "ﬁ ﬂ ligatures ﬀ",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "ℌ𝔢𝔩𝔩𝔬 𝕨𝕠𝕣𝕝𝕕 𝐛𝐨𝐥𝐝",
    "Ⓐⓑⓒ ⒜⒝⒞",
    "¿Qué tal? ¡Muy bien!",
    "Zürich, München, Köln",
    "Ελληνικά κείμενα με τόνους: άέήίόύώ",
    "Ђђ Љљ Њњ Ћћ Џџ",
    "ქართული ენა",
    "Հայերեն",
    "ᚠᚢᚦᚨᚱᚲ runes",
    "𓀀𓀁 hieroglyphs",
    "∑∏∫√∂∇ math",
    "x² + y² = z²",
    "H₂O CO₂",
    "©®™ symbols",
    "€£¥₹₽ currencies",
    "°C °F 90°",
    "\u0301\u0301 leading combining marks",
    "ñ = n\u0303",
    "한\u1100\u1161 jamo",
    "\U0001F600\U0001F601",
    "a\u180eb mongolian vowel separator",
    "a\u2060b word joiner",
]


POOL = [
    "cat", "dog", "astronaut", "castle", "forest", "sunset", "portrait", "landscape", "cyberpunk",
    "watercolor", "oil painting", "photorealistic", "highly detailed", "octane render", "unreal engine",
    "bokeh", "golden hour", "volumetric lighting", "masterpiece", "best quality", "lowres", "bad anatomy",
    "1girl", "2boys", "solo", "smile", "blue eyes", "red hair", "school uniform", "kimono", "armor",
    "dragon", "robot", "spaceship", "underwater", "mountain", "city", "street", "cafe", "library",
    "BREAK", "AND", "don't", "it's", "they're", "we've", "I'm", "you'll", "she'd", "o'neil",
    "café", "naïve", "São Paulo", "Kraków", "Ærø", "Straße", "ΣΟΦΙΑ", "москва", "東京", "서울", "北京",
    "🐱", "🌸", "🔥", "✨", "🚀", "❤️", "🇯🇵", "👩🏻‍🎨", "&amp;", "&lt;3", "&#x27;", "1.5", "2024",
    "3d", "4k", "8K", "16:9", "f/1.4", "50mm", "x1.5", "v2", "s01e02", "100%", "~", "...", "!!", "??",
    "<lora:foo:0.8>", "<hypernet:bar:1>", "[from:to:10]", "[a|b|c]", "{x|y}", "\\(paren\\)", "#tag",
]
WRAPPERS = [
    "{}", "({})", "(({}))", "[{}]", "[[{}]]", "({}:{w})", "[{}:{w}]", "{{{}}}", "'{}'", "\"{}\"",
    "{}!", "{}?", "{}...",
]
SEPARATORS = [", ", ",", " ", "  ", " , ", "\t", "\n", " | ", "; ", " BREAK ", ". ", " - ", ",\n"]
RANGES = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
    (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x2000, 0x206F),
    (0x2190, 0x22FF), (0x1F300, 0x1F64F), (0x300, 0x36F), (0xFF00, 0xFF5E),
]


def casing(rng: random.Random, text: str) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.title()
    if choice == 2:
        return "".join(c.upper() if rng.random() < 0.3 else c for c in text)
    return text


def random_prompt(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 3:
        chars = []
        for _ in range(rng.randrange(1, 40)):
            lo, hi = rng.choice(RANGES)
            chars.append(chr(rng.randint(lo, hi)))
        return "".join(chars)
    count = rng.randrange(1, 70 if kind == 2 else 14)
    parts = []
    for _ in range(count):
        word = casing(rng, rng.choice(POOL))
        if rng.random() < 0.35:
            weight = f"{rng.choice([0.5, 0.8, 1.1, 1.2, 1.3, 1.5, 2])}"
            word = rng.choice(WRAPPERS).replace("{w}", weight).replace("{}", word, 1)
        parts.append(word)
        parts.append(rng.choice(SEPARATORS))
    prompt = "".join(parts[:-1])
    if rng.random() < 0.2:
        prompt = rng.choice(["  ", "\t", "\n", " \n "]) + prompt + rng.choice(["  ", "\t", "\n", ""])
    return prompt


def prompts() -> list[str]:
    rng = random.Random(20240517)
    out = list(FIXED)
    while len(out) < 360:
        out.append(random_prompt(rng))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_vocabulary(folder)
        # CLIPTokenizer(vocab_file=..., merges_file=...) builds an empty tokenizer in
        # transformers 5; from_pretrained reads the files.
        sd1 = CLIPTokenizer.from_pretrained(folder)
        sd2 = CLIPTokenizer.from_pretrained(folder, pad_token="!")
    assert len(sd1) == 49408 and sd1.bos_token_id == 49406 and sd1.eos_token_id == 49407
    assert sd1("a photo of a cat")["input_ids"][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert sd2.pad_token_id == 0

    def padded(tok, text):
        return tok(text, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True)["input_ids"]

    all_prompts = prompts()
    cases = []
    for text in all_prompts:
        ids = padded(sd1, text)
        assert len(ids) == CONTEXT_LENGTH
        content = sd1(text, add_special_tokens=False, truncation=False)["input_ids"]
        cases.append({"prompt": text, "input_ids": ids, "content_ids": content})
    # With pad_token "!" transformers also treats every "!" in the raw prompt as that special
    # token (id 0, no `</w>`); the Rust tokenizer only pads with the id, so SD2 goldens skip "!".
    assert sd2("a!")["input_ids"] == [49406, 320, 0, 49407]
    sd2_cases = [{"prompt": t, "input_ids": padded(sd2, t)} for t in all_prompts if "!" not in t][:40]

    header = {
        "generator": "inference-server/tests/parity/tokenizer_goldens.py",
        "reference": f"transformers {transformers.__version__} CLIPTokenizer, tokenizers {tokenizers.__version__}",
        "context_length": CONTEXT_LENGTH,
        "sd1_pad_id": sd1.pad_token_id,
        "sd2_pad_id": sd2.pad_token_id,
        "sd2_note": "SD2 cases exclude prompts with '!': transformers with pad_token '!' encodes each '!' as id 0",
    }
    lines = [json.dumps(header, ensure_ascii=False)[:-1] + ","]
    for key, rows in (("cases", cases), ("sd2_cases", sd2_cases)):
        lines.append(f'"{key}": [')
        lines.append(",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in rows))
        lines.append("],")
    lines[-1] = "]}"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", "utf-8")
    print(f"wrote {len(cases)} cases + {len(sd2_cases)} SD2 cases to {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
