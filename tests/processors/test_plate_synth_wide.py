"""The wide training renderer: deterministic, labels valid plates inside the frame, never uses held-out fonts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from citystream.processors.plates.eval_scenes import eval_fonts
from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import is_registration
from citystream.processors.plates.synth_wide import STYLES, wide_fonts, wide_patch, wide_plate, wide_scene


@pytest.mark.unit
def test_training_fonts_are_wider_than_tlwg_and_share_nothing_with_the_evaluation_fonts() -> None:
    fonts = wide_fonts()
    assert not {p.name for p in fonts} & {p.name for p in eval_fonts()}
    assert not any(p.stem.startswith(("Noto", "Arundina")) for p in fonts)
    assert {p.parent.name for p in fonts} == {"tlwg", "freefont"}  # fonts-thai-tlwg and fonts-freefont-ttf
    assert len(fonts) == 62 and any(p.stem == "FreeSerif" for p in fonts)


@pytest.mark.unit
def test_wide_scene_is_deterministic_and_labels_a_valid_plate_inside_the_frame() -> None:
    a, label = wide_scene(random.Random(42), 640, 360)
    b, again = wide_scene(random.Random(42), 640, 360)
    assert np.array_equal(a, b) and label == again
    assert a.shape == (360, 640, 3) and a.dtype == np.uint8
    plate = label.plate
    assert is_registration(plate.registration) and plate.province in PROVINCES and label.style in STYLES
    x, y, w, h = plate.bbox
    assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 360 and w > h > 0


@pytest.mark.unit
def test_plates_come_in_many_styles_and_patches_hold_their_plate() -> None:
    rng = random.Random(7)
    styles = {wide_plate(rng)[1].style for _ in range(40)}
    assert len(styles) >= 5, styles
    patch, label = wide_patch(random.Random(3))
    x, y, w, h = label.plate.bbox
    assert 0 <= x and 0 <= y and x + w <= patch.shape[1] and y + h <= patch.shape[0]
    inside = patch[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4].std()
    assert inside > 10  # text on the plate, not a flat patch
