"""Province line of a plate: Tesseract's Thai reading snapped to the 77 names, plus a word classifier.

Tesseract alone gets only ~80 % of the small, blurred province lines of 720p road scenes right
after snapping (measured on 100 scenes). A closed set of 77 words is also easy to recognise as
whole-word shapes, so a small MLP over the word's HOG (:data:`PROVINCE_MODEL_PATH`, trained by
:mod:`train`), averaged over the plate's binarisations, votes too. Each candidate name scores
its classifier probability plus how close Tesseract's text is to it; the edit distance lowers the
confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from citystream.processors.plates.classify import Classifier, Ensemble, Floats, Mlp, load_classifier
from citystream.processors.plates.ocr import TESSDATA, ocr_line
from citystream.processors.plates.provinces import PROVINCES, edit_distance, normalise_thai, snap_province
from citystream.processors.plates.segment import GrayImage, Segmentation

PROVINCE_MODEL_PATH = Path(__file__).with_name("models") / "plate_provinces.npz"
WORD_W, WORD_H = 96, 24
TOP_K = 5
WORD_GAP = 1.0  # letters of one name are at most this many text heights apart


@dataclass(frozen=True)
class ProvinceReading:
    """The province chosen for a plate, the OCR text's edit distance to it and a 0..1 confidence."""

    name: str
    distance: int
    confidence: float
    raw: str


@lru_cache(maxsize=1)
def _hog() -> cv2.HOGDescriptor:
    return cv2.HOGDescriptor((WORD_W, WORD_H), (16, 16), (8, 8), (8, 8), 9)


@lru_cache(maxsize=1)
def default_province_model() -> Mlp | Ensemble:
    """Return the shipped province word classifier (with its wide sibling), loaded once per process."""
    return load_classifier(PROVINCE_MODEL_PATH, PROVINCES)


def _border_lines(ink: GrayImage) -> GrayImage:
    """Long horizontal and vertical strokes of the strip: the plate's printed border and its edges."""
    h, w = ink.shape
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(8, w // 5), 1)))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN,
                                cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(5, int(0.7 * h)))))
    lines: GrayImage = cv2.dilate(cv2.bitwise_or(horizontal, vertical), np.ones((3, 3), np.uint8))
    return lines


