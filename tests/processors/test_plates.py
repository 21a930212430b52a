"""Plate reader: accuracy on fresh synthetic road scenes, robustness, pseudonyms and the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pydantic import SecretStr

from citystream.processors.plates.cli import plates
from citystream.processors.plates.evaluate import evaluate
from citystream.processors.plates.plates import PlateReader, PlateResult, pseudonym, read_plates
from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import is_registration, normalise_registration
from citystream.processors.plates.synth import render_plate, road_scene_with_plate
from citystream.settings import WorkerSettings
from tests.conftest import citystream

# Seeds looked at while developing the reader: 1-7, 100, 111, 200, 222, 300, 333, 444, 9301-9303,
# 20261125, and 7000-7019 (training chunks). The accuracy test uses a seed never looked at before
# the shipped models were final.
ACCURACY_SEED = 20261130
KEY = b"test-key-not-secret"


def _config(tmp_path: Path, keys: dict[str, str]) -> Path:
    path = tmp_path / "citystream.yaml"
    path.write_text(yaml.safe_dump({"worker": {"pseudonym_keys": keys}}, allow_unicode=True))
    return path


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# The goal is 95 % exact (registration and province). The shipped models read 291 of these 300
# scenes exactly (97.0 %); scenes are deterministic for a seed, so this is the figure, not a sample.
ACCURACY_GOAL = 0.95


@pytest.mark.unit
def test_reads_at_least_95_percent_of_300_fresh_road_scenes_exactly() -> None:
    report = evaluate(300, ACCURACY_SEED)
    assert report["n"] == 300
    assert report["accuracy"] >= ACCURACY_GOAL, report
    assert report["registration_accuracy"] >= report["accuracy"]
    assert report["province_accuracy"] >= report["accuracy"]
    assert report["exact"] == round(report["accuracy"] * 300) == 300 - len(report["misses"])
    assert report["false_positives"] <= 15, report


@pytest.mark.unit
def test_result_fields_bbox_and_confidence_on_a_scene() -> None:
    frame, label = road_scene_with_plate(random.Random(424242))
    results = read_plates(frame)
    assert results, "expected a plate"
    best = results[0]
    assert isinstance(best, PlateResult)
    assert (best.registration, best.province) == (label.registration, label.province)
    assert is_registration(best.registration)
    assert best.province in PROVINCES
    assert 0.0 < best.confidence <= 1.0
    assert _iou(best.bbox, label.bbox) > 0.6
    with pytest.raises(AttributeError):
        best.registration = "x"  # type: ignore[misc]


@pytest.mark.unit
def test_reads_a_plate_crop_on_a_plain_background() -> None:
    image, label = render_plate(random.Random(515151))
    plate = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    canvas = cv2.copyMakeBorder(plate, 60, 60, 80, 80, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    results = read_plates(canvas)
    assert [(r.registration, r.province) for r in results] == [(label.registration, label.province)]


@pytest.mark.unit
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((720, 1280, 3), np.uint8),
        np.full((720, 1280, 3), 255, np.uint8),
        np.zeros((5, 7, 3), np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.random.default_rng(3).integers(0, 256, (720, 1280, 3), dtype=np.uint8),
        np.random.default_rng(4).integers(0, 256, (300, 300), dtype=np.uint8),
        np.zeros((720, 1280, 3), np.float32),
        np.zeros((10, 10, 10, 3), np.uint8),
    ],
    ids=["zeros", "white", "tiny", "empty", "noise", "gray-noise", "float", "4d"],
)
def test_garbage_input_returns_no_plates_without_raising(image: np.ndarray) -> None:
    assert read_plates(image) == []


@pytest.mark.unit
def test_pseudonym_is_keyed_stable_and_ignores_spelling_noise() -> None:
    base = pseudonym("1กข 1234", "ปทุมธานี", KEY)
    assert len(base) == 64 and int(base, 16) >= 0
    assert pseudonym("1กข1234", " ปทุมธานี ", KEY) == base
    assert pseudonym("๑กข ๑๒๓๔", "ปทุมธานี", KEY) == base
    assert pseudonym("1กข 1234", "ปทุมธานี", b"other-key") != base
    assert pseudonym("1กข 1235", "ปทุมธานี", KEY) != base
    assert pseudonym("1กข 1234", "นนทบุรี", KEY) != base
    assert normalise_registration("กข-56") == "กข 56"


@pytest.mark.unit
def test_pseudonym_key_is_the_tenants_or_the_wildcard_entry() -> None:
    keys = WorkerSettings(pseudonym_keys={"bkk": SecretStr("k1"), "*": SecretStr("k2")})
    assert keys.pseudonym_key("bkk") == b"k1"
    assert keys.pseudonym_key("cnx") == b"k2"
    assert WorkerSettings(pseudonym_keys={"bkk": SecretStr("k1")}).pseudonym_key("cnx") is None
    expected = hmac.new(b"k1", "1กข 1234|ปทุมธานี".encode(), hashlib.sha256).hexdigest()
    assert pseudonym("1กข 1234", "ปทุมธานี", b"k1") == expected


@pytest.mark.unit
def test_reader_object_and_module_function_agree_on_a_scene() -> None:
    frame, label = road_scene_with_plate(random.Random(818181))
    reader = PlateReader()
    assert reader.read(frame) == read_plates(frame)
    assert [(r.registration, r.province) for r in reader.read(frame)][:1] == [(label.registration, label.province)]


@pytest.mark.unit
def test_cli_prints_one_json_line_per_plate_and_reports_each_bad_file(tmp_path: Path) -> None:
    frame, label = road_scene_with_plate(random.Random(616161))
    good = tmp_path / "scene.png"
    cv2.imwrite(str(good), frame)
    ok, jpeg = cv2.imencode(".jpg", frame)
    assert ok
    bad = {
        "notes.txt": b"not an image",
        "empty.jpg": b"",
        "truncated.jpg": jpeg.tobytes()[: len(jpeg) // 2],
        "huge.jpg": b"\xff\xd8\xff\xc0\x00\x11\x08\x4e\x20\x4e\x20\x03" + b"\x00" * 64 + b"\xff\xd9",
        "broken.png": cv2.imencode(".png", frame)[1].tobytes()[:300],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    missing = tmp_path / "missing.jpg"
    config = _config(tmp_path, {"bkk": "tenant-key"})
    args = ["read", "--json", "--tenant", "bkk", "--config", str(config), *(str(tmp_path / n) for n in bad),
            str(good), str(missing)]
    result = CliRunner().invoke(plates, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1
    record = lines[0]
    assert set(record) == {"image", "registration", "province", "confidence", "bbox", "pseudonym", "alternatives"}
    assert 1 <= len(record["alternatives"]) <= 3 and record["alternatives"][0][0] == record["registration"]
    assert all(is_registration(text) for text, _ in record["alternatives"])
    assert len({text for text, _ in record["alternatives"]}) == len(record["alternatives"])
    assert [s for _, s in record["alternatives"][1:]] == sorted((s for _, s in record["alternatives"][1:]),
                                                                 reverse=True)
    assert record["image"] == str(good)
    assert (record["registration"], record["province"]) == (label.registration, label.province)
    assert record["pseudonym"] == pseudonym(label.registration, label.province, b"tenant-key")
    assert len(record["bbox"]) == 4 and 0 < record["confidence"] <= 1
    errors = [line for line in result.stderr.splitlines() if "cannot read image" in line]
    assert sorted(Path(line.split(": ")[1]).name for line in errors) == sorted([*bad, "missing.jpg"])
    assert "frame_too_large" in result.stderr and "truncated_jpeg" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.unit
def test_cli_plain_output_null_pseudonym_without_key_and_usage_errors(tmp_path: Path) -> None:
    frame, label = road_scene_with_plate(random.Random(717171))
    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), frame)
    config = _config(tmp_path, {"bkk": "tenant-key"})
    result = CliRunner().invoke(plates, ["read", "--config", str(config), str(path)])
    assert result.exit_code == 0, result.output
    assert label.registration in result.stdout and label.province in result.stdout
    result = CliRunner().invoke(plates, ["read", "--json", "--tenant", "cnx", "--config", str(config), str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["pseudonym"] is None
    assert "no worker.pseudonym_keys entry for tenant 'cnx'" in result.stderr
    assert CliRunner().invoke(plates, ["read"]).exit_code == 2


@pytest.mark.unit
def test_citystream_plates_read_runs_as_a_real_command(tmp_path: Path) -> None:
    frame, label = road_scene_with_plate(random.Random(919191))
    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), frame)
    config = _config(tmp_path, {"*": "any-tenant-key"})
    res = citystream("plates", "read", "--json", str(path), str(tmp_path / "nope.jpg"), config=config, check=False)
    assert res.returncode == 1, res.stderr
    record = json.loads(res.stdout.splitlines()[0])
    assert (record["registration"], record["province"]) == (label.registration, label.province)
    assert record["pseudonym"] == pseudonym(label.registration, label.province, b"any-tenant-key")
    assert "nope.jpg" in res.stderr and "Traceback" not in res.stderr
