"""Motion gating on synthetic frames: a static scene sends keyframes only, a moving one sends frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from citystream.ingest.gateway.motion import Image, MotionGate
from citystream.settings.gateway import MotionSettings

pytestmark = pytest.mark.unit


def street(width: int = 320, height: int = 180, car_x: int | None = None, noise: int = 0, seed: int = 0) -> Image:
    """A grey road with lane marks; optionally a car box at ``car_x`` and sensor noise of +-``noise``."""
    frame = np.full((height, width, 3), 90, np.uint8)
    frame[: height // 3] = (200, 170, 140)
    for x in range(0, width, 40):
        cv2.line(frame, (x, height - 1), (width // 2, height // 3), (230, 230, 230), 2)
    if car_x is not None:
        cv2.rectangle(frame, (car_x, height // 2), (car_x + width // 4, height // 2 + height // 4), (20, 20, 160), -1)
    if noise:
        rng = np.random.default_rng(seed)
        jitter = rng.integers(-noise, noise + 1, frame.shape)
        frame = np.clip(frame.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    return frame


def run(gate: MotionGate, frames: list[Image], fps: float) -> list[int]:
    """Indices of the frames the gate publishes."""
    return [i for i, frame in enumerate(frames) if gate.check(frame, i / fps).publish]


def test_static_scene_sends_only_keyframes_at_the_interval() -> None:
    gate = MotionGate(MotionSettings(keyframe_interval_s=2.0))
    frames = [street(noise=3, seed=i) for i in range(100)]  # 10 s at 10 fps, camera noise only
    assert run(gate, frames, fps=10) == [0, 20, 40, 60, 80]


def test_first_frame_is_a_keyframe_with_full_score() -> None:
    decision = MotionGate(MotionSettings()).check(street(), 0.0)
    assert decision.publish and decision.keyframe
    assert decision.score == 1.0


def test_moving_car_is_published_every_frame_and_not_marked_keyframe() -> None:
    gate = MotionGate(MotionSettings(keyframe_interval_s=60.0))
    frames = [street(car_x=10 * i) for i in range(30)]
    decisions = [gate.check(f, i / 10) for i, f in enumerate(frames)]
    assert all(d.publish for d in decisions)
    assert all(not d.keyframe for d in decisions[1:])
    assert min(d.score for d in decisions[1:]) >= MotionSettings().min_changed_fraction


def test_moving_scene_sends_at_least_ten_times_more_than_a_static_one() -> None:
    settings = MotionSettings(keyframe_interval_s=5.0)
    moving = run(MotionGate(settings), [street(car_x=10 * i, noise=2, seed=i) for i in range(24)], fps=5)
    static = run(MotionGate(settings), [street(car_x=100, noise=2, seed=i) for i in range(24)], fps=5)
    assert len(moving) == 24
    assert static == [0]


def test_car_stopping_stops_the_frames() -> None:
    gate = MotionGate(MotionSettings(keyframe_interval_s=100.0))
    frames = [street(car_x=10 * min(i, 10)) for i in range(30)]
    assert run(gate, frames, fps=10) == list(range(11))


def test_disabled_gate_publishes_everything() -> None:
    gate = MotionGate(MotionSettings(enabled=False))
    assert run(gate, [street() for _ in range(10)], fps=10) == list(range(10))


def test_shape_change_counts_as_motion() -> None:
    gate = MotionGate(MotionSettings(keyframe_interval_s=100.0))
    gate.check(street(320, 180), 0.0)
    decision = gate.check(street(320, 240), 0.1)
    assert decision.publish and decision.score == 1.0


def test_grey_frames_are_accepted() -> None:
    gate = MotionGate(MotionSettings(keyframe_interval_s=100.0))
    grey = cv2.cvtColor(street(), cv2.COLOR_BGR2GRAY)
    assert gate.check(grey, 0.0).publish
    assert not gate.check(grey.copy(), 0.1).publish
