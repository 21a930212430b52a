"""Binarisation of a rectified plate and its split into registration glyphs and the province line.

Input is a plate warped to ``PLATE_W`` x ``PLATE_H`` (see :mod:`plate_detect`). The registration
line (``1กข 1234``) is cut into glyph boxes from connected components; the widest gap between
glyphs separates the letter group from the number. Everything below the registration line is the
province line, which goes to Tesseract as a clean black-on-white strip.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

GrayImage = NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Segmentation:
    """Glyph boxes of the registration line (left to right), the group split and the province strip."""

    flat: GrayImage  # plate with lighting flattened, border lines painted white
    ink: GrayImage  # binary, ink = 255, border lines removed
    glyphs: tuple[Box, ...]
    split: int  # glyphs[:split] are the letter group (with optional leading digit)
    line_top: int
    line_bottom: int
    province_rows: tuple[int, int]  # the province line lies between these rows
    clipped: bool = False  # a glyph-sized blob touches the crop's side: the plate is probably cut off


def flatten(plate: GrayImage, block: int = 25) -> GrayImage:
    """Return the plate divided by its local background (even lighting, paper = 255)."""
    background = cv2.dilate(plate, cv2.getStructuringElement(cv2.MORPH_RECT, (block, block)))
    flat: GrayImage = cv2.divide(plate, background, scale=255)
    return flat


def binarise(flat: GrayImage, offset: float = 0.0) -> GrayImage:
    """Return the ink mask (255 = dark text) of a flattened plate, Otsu level moved by ``offset``."""
    level, _ = cv2.threshold(flat, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    _, ink = cv2.threshold(flat, level + offset, 255, cv2.THRESH_BINARY_INV)
    mask: GrayImage = ink
    return mask


def frame_mask(ink: GrayImage) -> GrayImage:
    """Mask of long horizontal and vertical strokes (the plate's printed border, its edges)."""
    h, w = ink.shape
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (w // 4, 1)))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, int(h * 0.62))))
    lines: GrayImage = cv2.dilate(cv2.bitwise_or(horizontal, vertical), np.ones((3, 3), np.uint8))
    return lines


def _components(ink: GrayImage) -> list[Box]:
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return [(int(s[0]), int(s[1]), int(s[2]), int(s[3])) for s in stats[1:count] if s[4] >= 6]


def _is_frame_piece(box: Box, h: int, w: int) -> bool:
    """Leftovers of the plate border: touching the crop's edge, or thin strokes near the sides."""
    x, y, bw, bh = box
    if x <= 1 or y <= 1 or x + bw >= w - 1 or y + bh >= h - 1:
        return True
    return bw < 0.15 * bh and (x < 0.08 * w or x + bw > 0.92 * w)


def _primary_glyphs(boxes: list[Box], h: int, w: int) -> list[Box]:
    """Components tall enough to be registration characters, in the upper part of the plate."""
    tall = [b for b in boxes if 0.12 * h <= b[3] <= 0.62 * h and b[2] <= 0.3 * w and b[3] >= 0.3 * b[2]
            and b[1] + b[3] / 2 < 0.6 * h and not _is_frame_piece(b, h, w)]
    if not tall:
        return []
    median_h = float(np.median([b[3] for b in tall]))
    return [b for b in tall if b[3] >= 0.6 * median_h]


def _clipped(boxes: list[Box], top: int, bottom: int, w: int) -> bool:
    """Whether glyph pieces on the registration line touch the left or right crop edge (plate cut off)."""
    line_h = max(1, bottom - top)
    for side in (0, 1):
        rows = np.zeros(bottom + line_h + 2, bool)
        for x, y, bw, bh in boxes:
            touches = x <= 1 if side == 0 else x + bw >= w - 1
            if touches and bw >= 3 and y >= top - 0.3 * line_h and y + bh <= bottom + 0.3 * line_h:
                rows[max(0, y):y + bh] = True
        if rows.sum() >= 0.35 * line_h:
            return True
    return False


def _union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def _x_overlap(a: Box, b: Box) -> float:
    inter = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    return inter / max(1, min(a[2], b[2]))


def _merge(glyphs: list[Box], extras: list[Box]) -> list[Box]:
    """Merge pieces of one character: overlapping primaries and small attached parts."""
    merged: list[Box] = []
    for box in sorted(glyphs):
        if merged and _x_overlap(merged[-1], box) > 0.5:
            merged[-1] = _union(merged[-1], box)
        else:
            merged.append(box)
    for extra in extras:
        for i, box in enumerate(merged):
            if _x_overlap(box, extra) > 0.6:
                merged[i] = _union(box, extra)
                break
    return merged


def _group_split(glyphs: list[Box]) -> int | None:
    """Index where the number starts: after 2 or 3 head glyphs, at the widest gap."""
    n = len(glyphs)
    gaps = [glyphs[i + 1][0] - (glyphs[i][0] + glyphs[i][2]) for i in range(n - 1)]
    options = [k for k in (2, 3) if 1 <= n - k <= 4]
    if not options:
        return None
    return max(options, key=lambda k: gaps[k - 1])


def segment(plate: GrayImage, *, block: int = 25, offset: float = 0.0) -> Segmentation | None:
    """Split a rectified plate into registration glyphs and the province line, or None."""
    h, w = plate.shape
    flat = flatten(plate, block)
    ink = binarise(flat, offset)
    lines = frame_mask(ink)
    ink = cv2.bitwise_and(ink, cv2.bitwise_not(lines))
    boxes = _components(ink)
    primaries = _primary_glyphs(boxes, h, w)
    if len(primaries) < 3:
        return None
    top = min(b[1] for b in primaries)
    bottom = int(np.median([b[1] + b[3] for b in primaries]))
    extras = [b for b in boxes if b not in primaries and b[1] >= top - 0.05 * h
              and b[1] + b[3] <= bottom + 0.12 * h and b[3] < 0.6 * (bottom - top)]
    glyphs = _merge(primaries, extras)
    split = _group_split(glyphs)
    if split is None:
        return None
    flat = cv2.max(flat, lines)
    rows = (min(h - 8, bottom + int(0.03 * h)), h - max(2, int(0.02 * h)))
    clipped = _clipped(boxes, top, bottom, w)
    return Segmentation(flat, ink, tuple(glyphs), split, top, bottom, rows, clipped)
