"""Where each tile goes in a composite frame, for the reference's two layouts (grid, speaker). Pure geometry.
(Their names and the output presets are the API's: control/recording/options.py.)

grid: the tiles in a near-square grid (columns = ceil(sqrt(n))), all the same size, filling the frame.
speaker: the main tile (a screen share, else the active teacher) over the top four fifths; the other tiles in a
centered strip along the bottom fifth, each a fifth of the width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FPS = 30


@dataclass(frozen=True, slots=True)
class Tile:
    key: str
    x: int
    y: int
    w: int
    h: int


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def grid(keys: list[str], width: int, height: int) -> list[Tile]:
    if not keys:
        return []
    cols = math.ceil(math.sqrt(len(keys)))
    rows = math.ceil(len(keys) / cols)
    tw, th = _even(width / cols), _even(height / rows)
    return [Tile(k, (i % cols) * tw, (i // cols) * th, tw, th) for i, k in enumerate(keys)]


def speaker(main: str | None, others: list[str], width: int, height: int) -> list[Tile]:
    if main is None:
        return grid(others, width, height)
    if not others:
        return [Tile(main, 0, 0, width, height)]
    strip_h = _even(height / 5)
    tiles = [Tile(main, 0, 0, width, height - strip_h)]
    tw = _even(width / 5)
    shown = others[:5]
    x0 = (width - tw * len(shown)) // 2 // 2 * 2
    tiles += [Tile(k, x0 + i * tw, height - strip_h, tw, strip_h) for i, k in enumerate(shown)]
    return tiles


def fit(src_w: int, src_h: int, w: int, h: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a src_w x src_h picture scaled into w x h, aspect kept, centered; all even, so
    that the picture lands on whole 4:2:0 chroma samples."""
    scale = min(w / src_w, h / src_h)
    fw, fh = min(w, _even(src_w * scale)), min(h, _even(src_h * scale))
    return (w - fw) // 4 * 2, (h - fh) // 4 * 2, fw, fh
