"""Character classifier for registration glyphs: HOG + pixel + geometry features into small MLPs.

The weights live in ``processors/plates/models/plate_chars.npz`` (trained on the simulator's renderer),
produced by :mod:`citystream.processors.plates.train` (deterministic for a given seed). When a
``plate_chars_wide.npz`` (``train --wide``: mostly the wide renderer, :mod:`synth_wide`) lies beside a
model, :func:`load_classifier` combines the two into an :class:`Ensemble` (weighted geometric mean of
their probabilities, ``WIDE_WEIGHT`` on the wide one); none is shipped yet. Inference is numpy only;
the networks score all classes and the caller restricts each position to digits or consonants as the
registration format demands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.processors.plates.registration import DIGITS, PLATE_CONSONANTS
from citystream.processors.plates.segment import Box, GrayImage

CLASSES = DIGITS + PLATE_CONSONANTS
MODEL_PATH = Path(__file__).with_name("models") / "plate_chars.npz"
CANVAS = 32
WIDE_WEIGHT = 0.3  # share of the wide-renderer model in an ensemble (chosen on training-renderer validation seeds)
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


class Classifier(Protocol):
    """Anything that scores feature rows over named classes (an :class:`Mlp` or an :class:`Ensemble`)."""

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in score order."""

    def log_probs(self, features: Floats) -> Floats:
        """Return log-probabilities over ``classes`` for each row of ``features``."""


@dataclass(frozen=True)
class Ensemble:
    """Weighted geometric mean of the members' class probabilities (members share their classes)."""

    members: tuple[Mlp, ...]
    weights: tuple[float, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        """The members' class names."""
        return self.members[0].classes

    def log_probs(self, features: Floats) -> Floats:
        """Return the renormalised weighted sum of the members' log-probabilities."""
        total = sum(w * m.log_probs(features) for m, w in zip(self.members, self.weights, strict=True))
        logits = np.asarray(total, np.float32)
        logits = logits - logits.max(axis=1, keepdims=True)
        out: Floats = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return out


def wide_sibling(path: Path) -> Path:
    """Where the wide-renderer model beside ``path`` lives (``plate_chars.npz`` -> ``plate_chars_wide.npz``)."""
    return path.with_name(f"{path.stem}_wide{path.suffix}")


def load_classifier(path: Path, classes: tuple[str, ...]) -> Mlp | Ensemble:
    """The MLP at ``path``, in an :class:`Ensemble` with its wide sibling when that file exists."""
    model = load_mlp(path, classes)
    wide = wide_sibling(path)
    if not wide.is_file():
        return model
    return Ensemble((model, load_mlp(wide, classes)), (1.0 - WIDE_WEIGHT, WIDE_WEIGHT))


@lru_cache(maxsize=1)
def default_model() -> Mlp | Ensemble:
    """Return the shipped character classifier, loaded once per process."""
    return load_classifier(MODEL_PATH, tuple(CLASSES))


def class_mask(allowed: str) -> NDArray[np.bool_]:
    """Boolean mask over ``CLASSES`` selecting the characters in ``allowed``."""
    return np.array([ch in allowed for ch in CLASSES], dtype=bool)
