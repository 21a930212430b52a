"""Valid gateway messages for the benchmark: ~200 B sensor readings and 100 KiB JPEG frames.

They pass the bridge's validation (topic map, contracts, event ids), so the bridge does its full
work on every message. Built with orjson and precomputed pieces so the publisher stays cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import numpy as np
import orjson

from citystream.ingest.bridge.validate import fast_event_id
from citystream.schemas.topics import mqtt_topic

TENANT = "bench"
FRAME_BYTES = 100 * 1024
Props = list[tuple[str, str]]


def now_iso() -> str:
    """UTC now as the contracts write it (ms precision, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading_topic(root: str, gateway: str, device: str) -> str:
    """MQTT topic of a bench sensor."""
    return mqtt_topic(root, TENANT, gateway, "sensor", device, "reading")


def frame_topic(root: str, gateway: str, device: str) -> str:
    """MQTT topic of a bench camera."""
    return mqtt_topic(root, TENANT, gateway, "camera", device, "frame")


def reading(gateway: str, device: str, seq: int, captured_at: str | None = None) -> bytes:
    """The JSON of one SensorReading (about 200 bytes)."""
    return orjson.dumps({
        "event_id": fast_event_id(gateway, "reading", seq), "schema_version": 1, "tenant": TENANT,
        "gateway_id": gateway, "device_id": device, "seq": seq, "captured_at": captured_at or now_iso(),
        "district": "", "kind": "sensor_reading", "metric": "pm25_ug_m3", "value": 12.5 + seq % 50})


def frame_props(gateway: str, device: str, seq: int, jpeg_bytes: int, width: int, height: int,
                captured_at: str | None = None) -> Props:
    """FrameMeta as MQTT user properties / Kafka headers (same format as ``schemas.wire``)."""
    return [("event_id", fast_event_id(gateway, "frame", seq)), ("schema_version", "1"), ("tenant", TENANT),
            ("gateway_id", gateway), ("device_id", device), ("seq", str(seq)),
            ("captured_at", captured_at or now_iso()), ("district", ""), ("kind", "frame_meta"),
            ("width", str(width)), ("height", str(height)), ("jpeg_bytes", str(jpeg_bytes)),
            ("motion_score", "0.5"), ("keyframe", "false")]


def padded_jpeg(size: int = FRAME_BYTES, width: int = 640, height: int = 360) -> tuple[bytes, int, int]:
    """A valid JPEG of exactly ``size`` bytes: a noisy image, padded with COM segments after SOI."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    quality = 90
    while True:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("cv2 could not encode the bench frame")
        body = bytes(buf)
        if len(body) <= size - 4 or quality <= 10:
            break
        quality -= 10
    if len(body) > size - 4:
        raise RuntimeError(f"bench frame of {len(body)} bytes does not fit in {size}")
    pad = size - len(body)
    segments = []
    while pad > 0:
        chunk = min(pad, 65_535 + 2)
        if pad - chunk in (1, 2, 3):  # a segment needs at least 4 bytes
            chunk -= 4
        segments.append(b"\xff\xfe" + (chunk - 2).to_bytes(2, "big") + b"\x00" * (chunk - 4))
        pad -= chunk
    out = body[:2] + b"".join(segments) + body[2:]
    assert len(out) == size, (len(out), size)
    return out, width, height
