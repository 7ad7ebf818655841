"""The procedural data set of sdserve-shapes: one coloured shape on a plain background.

Everything is drawn from a `random.Random` seeded by the caller, so a seed fixes the images, the
captions and the held-out combinations. Images are drawn at 4x and box-filtered down to 64x64,
which gives anti-aliased edges.
"""

import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

SHAPES = ["circle", "square", "triangle", "star", "ring"]

# Nominal RGB of each colour word; images jitter each channel by up to COLOUR_JITTER.
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 135, 20),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOURS = list(PALETTE)
COLOUR_JITTER = 10

# Shape centre (x, y) in 64x64 pixels; jittered by up to POSITION_JITTER.
POSITIONS = {
    "center": (32, 32),
    "top left": (16, 16),
    "top right": (48, 16),
    "bottom left": (16, 48),
    "bottom right": (48, 48),
}
POSITION_JITTER = 3
# Radius range in pixels (outer radius for stars, half-diagonal-ish for squares).
SIZES = {"small": (7.0, 9.0), "large": (13.0, 15.0)}

POSITION_PHRASES = {
    "center": ["in the center", "in the middle", ""],
    "top left": ["in the top left corner", "at the top left"],
    "top right": ["in the top right corner", "at the top right"],
    "bottom left": ["in the bottom left corner", "at the bottom left"],
    "bottom right": ["in the bottom right corner", "at the bottom right"],
}
SIZE_WORDS = {"small": ["small", "little", ""], "large": ["large", "big", ""]}


def all_combinations():
    """Every (shape, colour, background, position) with the shape's colour != background's."""
    return [
        (s, c, b, p)
        for s in SHAPES
        for c in COLOURS
        for b in COLOURS
        if b != c
        for p in POSITIONS
    ]


def split_combinations(seed, held_out_fraction=0.1):
    """(training, held-out) combinations: a seeded shuffle, the first fraction held out."""
    combos = all_combinations()
    random.Random(seed).shuffle(combos)
    n = int(len(combos) * held_out_fraction)
    return sorted(combos[n:]), sorted(combos[:n])


def _article(next_word):
    return "an" if next_word[0] in "aeiou" else "a"


def caption(shape, colour, bg, pos, size, rng):
    """A plain-English caption with varied wording for one drawn image."""
    size_word = rng.choice(SIZE_WORDS[size])
    pos_phrase = rng.choice(POSITION_PHRASES[pos])
    noun = " ".join(w for w in [size_word, colour, shape] if w)
    thing = f"{_article(noun)} {noun}"
    where = f" {pos_phrase}" if pos_phrase else ""
    background = f"{_article(bg)} {bg} background"
    templates = [
        f"{thing}{where} on {background}",
        f"{thing}{where} on {background}",
        f"{thing} on {background}{where}",
        f"{noun}{where}, {bg} background",
        f"a picture of {thing}{where} on {background}",
        f"{background} with {thing}{where}",
    ]
    return rng.choice(templates)


def eval_caption(shape, colour, bg, pos, size):
    """The fixed wording of the evaluation prompts (the first template, every word present)."""
    noun = f"{size} {colour} {shape}"
    return f"{_article(noun)} {noun} {POSITION_PHRASES[pos][0]} on {_article(bg)} {bg} background"


def _jitter_colour(name, rng):
    return tuple(
        int(np.clip(v + rng.randint(-COLOUR_JITTER, COLOUR_JITTER), 0, 255))
        for v in PALETTE[name]
    )


def _star(cx, cy, r):
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -np.pi / 2 + k * np.pi / 5
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def draw(shape, colour, bg, pos, size, rng):
    """One 64x64 RGB image (uint8 array HxWx3) of the described scene."""
    s = SUPERSAMPLE
    fg_rgb, bg_rgb = _jitter_colour(colour, rng), _jitter_colour(bg, rng)
    img = Image.new("RGB", (SIZE * s, SIZE * s), bg_rgb)
    d = ImageDraw.Draw(img)
    x0, y0 = POSITIONS[pos]
    cx = (x0 + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * s
    cy = (y0 + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * s
    r = rng.uniform(*SIZES[size]) * s
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg_rgb)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg_rgb)
        ri = r * 0.55
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=bg_rgb)
    elif shape == "square":
        h = r * 0.85
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fg_rgb)
    elif shape == "triangle":
        h = r * 1.05
        pts = [(cx, cy - h), (cx - h * 0.95, cy + h * 0.75), (cx + h * 0.95, cy + h * 0.75)]
        d.polygon(pts, fill=fg_rgb)
    elif shape == "star":
        d.polygon(_star(cx, cy, r * 1.1), fill=fg_rgb)
    else:
        raise ValueError(shape)
    img = img.resize((SIZE, SIZE), Image.BOX)
    return np.asarray(img, dtype=np.uint8)


def make_pool(combos, n, seed):
    """n drawn images (uint8 N x 64 x 64 x 3) and their attributes (shape, colour, bg, pos, size)."""
    rng = random.Random(seed)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    attrs = []
    for i in range(n):
        shape, colour, bg, pos = combos[i % len(combos)]
        size = rng.choice(list(SIZES))
        images[i] = draw(shape, colour, bg, pos, size, rng)
        attrs.append((shape, colour, bg, pos, size))
    return images, attrs
