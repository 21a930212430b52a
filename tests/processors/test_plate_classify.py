"""Glyph and province classifiers: the shipped models load as an ensemble with their wide-renderer siblings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citystream.processors.plates.classify import (
    CLASSES,
    MODEL_PATH,
    WIDE_WEIGHT,
    Ensemble,
    load_classifier,
    load_mlp,
    wide_sibling,
)
from citystream.processors.plates.province import PROVINCE_MODEL_PATH
from citystream.processors.plates.provinces import PROVINCES


@pytest.mark.unit
@pytest.mark.parametrize(("path", "classes"), [(MODEL_PATH, tuple(CLASSES)), (PROVINCE_MODEL_PATH, PROVINCES)])
def test_shipped_models_load_as_an_ensemble_of_normalised_weighted_log_probabilities(
        path: Path, classes: tuple[str, ...]) -> None:
    model = load_classifier(path, classes)
    assert isinstance(model, Ensemble) and model.weights == (1 - WIDE_WEIGHT, WIDE_WEIGHT)
    assert model.classes == classes
    plain, wide = load_mlp(path, classes), load_mlp(wide_sibling(path), classes)
    features = np.random.default_rng(0).normal(size=(5, plain.mean.shape[0])).astype(np.float32)
    mixed = model.log_probs(features)
    assert np.allclose(np.exp(mixed).sum(axis=1), 1.0, atol=1e-4)
    expected = (1 - WIDE_WEIGHT) * plain.log_probs(features) + WIDE_WEIGHT * wide.log_probs(features)
    assert np.array_equal(mixed.argmax(axis=1), expected.argmax(axis=1))
    alone = Ensemble((plain, wide), (1.0, 0.0)).log_probs(features)
    assert np.allclose(alone, plain.log_probs(features), atol=1e-4)
