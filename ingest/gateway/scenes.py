"""Synthetic camera content for the simulated camera: road scenes with Thai plates, sometimes a face.

Plates come from :mod:`citystream.processors.plates.synth` (``road_scene_with_plate``); when that
module cannot be imported a plain road scene is drawn instead (logged once). Faces come from an
image shipped inside an installed package (the ``astronaut`` sample in scikit-image's wheel); without
it frames carry no face (logged once). Everything is deterministic for a given seed.
"""

from __future__ import annotations

import functools
import logging
import random
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]


@functools.cache
def _plate_scene_fn() -> Any:
    try:
        from citystream.processors.plates import synth as plate_synth
    except Exception as exc:
        log.warning("plate_synth not importable; simulated cameras draw plain road scenes",
                    extra={"error": repr(exc)})
        return None
    return plate_synth.road_scene_with_plate


@functools.cache
def packaged_face() -> Image | None:
    """A BGR photo with a face from an installed package, or None."""
    try:
        from skimage import data

        sample_data: Any = data  # untyped package
        rgb = np.asarray(sample_data.astronaut(), dtype=np.uint8)
    except Exception as exc:
        log.warning("no packaged face image (scikit-image not installed?); simulated frames carry no faces",
                    extra={"error": repr(exc)})
        return None
    face: Image = cv2.cvtColor(rgb[0:260, 120:380], cv2.COLOR_RGB2BGR)
    return face


def plain_road(rng: random.Random, width: int, height: int) -> Image:
    """Sky, asphalt, lane markings and a car-like box."""
    frame = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * rng.uniform(0.3, 0.45))
    frame[:horizon] = (rng.randint(180, 235), rng.randint(150, 200), rng.randint(110, 160))
    frame[horizon:] = (rng.randint(70, 100),) * 3
    for x in range(0, width, max(8, width // 8)):
        cv2.line(frame, (x, height - 1), (width // 2 + (x - width // 2) // 4, horizon), (230, 230, 230), 2)
    x0, y0 = rng.randint(0, width // 2), rng.randint(horizon, max(horizon + 1, height * 3 // 4))
    colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    cv2.rectangle(frame, (x0, y0), (x0 + width // 3, min(height - 1, y0 + height // 4)), colour, -1)
    return frame


def road_scene(rng: random.Random, width: int, height: int) -> tuple[Image, str]:
    """A road scene with a plate (label is the registration + province) or a plain one (label '')."""
    fn = _plate_scene_fn()
    if fn is not None:
        try:
            frame, label = fn(rng, width, height)
            return np.ascontiguousarray(frame, dtype=np.uint8), f"{label.registration} {label.province}"
        except Exception as exc:
            log.warning("plate scene failed; plain road", extra={"error": repr(exc)})
    return plain_road(rng, width, height), ""


def with_face(frame: Image, rng: random.Random) -> Image:
    """The frame with the packaged face pasted at a random place (unchanged if there is none)."""
    face = packaged_face()
    if face is None:
        return frame
    height, width = frame.shape[:2]
    size = max(32, min(height, width) // 3)
    small = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    x, y = rng.randint(0, width - size), rng.randint(0, height - size)
    out = frame.copy()
    out[y:y + size, x:x + size] = small
    return out


def scene_set(seed: int, count: int, width: int, height: int, face_every: int) -> list[Image]:
    """``count`` distinct scenes; every ``face_every``-th carries a face."""
    rng = random.Random(seed)
    scenes = []
    for index in range(count):
        frame, _label = road_scene(rng, width, height)
        if face_every and index % face_every == face_every - 1:
            frame = with_face(frame, rng)
        scenes.append(frame)
    return scenes


def animate(scenes: list[Image], index: int, hold: int = 10) -> Image:
    """Frame ``index`` of a loop over the scenes: each held ``hold`` frames while the view drifts."""
    scene = scenes[(index // hold) % len(scenes)]
    shift = (index % hold) * max(2, scene.shape[1] // 80)
    return np.roll(scene, shift, axis=1)
