"""Traffic simulator: road scenes with Thai plates and faces, simulated fleets, ``simulate()`` on the broker."""

from __future__ import annotations

import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from citystream.ingest.gateway import scenes
from citystream.ingest.gateway.simulator import gateway_settings, simulate
from citystream.schemas.events import Metric
from citystream.settings.gateway import GatewaySettings, SimulatedCamera, SimulatedSensor
from tests.ingest.test_gateway_publish import Subscriber, stack_settings

PLATE = re.compile(r"^[1-9]?[ก-ฮ]{2} [1-9][0-9]{0,3} \S+$")  # "1กข 1234 กรุงเทพมหานคร"


def faces_in(frame: np.ndarray) -> int:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return len(cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40)))


@pytest.mark.unit
def test_road_scenes_carry_rendered_thai_plates() -> None:
    rng = random.Random(7)
    labels = []
    for _ in range(4):
        frame, label = scenes.road_scene(rng, 640, 360)
        assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
        labels.append(label)
    assert all(PLATE.match(label) for label in labels), labels
    assert len(set(labels)) == 4


@pytest.mark.unit
def test_packaged_face_is_a_detectable_face() -> None:
    face = scenes.packaged_face()
    assert face is not None, "no face image shipped in an installed package (scikit-image)"
    assert faces_in(face) == 1


@pytest.mark.unit
def test_every_nth_scene_has_a_face_and_scenes_are_deterministic() -> None:
    first = scenes.scene_set(seed=11, count=4, width=640, height=360, face_every=2)
    again = scenes.scene_set(seed=11, count=4, width=640, height=360, face_every=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert [faces_in(s) >= 1 for s in first] == [False, True, False, True]


@pytest.mark.unit
def test_animation_holds_each_scene_and_drifts() -> None:
    ramp = np.repeat(np.linspace(0, 150, 160, dtype=np.uint8)[None, :, None], 20, axis=0).repeat(3, axis=2)
    frames = [ramp + 50 * i for i in range(3)]
    assert np.array_equal(scenes.animate(frames, 0), frames[0])
    assert not np.array_equal(scenes.animate(frames, 1), frames[0])
    assert sorted(scenes.animate(frames, 1)[0, :, 0]) == sorted(frames[0][0, :, 0])  # the same scene, shifted
    assert np.array_equal(scenes.animate(frames, 10), frames[1])
    assert np.array_equal(scenes.animate(frames, 30), frames[0])  # loops


@pytest.mark.unit
def test_fleet_settings_ids_devices_tenant_and_anomalies(tmp_path: Path) -> None:
    base = GatewaySettings(tenant="pathum-thani", username="gateway", state_dir=tmp_path)
    gw = gateway_settings(base, 7, cameras=2, sensors=7, rate=500.0, duration=100.0, prefix="run1")
    assert gw.gateway_id == "run1-gw-007" and gw.tenant == "pathum-thani" and gw.username == "gateway"
    assert all(isinstance(c, SimulatedCamera) and c.fps == 30.0 for c in gw.cameras)
    ids = [c.device_id for c in gw.cameras] + [s.device_id for s in gw.sensors]
    assert len(set(ids)) == 9 and all(i.startswith("run1-gw-007-") for i in ids)
    sensors = [s for s in gw.sensors if isinstance(s, SimulatedSensor)]
    assert {s.metric for s in sensors} == {Metric.PM25, Metric.PM10, Metric.WATER_LEVEL, Metric.TEMPERATURE,
                                          Metric.HUMIDITY, Metric.NOISE}
    episodes = {s.metric: s.anomalies for s in sensors if s.anomalies}
    assert set(episodes) == {Metric.PM25, Metric.WATER_LEVEL}
    assert all(0 < e.start_s < 100 and e.start_s + e.duration_s <= 100 for a in episodes.values() for e in a)
    assert GatewaySettings.model_validate(gw.model_dump())  # still valid settings


@pytest.mark.integration
def test_simulate_publishes_counts_and_anomalies(stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, tenant="pathum-thani")
    sub = Subscriber(settings, f"{unique}/#")
    try:
        stats = simulate(settings, gateways=1, cameras=1, sensors=2, rate=10.0, duration=3.0, prefix=unique,
                         frame_size=(320, 180))
        sub.wait_for("the readings", lambda: sub.count("reading") >= stats.published["reading"], timeout_s=20)
    finally:
        sub.close()
    assert stats.gateway_ids == [f"{unique}-gw-000"]
    assert stats.published["reading"] == stats.captured["reading"] >= 40
    assert stats.published["frame"] >= 3
    assert stats.left_in_spool == 0
    values: dict[str, list[float]] = {}
    for m in sub.received():
        assert m.topic.startswith(f"{unique}/pathum-thani/{unique}-gw-000/")
        if m.stream == "reading":
            doc = m.doc()
            values.setdefault(doc["metric"], []).append(doc["value"])
    assert max(values["pm25_ug_m3"]) > 75  # the haze episode in the middle of the run
    assert max(values["water_level_cm"]) > 260  # the canal rising
