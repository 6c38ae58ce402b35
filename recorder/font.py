"""Names on tiles, drawn with real fonts through Pillow: Latin with accents, Greek, Cyrillic, Hebrew, Arabic and
most scripts from DejaVu Sans (Debian's fonts-dejavu-core), Chinese and Japanese from Droid Sans Fallback
(fonts-droid-fallback), Korean Hangul from Nanum Gothic (fonts-nanum: Droid Sans Fallback has no Hangul
syllables, they came out as missing-glyph boxes); all installed by the Makefile. Each character takes the first
font that has it, and a run of one font is laid out whole (Pillow's Raqm layout: Arabic joined, right to left).

A 5x7 bitmap used to stand here and turned every letter outside A-Z into '?'.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf"),
)
SIZES = (48, 40, 32, 26, 20, 16, 12)  # tried largest first


@functools.cache
def _fonts(size: int) -> tuple[ImageFont.FreeTypeFont, ...]:
    fonts = tuple(ImageFont.truetype(str(path), size) for path in FONT_FILES if path.exists())
    if not fonts:
        raise RuntimeError(f"no font for name tiles: install fonts-dejavu-core ({FONT_FILES[0]})")
    return fonts


@functools.cache
def _has(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    """Whether the font draws `ch` itself rather than its 'missing glyph' box."""
    if ch.isspace():
        return True
    return not np.array_equal(_drawn(font, ch), _drawn(font, "\U000F0000"))  # a private-use code no font has


@functools.cache
def _drawn(font: ImageFont.FreeTypeFont, ch: str) -> np.ndarray:
    size = int(font.size)
    image = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(image).text((size // 2, size), ch, font=font, fill=255, anchor="lm")
    return np.asarray(image)


def _runs(text: str, fonts: tuple[ImageFont.FreeTypeFont, ...]) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    runs: list[tuple[str, ImageFont.FreeTypeFont]] = []
    for ch in text:
        font = next((f for f in fonts if _has(f, ch)), fonts[0])
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + ch, font)
        else:
            runs.append((ch, font))
    return runs


def text_mask(text: str, size: int) -> np.ndarray:
    """A boolean mask of `text` drawn at `size` pixels, characters from the first font that has them."""
    fonts = _fonts(size)
    runs = _runs(text, fonts)
    width = sum(max(1, round(font.getlength(part))) for part, font in runs) + 2
    height = round(size * 1.3)
    image = Image.new("L", (max(1, width), height), 0)
    draw = ImageDraw.Draw(image)
    x = 1
    for part, font in runs:
        draw.text((x, height // 2), part, font=font, fill=255, anchor="lm")
        x += round(font.getlength(part))
    mask = np.asarray(image) > 127
    cols = np.nonzero(mask.any(axis=0))[0]
    return mask[:, cols[0]:cols[-1] + 1] if cols.size else mask[:, :1]


def place_text(height: int, width: int, text: str, max_width: int) -> tuple[int, int, np.ndarray] | None:
    """Where `text` goes centred in a height x width area, as large as fits in max_width (shortened if needed):
    (y, x, mask), or None when even the smallest size does not fit."""
    for candidate in (text, text[:16] + "…" if len(text) > 16 else text):
        for size in SIZES:
            if size * 1.3 > height * 0.5:
                continue
            mask = text_mask(candidate, size)
            if mask.shape[1] <= max_width and mask.shape[0] <= height:
                return (height - mask.shape[0]) // 2, (width - mask.shape[1]) // 2, mask
    return None
