"""Candidate Thai car plates in a frame: contour/morphology quads plus OpenCV's plate cascade.

Candidates are cheap and plentiful; the reader (:mod:`citystream.processors.plates.plates`) rejects those
whose text does not validate. Geometry filters keep the list short: a Thai car plate is 34 x 15 cm,
so its image is a bright, roughly 2.3:1 quadrilateral with dark text inside.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

Quad = NDArray[np.float32]  # 4 x 2 corners: top-left, top-right, bottom-right, bottom-left
GrayImage = NDArray[np.uint8]

PLATE_W, PLATE_H = 320, 142  # canonical size of a rectified plate
WORK_WIDTH = 640  # frames wider than this are searched at reduced resolution
MIN_PLATE_W = 40  # pixels, at working resolution
ASPECT_RANGE = (1.5, 3.6)
MAX_CANDIDATES = 10
CASCADE = "haarcascade_russian_plate_number.xml"
TEXT_ASPECT = (1.3, 4.5)  # width / height of a plate's block of text
TEXT_MARGINS = (1.22, 1.3)  # a plate is this much wider and taller than its block of text


def order_corners(points: NDArray[np.float32]) -> Quad:
    """Return four points ordered top-left, top-right, bottom-right, bottom-left."""
    pts = points.reshape(4, 2).astype(np.float32)
    by_sum = pts.sum(axis=1)
    by_diff = np.diff(pts, axis=1).ravel()
    return np.array([pts[np.argmin(by_sum)], pts[np.argmin(by_diff)],
                     pts[np.argmax(by_sum)], pts[np.argmax(by_diff)]], np.float32)


def _quad_from_contour(contour: NDArray[np.int32], fill: float = 0.75) -> Quad | None:
    """Four corners of a plate-like contour, or None if its geometry is not plate-like."""
    (cx, cy), (rw, rh), _ = cv2.minAreaRect(contour)
    long_side, short_side = max(rw, rh), min(rw, rh)
    if long_side < MIN_PLATE_W or short_side < 12 or long_side > WORK_WIDTH * 0.6:
        return None
    if not ASPECT_RANGE[0] <= long_side / short_side <= ASPECT_RANGE[1]:
        return None
    if cv2.contourArea(contour) < fill * rw * rh:
        return None
    approx = cv2.approxPolyDP(contour, 0.04 * cv2.arcLength(contour, True), True)
    if len(approx) == 4 and cv2.isContourConvex(approx):
        quad = order_corners(approx.astype(np.float32))
    else:
        quad = order_corners(cv2.boxPoints(((cx, cy), (rw, rh), _)).astype(np.float32))
    top = float(np.linalg.norm(quad[1] - quad[0]))
    left = float(np.linalg.norm(quad[3] - quad[0]))
    return quad if top > left else None


def _edge_candidates(small: GrayImage) -> list[Quad]:
    """Plate outlines (the plate edge or its printed border) found as closed edge contours."""
    blurred = cv2.GaussianBlur(small, (3, 3), 0)
    median = float(np.median(blurred))
    edges = cv2.Canny(blurred, max(10.0, 0.5 * median), max(40.0, 1.2 * median))
    edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    regions, _ = cv2.findContours(255 - edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads = [q for c in contours if len(c) >= 4 and (q := _quad_from_contour(c)) is not None]
    return quads + [q for c in regions if len(c) >= 4 and (q := _quad_from_contour(c, 0.6)) is not None]


def _bright_candidates(small: GrayImage) -> list[Quad]:
    """Bright plate-shaped regions (plate face, or the area inside its printed border) at several levels."""
    quads: list[Quad] = []
    blurred = cv2.blur(small, (3, 3))
    levels = np.percentile(blurred, (55, 70, 82, 91, 96))
    for level in levels:
        _, binary = cv2.threshold(blurred, float(level), 255, cv2.THRESH_BINARY)
        contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        quads.extend(q for c in contours if len(c) >= 4 and (q := _quad_from_contour(c)) is not None)
    return quads


def text_candidates(small: GrayImage) -> list[Quad]:
    """Plates found by their dark text: a plate-shaped block of strokes (black-hat filtered, closed
    into one blob), grown by the plate's margins. Finds plates whose outline blends into the car."""
    strokes = cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    _, binary = cv2.threshold(strokes, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (11, 7)))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    quads: list[Quad] = []
    for contour in contours:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if rw < rh:
            rw, rh, angle = rh, rw, angle + 90
        tilt = abs((angle + 90) % 180 - 90)
        if rw < 0.7 * MIN_PLATE_W or rh < 10 or not TEXT_ASPECT[0] <= rw / rh <= TEXT_ASPECT[1] or tilt > 25:
            continue
        block = order_corners(cv2.boxPoints(((cx, cy), (rw, rh), angle)).astype(np.float32))
        quads.append(grow(block, *TEXT_MARGINS))
    return quads


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if classifier.empty():
        raise FileNotFoundError(f"OpenCV cascade {CASCADE} not found")
    return classifier


