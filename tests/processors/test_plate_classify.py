"""Glyph and province classifiers: a model loads alone, or in an ensemble when a ``_wide`` sibling lies beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from citystream.processors.plates.classify import (
    CLASSES,
    MODEL_PATH,
    WIDE_WEIGHT,
    Ensemble,
    Mlp,
    load_classifier,
    load_mlp,
    wide_sibling,
)
from citystream.processors.plates.province import PROVINCE_MODEL_PATH
from citystream.processors.plates.provinces import PROVINCES


@pytest.mark.unit
@pytest.mark.parametrize(("path", "classes"), [(MODEL_PATH, tuple(CLASSES)), (PROVINCE_MODEL_PATH, PROVINCES)])
def test_a_wide_sibling_makes_an_ensemble_of_normalised_weighted_log_probabilities(
        tmp_path: Path, path: Path, classes: tuple[str, ...]) -> None:
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    alone = load_classifier(copy, classes)
    assert isinstance(alone, Mlp) and alone.classes == classes
    shutil.copy(path, wide_sibling(copy))
    model = load_classifier(copy, classes)
    assert isinstance(model, Ensemble) and model.weights == (1 - WIDE_WEIGHT, WIDE_WEIGHT)
    assert model.classes == classes and wide_sibling(copy).name == f"{path.stem}_wide.npz"
    plain = load_mlp(path, classes)
    features = np.random.default_rng(0).normal(size=(5, plain.mean.shape[0])).astype(np.float32)
    assert np.allclose(np.exp(model.log_probs(features)).sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(model.log_probs(features), plain.log_probs(features), atol=1e-3)  # same member twice
    other = Mlp(classes, plain.mean, plain.scale, plain.w1, plain.b1, plain.w2, plain.b2 + np.arange(len(classes),
                                                                                                     dtype=np.float32))
    mixed = Ensemble((plain, other), (0.5, 0.5)).log_probs(features)
    assert not np.allclose(mixed, plain.log_probs(features), atol=1e-3)
    assert np.allclose(Ensemble((plain, other), (1.0, 0.0)).log_probs(features), plain.log_probs(features), atol=1e-4)
