"""Names on recordings' tiles in any script: drawn with real fonts, never '?' (the old 5x7 bitmap's fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from recorder.font import place_text, text_mask
from recorder.layout import Tile
from recorder.mux import NAME_TILE_YUV, CompositeSink

NAMES = ["José Núñez", "Zoë Ødegård", "Ελένη", "Дмитрий", "王小明", "さくら"]


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
