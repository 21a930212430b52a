"""Glyph cuts of the registration line and the province crop, on small drawn plates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from citystream.processors.plates.detect import PLATE_H, PLATE_W
from citystream.processors.plates.province import province_strip
from citystream.processors.plates.segment import Box, alternatives, segment, split_box

LINE_H = 44


def _ink(boxes: list[Box]) -> np.ndarray:
    """A binary registration line (ink = 255) with a filled rectangle per box."""
    ink = np.zeros((PLATE_H, PLATE_W), np.uint8)
    for x, y, w, h in boxes:
        ink[y:y + h, x:x + w] = 255
    return ink


@pytest.mark.unit
def test_split_box_cuts_two_touching_glyphs_at_the_thin_bridge() -> None:
    ink = _ink([(100, 20, 26, 44), (128, 20, 26, 44)])
    ink[40:44, 126:128] = 255  # a blur bridge between the two glyphs
    pieces = split_box(ink, (100, 20, 54, 44), 2)
    assert pieces is not None
    assert [(b[0], b[2]) for b in pieces] in ([(100, 26), (126, 28)], [(100, 28), (128, 26)])
    assert split_box(ink, (100, 20, 54, 44), 3) is not None


@pytest.mark.unit
def test_alternatives_split_a_wide_box_and_join_a_broken_stroke() -> None:
    glyphs = [(20, 20, 30, 44), (55, 20, 30, 44), (120, 20, 26, 44), (148, 20, 54, 44)]  # "ab 1 (23)"
    ink = _ink(glyphs)
    cuts = alternatives(ink, glyphs, LINE_H)
    assert any(len(g) == 5 and split == 2 for g, split in cuts), cuts
    broken = [(20, 20, 30, 44), (55, 20, 18, 44), (76, 20, 6, 44), (120, 20, 26, 44), (150, 20, 26, 44)]
    cuts = alternatives(_ink(broken), broken, LINE_H)
    joined = [g for g, _ in cuts if len(g) == 4]
    assert joined and (55, 20, 27, 44) in joined[0], cuts


@pytest.mark.unit
def test_segment_keeps_a_plate_whose_glyph_broke_in_two() -> None:
    plate = np.full((PLATE_H, PLATE_W), 235, np.uint8)
    for x, w in ((30, 28), (64, 16), (84, 6), (130, 26), (160, 26), (190, 26), (220, 26)):
        cv2.rectangle(plate, (x, 25), (x + w - 1, 25 + LINE_H - 1), 20, -1)
    seg = segment(plate)
    assert seg is not None
    assert any(len(glyphs) == 6 for glyphs, _ in seg.cuts), seg.cuts


@pytest.mark.unit
def test_province_strip_drops_border_lines_and_clutter_beside_the_name() -> None:
    plate = np.full((PLATE_H, PLATE_W), 235, np.uint8)
    cv2.rectangle(plate, (8, 6), (PLATE_W - 9, PLATE_H - 7), 30, 2)  # printed border
    for x in (40, 75, 110, 145, 180, 215):
        cv2.rectangle(plate, (x, 22), (x + 24, 22 + LINE_H), 20, -1)  # registration line
    for x in range(112, 208, 16):
        cv2.rectangle(plate, (x, 100), (x + 11, 117), 20, -1)  # the province name, centred
    cv2.rectangle(plate, (20, 104), (26, 110), 20, -1)  # a screw head near the side
    seg = segment(plate)
    assert seg is not None
    gray, ink = province_strip(seg)
    cols = np.flatnonzero(ink.any(axis=0))
    assert 90 <= ink.shape[1] <= 104, ink.shape  # the six letters (96 px) and a 2 px margin, nothing else
    assert cols[0] <= 3 and cols[-1] >= ink.shape[1] - 4
    assert gray.shape == ink.shape
