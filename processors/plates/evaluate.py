"""Accuracy and speed of the plate reader on freshly generated, labelled synthetic road scenes.

:func:`evaluate` is what the test suite and the benchmark (``citystream plates eval``, ``bench/``)
call. Three renderers make the scenes: ``train`` (:mod:`synth`, the traffic simulator's generator),
``wide`` (:mod:`synth_wide`, the wide training renderer: validate on it with fresh seeds) and ``eval``
(:mod:`eval_scenes`: held-out fonts, other plate styles, scenes and cameras, used only here).
Pass a seed that was not used for training or tuning (training uses
``seed * 1000 + i`` chunks of :mod:`train`'s ``--seed``, 7 for the shipped models, i.e. 7000-7019).

Besides the exact rate, the report counts scenes where the plate was **not found** (no reading whose
box overlaps the plate's by IoU >= ``FOUND_IOU``) and the **character confusions** of wrong
registrations (the reading on the plate aligned to the truth by edit distance; ``""`` marks a dropped
or an extra character), with accuracy per plate style and per scene condition, ``top3_registration_accuracy`` (the true
registration is among the reading's top-3 alternatives), and ``calibration``: for
the reading on the plate, per confidence decile, how many reads and how many were right (registration
and province) — measured only, nothing is fitted to it.

Speed is measured on the frame as a worker sees it: the scene is JPEG-encoded (quality 90) once,
then JPEG decode (the ceiling) and decode + read are timed separately. ``*_per_cpu_s`` figures
divide by this process's CPU time (all its threads), i.e. frames per second per core.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.processors.plates.plates import Bbox, PlateReader, PlateResult, read_plates
from citystream.processors.plates.synth import road_scene_with_plate

RENDERERS = ("train", "wide", "eval")
FOUND_IOU = 0.3
TOP_CONFUSIONS = 15
CONFIDENCE_BINS = 10
Truth = tuple[str, str, Bbox, str, tuple[str, ...]]  # registration, province, bbox, style, conditions
SceneMaker = Callable[[random.Random, int, int], tuple[NDArray[np.uint8], Truth]]


def _train_scene(rng: random.Random, width: int, height: int) -> tuple[NDArray[np.uint8], Truth]:
    frame, label = road_scene_with_plate(rng, width, height)
    return frame, (label.registration, label.province, label.bbox, "taxi" if label.taxi else "private",
                   (f"font:{label.font}",))


def _wide_scene(rng: random.Random, width: int, height: int) -> tuple[NDArray[np.uint8], Truth]:
    from citystream.processors.plates.synth_wide import wide_scene

    frame, label = wide_scene(rng, width, height)
    plate = label.plate
    return frame, (plate.registration, plate.province, plate.bbox, label.style,
                   (*label.conditions, f"font:{plate.font}"))


def _eval_scene(rng: random.Random, width: int, height: int) -> tuple[NDArray[np.uint8], Truth]:
    from citystream.processors.plates.eval_scenes import eval_scene

    frame, label = eval_scene(rng, width, height)
    conditions = (*label.conditions, f"font:{label.font}")
    return frame, (label.registration, label.province, label.bbox, label.style, conditions)


def scene_maker(renderer: str) -> SceneMaker:
    """The scene generator of a renderer name (``train`` or ``eval``)."""
    makers: dict[str, SceneMaker] = {"train": _train_scene, "wide": _wide_scene, "eval": _eval_scene}
    if renderer not in makers:
        raise ValueError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    return makers[renderer]


def bbox_iou(a: Bbox, b: Bbox) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def char_confusions(truth: str, read: str) -> list[tuple[str, str]]:
    """(true, read) character pairs where ``read`` differs from ``truth`` under a minimal edit alignment
    (spaces ignored; ``""`` stands for a missing or an extra character)."""
    a, b = truth.replace(" ", ""), read.replace(" ", "")
    cost = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    pairs: list[tuple[str, str]] = []
    i, j = len(a), len(b)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            if a[i - 1] != b[j - 1]:
                pairs.append((a[i - 1], b[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((a[i - 1], ""))
            i -= 1
        else:
            pairs.append(("", b[j - 1]))
            j -= 1
    return pairs[::-1]


def _on_plate(results: list[PlateResult], bbox: Bbox) -> PlateResult | None:
    """The reading that overlaps the plate most (IoU >= ``FOUND_IOU``), or None: plate not found."""
    scored = [(bbox_iou(r.bbox, bbox), i) for i, r in enumerate(results)]
    best = max((s for s in scored if s[0] >= FOUND_IOU), default=None)
    return results[best[1]] if best else None


def _matches(results: list[PlateResult], registration: str, province: str) -> tuple[bool, bool, bool]:
    """Whether any result has the registration, the province, and both together."""
    reg = any(r.registration == registration for r in results)
    prov = any(r.province == province for r in results)
    both = any(r.registration == registration and r.province == province for r in results)
    return reg, prov, both


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


class _Tally:
    """Per-scene outcomes: not found, confusions, exact rate per style and per condition."""

    def __init__(self) -> None:
        self.not_found = 0
        self.top3 = 0  # scenes whose registration is among the top-3 alternatives of the reading on the plate
        self.chars: Counter[tuple[str, str]] = Counter()
        self.provinces: Counter[tuple[str, str]] = Counter()
        self.groups: dict[str, list[int]] = {}
        self.bins = [[0, 0] for _ in range(CONFIDENCE_BINS)]  # per confidence decile: reads, right reads

    def add(self, truth: Truth, results: list[PlateResult], exact: bool) -> None:
        """Count one scene."""
        registration, province, bbox, style, conditions = truth
        for key in (f"style:{style}", *(c if ":" in c else f"condition:{c}" for c in conditions)):
            seen = self.groups.setdefault(key, [0, 0])
            seen[0] += exact
            seen[1] += 1
        reading = _on_plate(results, bbox)
        if reading is None:
            self.not_found += 1
            return
        self.top3 += registration in (text for text, _ in reading.alternatives)
        seen = self.bins[min(int(reading.confidence * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)]
        seen[0] += 1
        seen[1] += reading.registration == registration and reading.province == province
        self.chars.update(char_confusions(registration, reading.registration))
        if reading.province != province:
            self.provinces[(province, reading.province)] += 1

    def report(self, n: int) -> dict[str, Any]:
        """The tallies as JSON-ready figures."""
        return {
            "not_found": self.not_found,
            "not_found_rate": self.not_found / n if n else 0.0,
            "top3_registration_accuracy": self.top3 / n if n else 0.0,
            "char_confusions": [[t, r, c] for (t, r), c in self.chars.most_common(TOP_CONFUSIONS)],
            "province_confusions": [[t, r, c] for (t, r), c in self.provinces.most_common(TOP_CONFUSIONS)],
            "calibration": [{"confidence": [i / CONFIDENCE_BINS, (i + 1) / CONFIDENCE_BINS], "reads": b[0],
                             "right": b[1], "right_rate": round(b[1] / b[0], 4) if b[0] else None}
                            for i, b in enumerate(self.bins) if b[0]],
            "accuracy_by": {k: {"exact": v[0], "n": v[1], "accuracy": round(v[0] / v[1], 4)}
                            for k, v in sorted(self.groups.items())},
        }


def evaluate(n: int, seed: int, width: int = 1280, height: int = 720, renderer: str = "train",
             reader: PlateReader | None = None) -> dict[str, Any]:
    """Generate ``n`` labelled road scenes from ``seed`` with ``renderer``, read them; return accuracy and speed.

    ``reader`` (default: the shipped models) lets candidate models be compared on the same scenes.

    ``accuracy`` counts a scene when one reading has both the exact registration and the province.
    ``false_positives`` counts readings whose registration is not the scene's plate.
    """
    make = scene_maker(renderer)
    rng = random.Random(seed)
    tally = _Tally()
    exact = reg_ok = prov_ok = false_positives = 0
    decode_wall = decode_cpu = read_wall = read_cpu = 0.0
    misses: list[dict[str, Any]] = []
    for index in range(n):
        scene, truth = make(rng, width, height)
        registration, province = truth[0], truth[1]
        ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a synthetic scene")
        wall, cpu = time.perf_counter(), time.process_time()
        frame = cv2.imdecode(np.asarray(jpeg), cv2.IMREAD_COLOR)
        decoded_wall, decoded_cpu = time.perf_counter(), time.process_time()
        results = reader.read(frame) if reader is not None else read_plates(frame)
        read_wall += time.perf_counter() - decoded_wall
        read_cpu += time.process_time() - decoded_cpu
        decode_wall += decoded_wall - wall
        decode_cpu += decoded_cpu - cpu
        reg, prov, both = _matches(results, registration, province)
        tally.add(truth, results, both)
        exact += both
        reg_ok += reg
        prov_ok += prov
        false_positives += sum(r.registration != registration for r in results)
        if not both:
            misses.append({"scene": index, "truth": [registration, province],
                           "read": [[r.registration, r.province, r.confidence] for r in results]})
    return {
        "n": n,
        "seed": seed,
        "renderer": renderer,
        "resolution": f"{width}x{height}",
        "exact": exact,
        "accuracy": exact / n if n else 0.0,
        "registration_accuracy": reg_ok / n if n else 0.0,
        "province_accuracy": prov_ok / n if n else 0.0,
        "false_positives": false_positives,
        "frames_per_s": _rate(n, decode_wall + read_wall),
        "frames_per_cpu_s": _rate(n, decode_cpu + read_cpu),
        "decode_frames_per_s": _rate(n, decode_wall),
        "decode_frames_per_cpu_s": _rate(n, decode_cpu),
        "read_frames_per_cpu_s": _rate(n, read_cpu),
        "ratio_to_decode_ceiling": round(decode_cpu / (decode_cpu + read_cpu), 4) if read_cpu > 0 else 0.0,
        **tally.report(n),
        "misses": misses,
    }