def _text_components(ink: GrayImage) -> list[tuple[int, int, int, int]]:
    """Boxes of the ink components that can be province text (border lines and specks dropped)."""
    h, w = ink.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    boxes: list[tuple[int, int, int, int]] = []
    for x, y, bw, bh, area in (tuple(int(v) for v in s) for s in stats[1:count]):
        if area < max(4, h * w // 2000):
            continue
        if bw > 0.4 * w and bh < 0.35 * h:  # a horizontal border line
            continue
        if bh >= 0.35 * h and bw <= 0.2 * bh and (x < 0.12 * w or x + bw > 0.88 * w):  # a side border line
            continue
        if y + bh >= h - 1 and bh < 0.25 * h and bw > 0.15 * w:  # the bottom border, cut by the strip
            continue
        if y == 0 and y + bh < 0.3 * h:  # the tail of a registration glyph above
            continue
        if (x == 0 or x + bw >= w) and bw < 0.5 * bh:  # a piece of the side border, cut by the strip
            continue
        boxes.append((x, y, bw, bh))
    return boxes


def _word(boxes: list[tuple[int, int, int, int]], width: int) -> list[tuple[int, int, int, int]]:
    """The components of the province name: the line of text grown from the largest component near
    the middle (the name is centred on the plate), joining neighbours across letter-sized gaps."""
    middle = [b for b in boxes if abs(b[0] + b[2] / 2 - width / 2) < 0.3 * width] or boxes
    anchor = max(middle, key=lambda b: b[2] * b[3])
    text_h = max(b[3] for b in boxes if b[1] < anchor[1] + anchor[3] and b[1] + b[3] > anchor[1])
    band = (anchor[1] - 0.6 * text_h, anchor[1] + anchor[3] + 0.6 * text_h)
    line = sorted(b for b in boxes if b[1] >= band[0] and b[1] + b[3] <= band[1])
    word = [anchor]
    left, right = anchor[0], anchor[0] + anchor[2]
    grown = True
    while grown:
        grown = False
        for b in line:
            if b in word:
                continue
            if b[0] - right <= WORD_GAP * text_h and left - (b[0] + b[2]) <= WORD_GAP * text_h:
                word.append(b)
                left, right = min(left, b[0]), max(right, b[0] + b[2])
                grown = True
    return word


def province_strip(seg: Segmentation) -> tuple[GrayImage, GrayImage]:
    """Return the province line as (flattened gray, ink mask), cropped tightly to its text."""
    top, bottom = seg.province_rows
    w = seg.flat.shape[1]
    gray = seg.flat[top:bottom, int(0.03 * w):w - int(0.03 * w)]
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    lines = _border_lines(ink)
    ink = cv2.bitwise_and(ink, cv2.bitwise_not(lines))
    gray = cv2.max(gray, lines)
    boxes = _text_components(ink)
    if not boxes:
        return gray, ink
    word = _word(boxes, ink.shape[1])
    x0 = max(0, min(b[0] for b in word) - 2)
    y0 = max(0, min(b[1] for b in word) - 2)
    x1 = max(b[0] + b[2] for b in word) + 2
    y1 = max(b[1] + b[3] for b in word) + 2
    return gray[y0:y1, x0:x1], ink[y0:y1, x0:x1]


def word_features(gray: GrayImage) -> Floats:
    """Feature vector of a province word (dark text on light): HOG and coarse pixels of the stretched word."""
    h, w = gray.shape[:2]
    if h < 2 or w < 2:
        gray = np.full((WORD_H, WORD_W), 255, np.uint8)
        h, w = gray.shape
    word = cv2.resize(gray, (WORD_W, WORD_H), interpolation=cv2.INTER_AREA).astype(np.float32)
    low, high = np.percentile(word, (2, 90))
    ink = np.clip((high - word) * (255.0 / max(float(high - low), 8.0)), 0, 255).astype(np.uint8)
    hog = _hog().compute(ink).ravel().astype(np.float32)
    pixels = cv2.resize(ink, (48, 12), interpolation=cv2.INTER_AREA).ravel().astype(np.float32) / 255.0
    return np.concatenate([hog, pixels, np.array([w / h / 10.0], np.float32)])


def read_province(segs: Sequence[Segmentation], model: Classifier | None = None,
                  tessdata: Path = TESSDATA) -> ProvinceReading:
    """Read the province line of a plate and snap it to one of the 77 names.

    ``segs`` are segmentations of the same plate (best first): Tesseract reads the first one's
    strip, the word classifier's probabilities are averaged over all of them.
    """
    strips = [province_strip(seg)[0] for seg in segs]
    if not strips:
        raise ValueError("read_province needs at least one segmentation")
    gray = strips[0]
    raw = ocr_line(ocr_image(gray), tessdata) if min(gray.shape) >= 4 else ""
    snapped = snap_province(raw)
    text = normalise_thai(raw)
    if model is None:
        return ProvinceReading(snapped.name, snapped.distance, _ocr_confidence(snapped.name, snapped.distance), raw)
    probs = np.exp(model.log_probs(np.stack([word_features(strip) for strip in strips]))).mean(axis=0)
    candidates = {model.classes[i] for i in np.argsort(-probs)[:TOP_K]} | {snapped.name}
    best: ProvinceReading | None = None
    for name in sorted(candidates):
        distance = edit_distance(text, name)
        confidence = 0.5 * (float(probs[model.classes.index(name)]) + _ocr_confidence(name, distance))
        if best is None or confidence > best.confidence:
            best = ProvinceReading(name, distance, confidence, raw)
    assert best is not None
    return best


def ocr_image(gray: GrayImage) -> GrayImage:
    """The province strip as Tesseract reads it best: text about 40 px tall, white margin."""
    scale = min(4.0, max(1.0, 40.0 / max(gray.shape[0], 1)))
    big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else gray
    padded: GrayImage = cv2.copyMakeBorder(big, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=255)
    return padded


def _ocr_confidence(name: str, distance: int) -> float:
    """How much an OCR reading at ``distance`` edits from ``name`` supports it, 0..1."""
    return max(0.0, 1.0 - distance / max(len(name), 1))
