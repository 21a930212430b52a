"""The evaluation-only plate renderer and the per-renderer evaluation report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from citystream.processors.plates.classify import MODEL_PATH
from citystream.processors.plates.cli import plates
from citystream.processors.plates.eval_scenes import digit_font, eval_fonts, eval_plate, eval_scene
from citystream.processors.plates.evaluate import char_confusions, evaluate, scene_maker
from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import is_registration
from citystream.processors.plates.synth import font_paths

pytestmark = pytest.mark.unit


def test_evaluation_fonts_are_held_out_from_training_and_come_from_several_families() -> None:
    held_out = {p.resolve() for p in eval_fonts()}
    assert not held_out & {p.resolve() for p in font_paths()}
    families = {p.stem.split("-")[0] for p in eval_fonts()}
    assert {"NotoSansThai", "NotoSerifThai", "NotoLoopedThai", "ArundinaSans", "ArundinaSerif"} <= families
    noto = next(p for p in eval_fonts() if p.stem == "NotoSerifThai-Bold")
    assert digit_font(noto).name == "NotoSerif-Bold.ttf"  # Noto's Thai fonts have no digits of their own
    arundina = next(p for p in eval_fonts() if p.stem == "ArundinaSans")
    assert digit_font(arundina) == arundina


def test_eval_scene_is_deterministic_per_seed_and_labels_a_valid_plate_inside_the_frame() -> None:
    frame_a, label_a = eval_scene(random.Random(3), 1280, 720)
    frame_b, label_b = eval_scene(random.Random(3), 1280, 720)
    assert label_a == label_b and np.array_equal(frame_a, frame_b)
    _, label_c = eval_scene(random.Random(4), 1280, 720)
    assert label_c != label_a
    rng = random.Random(5)
    for _ in range(6):
        frame, label = eval_scene(rng, 1280, 720)
        assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
        assert is_registration(label.registration) and label.province in PROVINCES
        x, y, w, h = label.bbox
        assert 0 <= x and 0 <= y and x + w <= 1280 and y + h <= 720
        assert 70 <= w <= 320 and 1.0 < w / h < 4.0
        assert frame[y:y + h, x:x + w].std() > 15  # a plate with text, not flat paint
        assert any(c.startswith("jpeg") for c in label.conditions)
        assert any(c.startswith("yaw") for c in label.conditions)


def test_plate_styles_and_camera_conditions_all_occur() -> None:
    rng = random.Random(6)
    styles: set[str] = set()
    for _ in range(80):
        plate, label = eval_plate(rng)
        styles.add(label.style)
        patch = np.asarray(plate)[140:160, 30:40].reshape(-1, 3)  # paper inside the border, left of the text
        red, green, blue = np.median(patch, axis=0)
        if label.style == "taxi" and "frame" not in label.conditions:
            assert red > 200 and green > 180 and blue < 100
    assert styles == {"private", "taxi", "commercial", "graphic"}
    seen: set[str] = set()
    rng = random.Random(7)
    for _ in range(30):
        seen.update(eval_scene(rng, 640, 360)[1].conditions)
    assert {"yaw>20", "night_ir", "glare", "shadow", "motion_blur", "defocus_blur", "jpeg<40", "screws"} <= seen


def test_character_confusions_align_by_edit_distance() -> None:
    assert char_confusions("1กข 1234", "1กข 1234") == []
    assert char_confusions("ซช 12", "ชช 12") == [("ซ", "ช")]
    assert char_confusions("9ฉฬ 3094", "ฉฬ 3094") == [("9", "")]  # a dropped leading digit
    assert char_confusions("กข 309", "กข 3094") == [("", "4")]  # an extra last digit


def test_evaluate_reports_per_renderer_not_found_confusions_and_groups() -> None:
    report = evaluate(4, 11, 640, 360, renderer="eval")
    assert report["renderer"] == "eval" and report["n"] == 4
    assert 0 <= report["not_found"] <= 4 - report["exact"]
    assert report["not_found_rate"] == report["not_found"] / 4
    styles = {k: v for k, v in report["accuracy_by"].items() if k.startswith("style:")}
    assert sum(v["n"] for v in styles.values()) == 4
    assert sum(v["exact"] for v in styles.values()) == report["exact"]
    calibration = report["calibration"]
    assert sum(b["reads"] for b in calibration) == 4 - report["not_found"]  # one reading per found plate
    assert sum(b["right"] for b in calibration) <= report["exact"]
    assert all(0.0 <= b["confidence"][0] < b["confidence"][1] <= 1.0 for b in calibration)
    assert all(not k.startswith("font:") or k[5:] in {p.stem for p in eval_fonts()}
               for k in report["accuracy_by"])
    with pytest.raises(ValueError, match="unknown renderer"):
        scene_maker("other")


def test_eval_command_takes_the_renderer_and_keeps_its_json_keys() -> None:
    result = CliRunner().invoke(plates, ["eval", "-n", "2", "--seed", "12", "--width", "640", "--height", "360",
                                         "--renderer", "train"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["renderer"] == "train"
    assert {"n", "seed", "exact", "accuracy", "registration_accuracy", "province_accuracy", "false_positives",
            "frames_per_cpu_s", "misses", "not_found_rate", "char_confusions"} <= set(figures)
    bad = CliRunner().invoke(plates, ["eval", "-n", "1", "--renderer", "other"])
    assert bad.exit_code == 2


def test_eval_command_reads_with_the_classifiers_of_a_model_dir(tmp_path: Path) -> None:
    args = ["eval", "-n", "3", "--seed", "13", "--width", "640", "--height", "360", "--renderer", "eval"]
    shipped = json.loads(CliRunner().invoke(plates, args).output)
    same = CliRunner().invoke(plates, [*args, "--model-dir", str(MODEL_PATH.parent)])
    assert same.exit_code == 0, same.output
    again = json.loads(same.output)
    keys = ("exact", "not_found", "misses")
    assert [again[k] for k in keys] == [shipped[k] for k in keys]
    empty = CliRunner().invoke(plates, [*args, "--model-dir", str(tmp_path)])
    assert empty.exit_code == 2 and "cannot load the classifiers" in empty.output

