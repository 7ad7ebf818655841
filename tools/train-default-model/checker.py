"""The held-out evaluation's checker: what an image shows, from pixel statistics.

Every pixel is labelled with the nearest palette colour (Euclidean RGB). The background is the
most common label; the shape's colour is the most common other label (at least MIN_SHAPE_PIXELS
pixels); the shape's position is the region holding the centroid of the shape-coloured pixels:
"center" when the centroid is within CENTER_RADIUS pixels of the middle on both axes, else the
quadrant. `inference-server/tests/it/shapes_oracle.rs` implements the same rules in Rust.
"""

import numpy as np

from data import COLOURS, PALETTE, SIZE

MIN_SHAPE_PIXELS = 12
CENTER_RADIUS = 8.0


def inspect(image):
    """(shape colour, background colour, position) seen in a uint8 HxWx3 image (None if none)."""
    pix = image.reshape(-1, 3).astype(np.float32)
    pal = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
    labels = ((pix[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(labels, minlength=len(COLOURS))
    bg = int(counts.argmax())
    counts[bg] = 0
    fg = int(counts.argmax())
    if counts[fg] < MIN_SHAPE_PIXELS:
        return None, COLOURS[bg], None
    ys, xs = np.divmod(np.nonzero(labels == fg)[0], image.shape[1])
    dx, dy = xs.mean() + 0.5 - SIZE / 2, ys.mean() + 0.5 - SIZE / 2
    if abs(dx) < CENTER_RADIUS and abs(dy) < CENTER_RADIUS:
        pos = "center"
    else:
        pos = ("top" if dy < 0 else "bottom") + " " + ("left" if dx < 0 else "right")
    return COLOURS[fg], COLOURS[bg], pos


def score(results):
    """Fractions correct per attribute and for all three, from (expected, seen) triples."""
    n = len(results)
    out = {}
    for k, name in enumerate(["shape colour", "background", "position"]):
        out[name] = sum(e[k] == s[k] for e, s in results) / n
    out["all three"] = sum(tuple(e) == tuple(s) for e, s in results) / n
    return out
