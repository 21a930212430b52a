"""The plates ``stack pipeline start --demo-watchlist`` puts on the watchlist are plates the live traffic's first
simulated camera really shows: its scenes are drawn again the way the camera draws them, frame for frame."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from citystream.ingest.gateway.cameras import SimulatedSource
from citystream.settings import Settings
from citystream.stack.pipeline import DEMO_WATCHLIST, PREFIX, Traffic, first_camera, scenes_of

pytestmark = pytest.mark.unit


def test_the_demo_plates_are_drawn_as_the_simulated_camera_draws_them() -> None:
    camera = first_camera(Settings(), Traffic())
    assert camera is not None and camera.device_id == f"{PREFIX}-gw-000-cam-00"
    drawn = scenes_of(camera)
    shown = SimulatedSource(camera, threading.Event()).scenes
    assert len(drawn) == len(shown)
    assert all(np.array_equal(frame, seen) for (frame, _label), seen in zip(drawn, shown, strict=True))
    plates = [label for _frame, label in drawn if label]
    assert len(plates) >= DEMO_WATCHLIST
    assert all(len(label.rpartition(" ")[0]) >= 3 and label.rpartition(" ")[2] for label in plates), plates


def test_no_camera_no_demo_plates() -> None:
    assert first_camera(Settings(), Traffic(cameras=0)) is None
