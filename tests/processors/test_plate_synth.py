"""Synthetic Thai plates and road scenes: format, determinism and geometry of the labels."""

from __future__ import annotations

import random

import numpy as np
import pytest

from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import is_registration
from citystream.processors.plates.synth import (
    font_paths,
    plate_patch,
    random_registration,
    render_plate,
    road_scene_with_plate,
)


@pytest.mark.unit
def test_registrations_follow_the_thai_car_format_in_both_variants() -> None:
    rng = random.Random(11)
    regs = [random_registration(rng) for _ in range(500)]
    assert all(is_registration(r) for r in regs)
    with_lead = [r for r in regs if r[0].isdigit()]
    assert 0.4 < len(with_lead) / len(regs) < 0.8  # both 1กข 1234 and กข 1234 occur
    assert {len(r.split(" ")[1]) for r in regs} == {1, 2, 3, 4}


@pytest.mark.unit
def test_render_plate_is_deterministic_for_a_seed() -> None:
    image_a, label_a = render_plate(random.Random(5))
    image_b, label_b = render_plate(random.Random(5))
    assert label_a == label_b
    assert np.array_equal(np.asarray(image_a), np.asarray(image_b))
    _, label_c = render_plate(random.Random(6))
    assert label_c != label_a


@pytest.mark.unit
def test_plates_have_realistic_shape_labels_and_white_or_yellow_background() -> None:
    rng = random.Random(21)
    fonts, taxis = set(), 0
    for _ in range(60):
        image, label = render_plate(rng, degrade=False)
        assert image.mode == "RGB"
        assert 0.38 < image.height / image.width < 0.5  # 34 x 15 cm plate
        assert label.bbox == (0, 0, image.width, image.height)
        assert is_registration(label.registration)
        assert label.province in PROVINCES
        corner = np.asarray(image)[image.height // 2, 2 * image.width // 100 + 1].astype(int)
        red, green, blue = np.asarray(image)[image.height - 12, image.width // 10].astype(int)
        assert red > 200 and green > 180  # white or yellow paper near the bottom-left corner
        taxis += label.taxi
        if label.taxi:
            assert blue < 100
        fonts.add(label.font)
        assert corner.shape == (3,)
    assert 3 <= taxis <= 25
    assert len(fonts) >= 15
    assert len(font_paths()) >= 20


@pytest.mark.unit
def test_road_scene_is_a_bgr_frame_with_the_plate_inside_its_bbox() -> None:
    rng = random.Random(31)
    for _ in range(5):
        frame, label = road_scene_with_plate(rng, 1280, 720)
        assert frame.shape == (720, 1280, 3)
        assert frame.dtype == np.uint8
        x, y, w, h = label.bbox
        assert 0 <= x and 0 <= y and x + w <= 1280 and y + h <= 720
        assert 120 <= w <= 300 and 50 <= h <= 160
        assert 1.6 < w / h < 3.2
        plate = frame[y + h // 3:y + 2 * h // 3, x + w // 3:x + 2 * w // 3]
        assert plate.std() > 15  # text inside, not flat paint


@pytest.mark.unit
def test_road_scene_is_deterministic_and_scales_to_other_sizes() -> None:
    frame_a, label_a = road_scene_with_plate(random.Random(41), 640, 360)
    frame_b, label_b = road_scene_with_plate(random.Random(41), 640, 360)
    assert frame_a.shape == (360, 640, 3)
    assert label_a == label_b
    assert np.array_equal(frame_a, frame_b)


@pytest.mark.unit
def test_plate_patch_is_a_small_deterministic_image_with_the_plate_in_its_bbox() -> None:
    patch_a, label_a = plate_patch(random.Random(51))
    patch_b, label_b = plate_patch(random.Random(51))
    assert np.array_equal(patch_a, patch_b) and label_a == label_b
    h, w = patch_a.shape[:2]
    assert patch_a.dtype == np.uint8 and patch_a.shape[2] == 3 and w * h < 600 * 400
    x, y, bw, bh = label_a.bbox
    assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
    assert 140 <= bw <= 280 and 1.6 < bw / bh < 3.2
    assert is_registration(label_a.registration) and label_a.province in PROVINCES
