"""Accuracy and speed of the plate reader on freshly generated, labelled synthetic road scenes.

:func:`evaluate` is what the test suite and the benchmark (``citystream plates eval``, ``bench/``)
call. Pass a seed that was not used for training or tuning (training uses ``seed * 1000 + i``
chunks of :mod:`plate_train`'s ``--seed``, 7 for the shipped models, i.e. 7000-7019).

Speed is measured on the frame as a worker sees it: the scene is JPEG-encoded (quality 90) once,
then JPEG decode (the ceiling) and decode + read are timed separately. ``*_per_cpu_s`` figures
divide by this process's CPU time (all its threads), i.e. frames per second per core.
"""

from __future__ import annotations

import random
import time
from typing import Any

import cv2
import numpy as np

from citystream.processors.plate_synth import road_scene_with_plate
from citystream.processors.plates import PlateResult, read_plates


def _matches(results: list[PlateResult], registration: str, province: str) -> tuple[bool, bool, bool]:
    """Whether any result has the registration, the province, and both together."""
    reg = any(r.registration == registration for r in results)
    prov = any(r.province == province for r in results)
    both = any(r.registration == registration and r.province == province for r in results)
    return reg, prov, both


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def evaluate(n: int, seed: int, width: int = 1280, height: int = 720) -> dict[str, Any]:
    """Generate ``n`` labelled road scenes from ``seed``, read them; return accuracy and speed figures.

    ``accuracy`` counts a scene when one reading has both the exact registration and the province.
    ``false_positives`` counts readings whose registration is not the scene's plate.
    """
    rng = random.Random(seed)
    exact = reg_ok = prov_ok = false_positives = 0
    decode_wall = decode_cpu = read_wall = read_cpu = 0.0
    misses: list[dict[str, Any]] = []
    for index in range(n):
        scene, label = road_scene_with_plate(rng, width, height)
        ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a synthetic scene")
        wall, cpu = time.perf_counter(), time.process_time()
        frame = cv2.imdecode(np.asarray(jpeg), cv2.IMREAD_COLOR)
        decoded_wall, decoded_cpu = time.perf_counter(), time.process_time()
        results = read_plates(frame)
        read_wall += time.perf_counter() - decoded_wall
        read_cpu += time.process_time() - decoded_cpu
        decode_wall += decoded_wall - wall
        decode_cpu += decoded_cpu - cpu
        reg, prov, both = _matches(results, label.registration, label.province)
        exact += both
        reg_ok += reg
        prov_ok += prov
        false_positives += sum(r.registration != label.registration for r in results)
        if not both:
            misses.append({"scene": index, "truth": [label.registration, label.province],
                           "read": [[r.registration, r.province, r.confidence] for r in results]})
    return {
        "n": n,
        "seed": seed,
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
        "misses": misses,
    }
