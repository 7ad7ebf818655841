#!/usr/bin/env python3
"""Goldens for img2img init-image handling (tests/it/init_image.rs), from PIL as A1111 uses it:

- resize_src.png: a 50x38 RGB pattern with hard edges (4-pixel checks), gradients and a
  diagonal, so resampling differences show.
- resize_<W>x<H>.png: it resized with Image.LANCZOS (A1111's resize mode "Just resize") to
  64x64 (what img2img does for a 64x64 request), 40x24 (down) and 96x80 (up).
- resize_src.jpg: the pattern as a JPEG (quality 95, 4:4:4 so no chroma upsampling is
  involved), and resize_src_jpg_decoded.png: PIL's decode of it (the test compares decoders).

    /work/.venv-ref/bin/python inference-server/tests/parity/resize_goldens.py
"""

import os

from PIL import Image

GOLDENS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "goldens")
W, H = 50, 38


def pattern() -> Image.Image:
    img = Image.new("RGB", (W, H))
    for y in range(H):
        for x in range(W):
            check = 255 if ((x // 4) + (y // 4)) % 2 else 0
            diag = 255 if abs(x - y) <= 1 else 0
            img.putpixel((x, y), (check, (x * 255) // (W - 1), max((y * 255) // (H - 1), diag)))
    return img


def main() -> None:
    src = pattern()
    src.save(os.path.join(GOLDENS, "resize_src.png"))
    for w, h in [(64, 64), (40, 24), (96, 80)]:
        src.resize((w, h), resample=Image.LANCZOS).save(os.path.join(GOLDENS, f"resize_{w}x{h}.png"))
    jpg = os.path.join(GOLDENS, "resize_src.jpg")
    src.save(jpg, quality=95, subsampling=0)
    Image.open(jpg).convert("RGB").save(os.path.join(GOLDENS, "resize_src_jpg_decoded.png"))


if __name__ == "__main__":
    main()
