"""Names on recordings' tiles in any script: drawn with real fonts, never '?' (the old 5x7 bitmap's fallback)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from recorder.font import place_text, text_mask
from recorder.layout import Tile
from recorder.mux import NAME_TILE_YUV, CompositeSink, TrackInfo

NAMES = ["José Núñez", "Zoë Ødegård", "Ελένη", "Дмитрий", "王小明", "さくら", "김민수", "محمد علي"]


@pytest.mark.parametrize("name", NAMES)
def test_every_character_is_drawn_not_replaced(name: str) -> None:
    question = text_mask("?" * len(name), 32)
    mask = text_mask(name, 32)
    assert mask.any()
    assert mask.shape != question.shape or not np.array_equal(mask, question), "drawn as question marks"
    for ch in name.replace(" ", ""):
        assert not np.array_equal(text_mask(ch, 32), text_mask("\U000F0000", 32)), f"{ch!r} is a missing-glyph box"


def test_accents_are_part_of_the_letters() -> None:
    plain, accented = text_mask("Jose Nunez", 32), text_mask("José Núñez", 32)
    assert plain.shape[1] == pytest.approx(accented.shape[1], abs=3)
    assert accented.sum() > plain.sum(), "the accents add ink"
    assert not np.array_equal(text_mask("e", 32), text_mask("é", 32))


def test_a_name_tile_shows_the_name_centred_and_large() -> None:
    w, h = 640, 360
    planes = (np.zeros((h, w), np.uint8), np.zeros((h // 2, w // 2), np.uint8), np.zeros((h // 2, w // 2), np.uint8))
    CompositeSink._name_tile(planes, Tile("k", 0, 0, w, h), "Ελένη Παπαδοπούλου")
    assert planes[0][h // 2, 4] == NAME_TILE_YUV[0]
    ink = np.argwhere(planes[0] > 200)
    assert len(ink) > 500
    centre = ink.mean(axis=0)
    assert abs(centre[0] - h / 2) < 12 and abs(centre[1] - w / 2) < 30
    assert ink[:, 0].max() - ink[:, 0].min() >= 20, "letters at least 20 px tall"
    placed = place_text(h, w, "王小明", w - 8)
    assert placed is not None and placed[2].shape[0] >= 20


def _pieces(mask: np.ndarray) -> int:
    """Connected shapes of ink (8-neighbourhood): joined handwriting is one, separate letters are several."""
    seen = np.zeros_like(mask, bool)
    count = 0
    for y, x in np.argwhere(mask):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny in range(max(0, cy - 1), min(mask.shape[0], cy + 2)):
                for nx in range(max(0, cx - 1), min(mask.shape[1], cx + 2)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return count


def test_arabic_is_joined_and_korean_is_drawn() -> None:
    """Arabic letters join (Raqm layout): 'محمد' is one connected shape, four if drawn as isolated letters; and
    Hangul syllables come from a font that has them (Droid Sans Fallback draws missing-glyph boxes for them)."""
    assert _pieces(text_mask("محمد", 40)) == 1
    assert sum(_pieces(text_mask(ch, 40)) for ch in "محمد") == 4
    box = text_mask("\U000F0000", 40)
    for ch in "김민수":
        assert not np.array_equal(text_mask(ch, 40), box), f"{ch!r} is a missing-glyph box"


@pytest.mark.parametrize("name", ["김민수", "محمد علي"])
def test_a_recorded_name_tile_reads_back_with_its_glyphs(tmp_path: Path, name: str) -> None:
    """A composite recording of a participant whose camera sent nothing: the file's frame, decoded with PyAV,
    shows the name's own glyphs where the tile puts them (and not missing-glyph boxes)."""
    sink = CompositeSink("EG_font", tmp_path, lambda m: None, "grid", "H264_720P_30", None)
    sink.track_added(TrackInfo(id="TR_1", uid="u1", source="camera", kind="video", mime="video/H264",
                               clock_rate=90000, name=name, role="TEACHER"))
    [result] = sink.finish(1.0)
    with av.open(result["path"]) as container:
        luma = next(container.decode(video=0)).to_ndarray(format="gray")
    h, w = luma.shape
    y, x, mask = place_text(h, w, name, w - 8)  # type: ignore[misc]
    y, x = y // 2 * 2, x // 2 * 2
    drawn = luma[y:y + mask.shape[0], x:x + mask.shape[1]] > 150
    boxes = place_text(h, w, "\U000F0000" * len(name.replace(" ", "")), w - 8)
    assert drawn.any()
    agree = (drawn == mask).mean()
    assert agree > 0.95, f"the frame's ink matches the name's glyphs in {agree:.0%} of the text's pixels"
    assert boxes is None or boxes[2].shape != mask.shape or not np.array_equal(boxes[2], mask)
