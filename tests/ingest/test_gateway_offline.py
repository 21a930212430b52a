"""The gateway with no broker to talk to: capture, motion gating and faults end up in the disk spool.

The broker address is a free port with nothing listening, so every message stays in the spool where
the test reads it back: these tests need no server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from citystream.ingest.gateway.gateway import Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.ingest.gateway.spool import Spool, Spooled
from citystream.schemas.wire import frame_meta_from_pairs
from citystream.settings import MqttSettings
from citystream.settings.gateway import GatewaySettings, SpoolSettings
from tests.conftest import free_port

pytestmark = pytest.mark.unit


def offline_gateway(tmp_path: Path, **fields: Any) -> tuple[Gateway, CollectorRegistry]:
    """A gateway whose broker is a port with nothing listening."""
    registry = CollectorRegistry()
    settings = GatewaySettings.model_validate({"gateway_id": "gw-off", "state_dir": str(tmp_path / "state"),
                                               "reconnect_min_s": 5.0, **fields})
    mqtt = MqttSettings(port=free_port(), topic_root="off")
    return Gateway(mqtt, settings, GatewayMetrics(registry)), registry


def run_until(gw: Gateway, done: Callable[[], bool], timeout_s: float = 20.0) -> None:
    gw.start(connect_timeout_s=0.05)
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.stop(drain_s=0)


def spooled(tmp_path: Path, gateway_id: str = "gw-off") -> list[Spooled]:
    spool = Spool(tmp_path / "state" / f"{gateway_id}.sqlite3", gateway_id, SpoolSettings())
    try:
        return spool.after(0, 1_000_000)
    finally:
        spool.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def write_video(path: Path, moving: bool, frames: int = 150) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 180))
    for i in range(frames):
        frame = np.full((180, 320, 3), 90, np.uint8)
        frame[:60] = (200, 170, 140)
        x = (8 * i) % 260 if moving else 100
        cv2.rectangle(frame, (x, 90), (x + 60, 140), (20, 20, 160), -1)
        writer.write(frame)
    writer.release()
    return path


def frames_published(tmp_path: Path, name: str, moving: bool) -> tuple[int, list[Spooled]]:
    video = write_video(tmp_path / f"{name}.avi", moving)
    gw, registry = offline_gateway(tmp_path / name, gateway_id=f"gw-{name}", cameras=[{
        "type": "video", "device_id": f"cam-{name}", "path": str(video), "realtime": False, "fps": 25,
        "width": 320, "height": 180, "motion": {"keyframe_interval_s": 2.0}}])
    run_until(gw, gw.cameras_done)
    rows = [r for r in spooled(tmp_path / name, f"gw-{name}") if r.stream == "frame"]
    assert value(registry, "citystream_gateway_captured_total", stream="frame") == len(rows)
    return len(rows), rows


def test_static_video_yields_ten_times_fewer_frames_than_a_moving_one(tmp_path: Path) -> None:
    moving, _ = frames_published(tmp_path, "moving", moving=True)
    static, rows = frames_published(tmp_path, "static", moving=False)
    assert moving == 150
    assert static * 10 <= moving
    metas = [frame_meta_from_pairs(r.properties) for r in rows]
    assert [m.seq for m in metas] == list(range(static))
    assert all(m.keyframe for m in metas)  # 6 s of media at a 2 s keyframe interval
    assert static == 3


def test_frames_carry_their_metadata_as_user_properties(tmp_path: Path) -> None:
    _, rows = frames_published(tmp_path, "meta", moving=True)
    first = rows[0]
    meta = frame_meta_from_pairs(first.properties)
    assert (meta.gateway_id, meta.device_id, meta.seq, meta.width, meta.height) == ("gw-meta", "cam-meta", 0, 320, 180)
    assert meta.jpeg_bytes == len(first.payload)
    assert meta.captured_at.tzinfo is not None
    assert first.topic == "off/nakhon-rangsit/gw-meta/camera/cam-meta/frame"
    assert cv2.imdecode(np.frombuffer(first.payload, np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)


def test_corrupt_image_gives_a_status_event_and_a_metric_and_capture_goes_on(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        path = images / f"{i:02d}.jpg"
        if i == 2:
            path.write_bytes(b"\xff\xd8\xff garbage from a failing SD card")
        else:
            cv2.imwrite(str(path), np.full((90, 160, 3), 40 * i, np.uint8))
    gw, registry = offline_gateway(tmp_path, cameras=[{
        "type": "images", "device_id": "cam-sd", "path": str(images), "loop": False, "realtime": False,
        "motion": {"enabled": False}}])
    run_until(gw, gw.cameras_done)
    rows = spooled(tmp_path)
    assert value(registry, "citystream_gateway_dropped_total", reason="bad_frame") == 1
    statuses = [orjson.loads(r.payload) for r in rows if r.stream == "status"]
    errors = [s for s in statuses if s["state"] == "camera_error"]
    assert len(errors) == 1 and "02.jpg" in errors[0]["detail"] and "cam-sd" in errors[0]["detail"]
    assert len([r for r in rows if r.stream == "frame"]) == 5


def test_unavailable_camera_is_retried_with_backoff_and_reported(tmp_path: Path) -> None:
    gw, registry = offline_gateway(tmp_path, cameras=[{
        "type": "video", "device_id": "cam-gone", "path": str(tmp_path / "missing.mp4"),
        "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}],
        sensors=[{"device_id": "pm1", "metric": "pm25_ug_m3", "interval_s": 0.05}])
    run_until(gw, lambda: value(registry, "citystream_gateway_camera_errors_total", reason="not_found") >= 4)
    rows = spooled(tmp_path)
    errors = [orjson.loads(r.payload) for r in rows if r.stream == "status"]
    errors = [s for s in errors if s["state"] == "camera_error"]
    assert len(errors) >= 4 and all("cam-gone" in s["detail"] and "missing.mp4" in s["detail"] for s in errors)
    assert value(registry, "citystream_gateway_cameras_up") == 0
    assert any(r.stream == "reading" for r in rows)  # the sensors kept going


def test_broker_unreachable_everything_waits_in_the_spool_in_order(tmp_path: Path) -> None:
    gw, registry = offline_gateway(tmp_path, sensors=[
        {"device_id": "pm1", "metric": "pm25_ug_m3", "interval_s": 0.02},
        {"device_id": "wl1", "metric": "water_level_cm", "interval_s": 0.03}])
    run_until(gw, lambda: value(registry, "citystream_gateway_captured_total", stream="reading") >= 60)
    rows = spooled(tmp_path)
    readings = [orjson.loads(r.payload) for r in rows if r.stream == "reading"]
    assert [r["seq"] for r in readings] == list(range(len(readings)))  # one seq per gateway stream
    assert {r["device_id"] for r in readings} == {"pm1", "wl1"}
    assert all(r["tenant"] == "nakhon-rangsit" and r["gateway_id"] == "gw-off" for r in readings)
    assert value(registry, "citystream_gateway_spooled_total", stream="reading") == len(readings)
    assert value(registry, "citystream_gateway_published_total", stream="reading") == 0
    assert value(registry, "citystream_gateway_connected") == 0
    assert value(registry, "citystream_gateway_connect_failures_total", reason="unreachable") >= 1
    assert value(registry, "citystream_gateway_spool_messages") == len(rows)
    assert value(registry, "citystream_gateway_spool_bytes") == sum(r.nbytes for r in rows)


def test_small_spool_drops_oldest_and_counts_it(tmp_path: Path) -> None:
    gw, registry = offline_gateway(tmp_path, spool={"max_bytes": 64 * 1024},
                                   sensors=[{"device_id": "pm1", "metric": "pm25_ug_m3", "interval_s": 0.002}])
    run_until(gw, lambda: value(registry, "citystream_gateway_dropped_total", reason="spool_full") >= 50)
    rows = [r for r in spooled(tmp_path) if r.stream == "reading"]
    seqs = [r.seq for r in rows]
    captured = value(registry, "citystream_gateway_captured_total", stream="reading")
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the newest, contiguous
    assert seqs[-1] == captured - 1
    dropped = value(registry, "citystream_gateway_dropped_total", reason="spool_full")
    assert len(rows) + dropped >= captured  # every reading is either kept or counted (statuses may go too)


def test_bad_replay_rows_are_counted_and_skipped(tmp_path: Path) -> None:
    csv = tmp_path / "readings.csv"
    csv.write_text("metric,value\npm25_ug_m3,12\npm25_ug_m3,oops\npm25_ug_m3,inf\npm25_ug_m3,14\n")
    gw, registry = offline_gateway(tmp_path, sensors=[
        {"type": "replay", "device_id": "pm1", "path": str(csv), "interval_s": 0.01}])
    run_until(gw, lambda: value(registry, "citystream_gateway_captured_total", stream="reading") >= 2)
    readings = [orjson.loads(r.payload) for r in spooled(tmp_path) if r.stream == "reading"]
    assert [(r["seq"], r["value"]) for r in readings] == [(0, 12.0), (1, 14.0)]
    assert value(registry, "citystream_gateway_dropped_total", reason="bad_reading") == 2
