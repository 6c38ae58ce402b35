"""A 5x7 bitmap font for name tiles: no font files or text-rendering libraries needed, any scale with numpy."""

from __future__ import annotations

import numpy as np

# Each glyph: 7 rows of 5 bits, written as strings for readability.
_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100", "_": "00000 00000 00000 00000 00000 00000 11111",
    "?": "01110 10001 00001 00010 00100 00000 00100", "'": "00100 00100 01000 00000 00000 00000 00000",
}
GLYPHS = {ch: np.array([[c == "1" for c in row] for row in rows.split()], bool) for ch, rows in _GLYPHS.items()}


def text_mask(text: str, scale: int) -> np.ndarray:
    """A boolean mask of `text` (upper-cased; unknown characters drawn as '?'), one blank column between glyphs."""
    glyphs = [GLYPHS.get(ch, GLYPHS["?"]) for ch in text.upper()] or [GLYPHS[" "]]
    gap = np.zeros((7, 1), bool)
    row = np.concatenate([part for g in glyphs for part in (g, gap)][:-1], axis=1)
    return row.repeat(scale, axis=0).repeat(scale, axis=1)


def place_text(height: int, width: int, text: str, max_width: int) -> tuple[int, int, np.ndarray] | None:
    """Where `text` goes centred in a height x width area, as large as fits in max_width (shortened if needed):
    (y, x, mask), or None when even the smallest size does not fit."""
    for candidate in (text, text[:16] + "..." if len(text) > 16 else text):
        for scale in range(max(1, min(height // 14, 8)), 0, -1):
            mask = text_mask(candidate, scale)
            if mask.shape[1] <= max_width and mask.shape[0] <= height:
                return (height - mask.shape[0]) // 2, (width - mask.shape[1]) // 2, mask
    return None
