"""Binarisation of a rectified plate and its split into registration glyphs and the province line.

Input is a plate warped to ``PLATE_W`` x ``PLATE_H`` (see :mod:`detect`). The registration
line (``1กข 1234``) is cut into glyph boxes from connected components; the widest gap between
glyphs separates the letter group from the number. Everything below the registration line is the
province line, which goes to Tesseract as a clean black-on-white strip.

Connected components are not always glyphs: blur makes neighbours touch (``64`` as one box) and a
thin stroke can break off (the stem of ``ป``). :func:`alternatives` offers other cuts of the line —
wide boxes split at their thinnest columns, thin pieces joined to a neighbour — and the reader keeps
the cut its classifier reads most confidently.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

GrayImage = NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x, y, w, h
Cut = tuple[tuple[Box, ...], int]  # glyph boxes left to right, index where the number starts
WIDE = 1.05  # a box wider than this many times its height may be touching glyphs (3 past 1.6)
THIN = 0.3  # a box narrower than this many line heights may be a broken-off stroke
JOIN_GAP = 0.2  # ... when the gap to its neighbour is at most this many line heights
MAX_CUTS = 8


@dataclass(frozen=True)
class Segmentation:
    """Cuts of the registration line into glyphs (the plainest first) and the province strip."""

    flat: GrayImage  # plate with lighting flattened, border lines painted white
    ink: GrayImage  # binary, ink = 255, border lines removed
    cuts: tuple[Cut, ...]  # one per plausible way to cut the line into glyphs; never empty
    line_top: int
    line_bottom: int
    province_rows: tuple[int, int]  # the province line lies between these rows
    clipped: bool = False  # a glyph-sized blob touches the crop's side: the plate is probably cut off

    @property
    def glyphs(self) -> tuple[Box, ...]:
        """Glyph boxes of the first cut, left to right."""
        return self.cuts[0][0]

    @property
    def split(self) -> int:
        """Where the first cut's number starts: glyphs[:split] are the letter group (and lead digit)."""
        return self.cuts[0][1]


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
    return bw < 0.15 * bh and (x < 0.1 * w or x + bw > 0.9 * w)


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
    base = _cut(glyphs)
    cuts = ([base] if base else []) + alternatives(ink, glyphs, bottom - top)
    if not cuts:
        return None
    flat = cv2.max(flat, lines)
    rows = (min(h - 8, bottom + int(0.03 * h)), h - max(2, int(0.02 * h)))
    clipped = _clipped(boxes, top, bottom, w)
    return Segmentation(flat, ink, tuple(cuts), top, bottom, rows, clipped)


def _tighten(ink: GrayImage, x0: int, x1: int, y0: int, y1: int) -> Box | None:
    """The box of the ink between columns ``x0:x1`` and rows ``y0:y1``, or None when empty."""
    rows = np.flatnonzero(ink[y0:y1, x0:x1].any(axis=1))
    cols = np.flatnonzero(ink[y0:y1, x0:x1].any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return None
    return (x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1)


def split_box(ink: GrayImage, box: Box, parts: int) -> list[Box] | None:
    """Cut a box of touching glyphs into ``parts`` at the columns with least ink near the even cuts."""
    x, y, w, h = box
    profile = cv2.blur(ink[y:y + h, x:x + w].sum(axis=0, dtype=np.float32).reshape(1, -1), (3, 1)).ravel()
    edges = [0]
    reach = max(1, int(0.3 * w / parts))
    for k in range(1, parts):
        centre = int(w * k / parts)
        lo, hi = max(edges[-1] + 2, centre - reach), min(w - 2, centre + reach + 1)
        if hi <= lo:
            return None
        edges.append(lo + int(np.argmin(profile[lo:hi])))
    edges.append(w)
    boxes: list[Box] = []
    for a, b in zip(edges, edges[1:], strict=False):
        piece = _tighten(ink, x + a, x + b, y, y + h)
        if piece is None:
            return None
        boxes.append(piece)
    return boxes


def _cut(glyphs: list[Box]) -> Cut | None:
    split = _group_split(glyphs)
    return None if split is None else (tuple(glyphs), split)


def alternatives(ink: GrayImage, glyphs: list[Box], line_h: int) -> list[Cut]:
    """Other cuts of a registration line than ``glyphs``: wide boxes split, thin pieces joined."""
    line_h = max(1, line_h)
    options: list[list[Box]] = []
    height = [min(b[3], line_h) for b in glyphs]  # a glyph with a tail is no wider for it
    wide = sorted((i for i, b in enumerate(glyphs) if b[2] > WIDE * height[i]), key=lambda i: -glyphs[i][2])[:2]
    splits: dict[int, list[list[Box]]] = {}
    for i in wide:
        for parts in (2, 3) if glyphs[i][2] > 1.6 * height[i] else (2,):
            if (pieces := split_box(ink, glyphs[i], parts)) and len(pieces) == parts:
                splits.setdefault(i, []).append(pieces)
                options.append(glyphs[:i] + pieces + glyphs[i + 1:])
    if len(splits) == 2:
        (i, first), (j, second) = sorted(splits.items())
        options.append(glyphs[:i] + first[0] + glyphs[i + 1:j] + second[0] + glyphs[j + 1:])
    for i, box in enumerate(glyphs):
        if box[2] >= THIN * line_h:
            continue
        for j in (i - 1, i + 1):
            if 0 <= j < len(glyphs):
                left, right = sorted((glyphs[i], glyphs[j]))
                if right[0] - (left[0] + left[2]) <= JOIN_GAP * line_h:
                    lo = min(i, j)
                    options.append(glyphs[:lo] + [_union(left, right)] + glyphs[lo + 2:])
    cuts = [c for option in options if (c := _cut(option)) is not None]
    return cuts[:MAX_CUTS]
