"""Character classifier for registration glyphs: HOG + pixel + geometry features into a small MLP.

The weights live in ``processors/plates/models/plate_chars.npz`` and are produced by
:mod:`citystream.processors.plates.train` (deterministic for a given seed). Inference is numpy only;
the network scores all classes and the caller restricts each position to digits or consonants as
the registration format demands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.processors.plates.registration import DIGITS, PLATE_CONSONANTS
from citystream.processors.plates.segment import Box, GrayImage

CLASSES = DIGITS + PLATE_CONSONANTS
MODEL_PATH = Path(__file__).with_name("models") / "plate_chars.npz"
CANVAS = 32
Floats = NDArray[np.float32]


@lru_cache(maxsize=1)
def _hog() -> cv2.HOGDescriptor:
    return cv2.HOGDescriptor((CANVAS, CANVAS), (16, 16), (8, 8), (8, 8), 9)


def glyph_features(ink: GrayImage, box: Box, line_top: int, line_bottom: int) -> Floats:
    """Feature vector of one glyph (ink = 255) relative to its registration line."""
    x, y, w, h = box
    crop = ink[y:y + h, x:x + w]
    scale = (CANVAS - 4) / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    glyph = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    ox, oy = (CANVAS - size[0]) // 2, (CANVAS - size[1]) // 2
    canvas[oy:oy + size[1], ox:ox + size[0]] = glyph
    hog = _hog().compute(canvas).ravel()
    pixels = cv2.resize(canvas, (12, 12), interpolation=cv2.INTER_AREA).ravel().astype(np.float32) / 255.0
    line_h = max(1.0, float(line_bottom - line_top))
    geometry = np.array([h / line_h, w / line_h, (y - line_top) / line_h, (y + h - line_bottom) / line_h],
                        np.float32)
    return np.concatenate([hog.astype(np.float32), pixels, geometry])


@dataclass(frozen=True)
class Mlp:
    """A one-hidden-layer perceptron over standardised features, scoring ``classes``."""

    classes: tuple[str, ...]
    mean: Floats
    scale: Floats
    w1: Floats
    b1: Floats
    w2: Floats
    b2: Floats

    def log_probs(self, features: Floats) -> Floats:
        """Return log-probabilities over ``classes`` for each row of ``features``."""
        hidden = np.maximum(((features - self.mean) * self.scale) @ self.w1 + self.b1, 0.0)
        logits = hidden @ self.w2 + self.b2
        logits = logits - logits.max(axis=1, keepdims=True)
        out: Floats = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return out

    def save(self, path: Path) -> None:
        """Write the weights (float16) to ``path`` as a compressed npz file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name).astype(np.float16) for name in ("mean", "scale", "w1", "b1", "w2", "b2")}
        with path.open("wb") as handle:
            np.savez_compressed(handle, classes=np.array(self.classes), **arrays)


def load_mlp(path: Path, classes: tuple[str, ...]) -> Mlp:
    """Load MLP weights; raises if the file is missing or was trained for other classes."""
    with np.load(path) as data:
        if tuple(data["classes"].tolist()) != classes:
            raise ValueError(f"{path} was trained for different classes; rerun `citystream plates train`")
        arrays = {name: data[name].astype(np.float32) for name in ("mean", "scale", "w1", "b1", "w2", "b2")}
    return Mlp(classes, **arrays)


@lru_cache(maxsize=1)
def default_model() -> Mlp:
    """Return the shipped character model, loaded once per process."""
    return load_mlp(MODEL_PATH, tuple(CLASSES))


def class_mask(allowed: str) -> NDArray[np.bool_]:
    """Boolean mask over ``CLASSES`` selecting the characters in ``allowed``."""
    return np.array([ch in allowed for ch in CLASSES], dtype=bool)