def cascade_candidates(small: GrayImage) -> list[Quad]:
    """Plates found by OpenCV's Haar plate cascade, grown to the Thai two-line plate shape."""
    boxes = _cascade().detectMultiScale(small, scaleFactor=1.15, minNeighbors=3, minSize=(MIN_PLATE_W, 12))
    quads: list[Quad] = []
    for x, y, w, _h in boxes if len(boxes) else []:
        plate_h = w * PLATE_H / PLATE_W
        top = y - 0.1 * plate_h
        quads.append(np.array([[x, top], [x + w, top], [x + w, top + plate_h], [x, top + plate_h]], np.float32))
    return quads


def box_iou(a: Quad, b: Quad) -> float:
    """Intersection over union of the axis-aligned boxes of two quads."""
    ax0, ay0 = a.min(axis=0)
    ax1, ay1 = a.max(axis=0)
    bx0, by0 = b.min(axis=0)
    bx1, by1 = b.max(axis=0)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def _dedupe(quads: list[Quad], limit: int) -> list[Quad]:
    """Drop near-duplicate quads (keeping the larger) and keep at most ``limit``."""
    ranked = sorted(quads, key=lambda q: -float(cv2.contourArea(q)))
    kept: list[Quad] = []
    for quad in ranked:
        if all(box_iou(quad, other) < 0.85 for other in kept):
            kept.append(quad)
    return kept[:limit]


def working_image(gray: GrayImage) -> tuple[GrayImage, float]:
    """Return the frame at working resolution and the factor to map back to full resolution."""
    scale = min(1.0, WORK_WIDTH / gray.shape[1])
    if scale == 1.0:
        return gray, 1.0
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, 1.0 / scale


def find_candidates(gray: GrayImage, *, use_cascade: bool = False) -> list[Quad]:
    """Return candidate plate quads in full-resolution coordinates, most promising first.

    ``use_cascade`` (the second pass, when the first finds nothing readable) adds the text-block
    candidates and OpenCV's plate cascade.
    """
    if gray.ndim != 2 or min(gray.shape) < 16:
        return []
    small, back = working_image(gray)
    quads = _edge_candidates(small) + _bright_candidates(small)
    if use_cascade:
        quads += text_candidates(small) + cascade_candidates(small)
    return [q * back for q in _dedupe(quads, MAX_CANDIDATES)]


def second_pass_candidates(gray: GrayImage) -> list[Quad]:
    """Candidates the first pass does not make: text blocks and OpenCV's plate cascade (full-resolution quads)."""
    if gray.ndim != 2 or min(gray.shape) < 16:
        return []
    small, back = working_image(gray)
    return [q * back for q in _dedupe(text_candidates(small) + cascade_candidates(small), MAX_CANDIDATES)]


def grow(quad: Quad, along: float, across: float) -> Quad:
    """Scale ``quad`` about its centre by ``along`` its top edge's direction and ``across`` it."""
    tl, tr, br, bl = quad
    u = (tr - tl) + (br - bl)
    v = (bl - tl) + (br - tr)
    u = u / max(float(np.linalg.norm(u)), 1e-6)
    v = v / max(float(np.linalg.norm(v)), 1e-6)
    centre = quad.mean(axis=0)
    d = quad - centre
    grown: Quad = (centre + np.outer(d @ u, u) * along + np.outer(d @ v, v) * across).astype(np.float32)
    return grown


def rectify(gray: GrayImage, quad: Quad) -> GrayImage:
    """Warp the plate inside ``quad`` to the canonical ``PLATE_W`` x ``PLATE_H`` size."""
    dst = np.array([[0, 0], [PLATE_W - 1, 0], [PLATE_W - 1, PLATE_H - 1], [0, PLATE_H - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    plate: GrayImage = cv2.warpPerspective(gray, matrix, (PLATE_W, PLATE_H), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REPLICATE)
    return plate
