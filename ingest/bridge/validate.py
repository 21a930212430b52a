"""Input validation for the bridge: one MQTT message -> an accepted Kafka record or a DLQ reason.

Pure functions of (topic, payload, user properties, clock): no I/O, so every reason is unit-tested.
The exported JSON Schemas are the contract, read strictly (``schemas.strict``): no type coercion
(``true`` or ``"220.1"`` for a number, an epoch number for a timestamp), no repeated JSON keys,
integers within their columns, each metric within its range (``schemas.ranges``). Readings first take a
fast path (``schemas.fast.fast_reading``, the contract check the sink shares, plus the topic and event
id checks below); it only ever accepts what the strict contract accepts, and anything it does not accept
goes through the full strict validation, which decides the DLQ reason — so reasons and details do not
depend on the path.
Frames: the FrameMeta user properties are read strictly too (each name once, no unknown names, values
as ``frame_meta_pairs`` writes them) and the body must be one complete JPEG by its markers
(``schemas.jpeg.inspect``: nothing after the first EOI, scans complete, header size = FrameMeta size,
no decompression bomb). The bridge does not decode pixels (it must keep up with the broker); corrupt
entropy-coded data is found by the worker's strict decode, which dead-letters it (stage ``worker``).
Accepted readings and statuses keep their original bytes (no re-serialisation); frames keep the
JPEG bytes and their FrameMeta user properties become Kafka headers. Every accepted record also
gets a ``bridge_received_at`` header (UTC ISO 8601, ms) with the time the bridge took it.

Reasons (``REASONS``, the ``reason`` label of ``citystream_bridge_dlq_total``):

- ``unknown_topic``: the topic does not follow the topic map.
- ``oversized``: body plus user properties above ``bridge.max_reading_bytes`` / ``bridge.max_frame_bytes``
  (properties travel on as Kafka headers, inside the topic's record limit).
- ``not_json``: a reading/status body that is not JSON (or not UTF-8).
- ``non_finite``: NaN or +-Infinity where a number belongs.
- ``duplicate_key``: a JSON object names a key twice (reading or status body).
- ``out_of_range``: a reading's value outside its metric's range (``schemas.ranges``).
- ``schema``: JSON that does not fit the contract (missing/extra fields, wrong types — no coercion —,
  integers beyond their bounds, values).
- ``topic_mismatch``: tenant/gateway/device in the topic differ from those in the event.
- ``bad_event_id``: ``event_id`` is not ``make_event_id(gateway, stream, seq)`` (would break dedup).
- ``clock_skew``: ``captured_at`` further than ``bridge.max_clock_skew_s`` from the bridge clock.
- ``not_jpeg``: a frame body without the JPEG start (FF D8) and end (FF D9) markers.
- ``bad_jpeg``: a JPEG whose marker structure is broken or incomplete, or with bytes after its first EOI.
- ``frame_too_large``: a JPEG header declaring far more pixels than its size can hold (decompression bomb).
- ``frame_size_mismatch``: the JPEG header's width/height differ from FrameMeta's.
- ``bad_frame_meta``: FrameMeta user properties missing/invalid/repeated/unknown, or ``jpeg_bytes`` != body size.
- ``bad_properties``: a reading or status whose MQTT user properties (passed on as Kafka headers, e.g.
  for tracing) repeat a name or use the bridge's own ``bridge_received_at``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from citystream.schemas import jpeg
from citystream.schemas.events import DeviceStatus, Event, SensorReading, error_summary, make_event_id
from citystream.schemas.fast import fast_reading
from citystream.schemas.strict import frame_meta_strict, validate_json
from citystream.schemas.topics import KAFKA_TOPIC_OF_STREAM, MqttAddress, parse_mqtt_topic
from citystream.settings.bridge import BridgeSettings

REASONS = ("unknown_topic", "oversized", "not_json", "non_finite", "duplicate_key", "out_of_range", "schema",
           "topic_mismatch", "bad_event_id", "clock_skew", "not_jpeg", "bad_jpeg", "frame_too_large",
           "frame_size_mismatch", "bad_frame_meta", "bad_properties")
RECEIVED_HEADER = "bridge_received_at"
JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
_JSON_MODELS: dict[str, type[SensorReading] | type[DeviceStatus]] = {"reading": SensorReading, "status": DeviceStatus}

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class Accepted:
    """A message fit for Kafka: destination (base topic name), key, headers and sequence identity."""

    stream: str
    kafka_topic: str
    key: str
    headers: Headers
    tenant: str
    gateway: str
    seq: int


@dataclass(slots=True)
class Rejected:
    """A message for the DLQ: machine-readable reason, human detail, and what the topic revealed."""

    reason: str
    detail: str
    tenant: str = ""
    key: str = ""


fast_event_id = make_event_id  # the contract's one id function, under the name the bridge's importers use


def is_jpeg(payload: bytes) -> bool:
    """True when the body starts with SOI (FF D8) and ends with EOI (FF D9)."""
    return len(payload) >= 4 and payload.startswith(JPEG_START) and payload.endswith(JPEG_END)


_REASON_OF_TYPE = {"json_invalid": "not_json", "duplicate_key": "duplicate_key", "out_of_range": "out_of_range"}


def classify(exc: ValidationError, default: str) -> str:
    """The DLQ reason of a pydantic error: not_json, duplicate_key, out_of_range, non_finite or ``default``."""
    errors = exc.errors()
    for e in errors:
        if e["type"] in _REASON_OF_TYPE:
            return _REASON_OF_TYPE[e["type"]]
    for e in errors:
        value = e.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            return "non_finite"
        if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return "non_finite"
        if "finite" in e["msg"]:
            return "non_finite"
    return default


def fast_reading_fields(payload: bytes, addr: MqttAddress) -> tuple[int, float] | None:
    """``(seq, captured_at epoch)`` when the body surely is a valid ``SensorReading`` for ``addr``, else None.

    None means "not decided here" (validate with pydantic), never "invalid": the contract check is
    ``schemas.fast.fast_reading``; the topic and event id checks are those of ``Validator._common``.
    """
    reading = fast_reading(payload)
    if reading is None:
        return None
    event_id, _, tenant, gateway, device, seq, captured_ms, _, _, _ = reading
    if (tenant != addr.tenant or gateway != addr.gateway or device != addr.device
            or event_id != fast_event_id(gateway, "reading", seq)):
        return None
    return seq, captured_ms / 1000  # = the contract's captured_at.timestamp() (both correctly rounded)


def _property_problem(props: Sequence[tuple[str, str]]) -> str:
    """Why these user properties of a reading/status cannot become Kafka headers, or ''."""
    names = [k for k, _ in props]
    if RECEIVED_HEADER in names:
        return f"user property {RECEIVED_HEADER!r} is the bridge's own header"
    if len(set(names)) != len(names):
        return f"user property names repeat: {sorted(k for k in set(names) if names.count(k) > 1)}"[:300]
    return ""


def received_at(now: float) -> str:
    """The ``bridge_received_at`` header value for an epoch time."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Validator:
    """Checks messages against the topic map and the contracts; limits come from ``BridgeSettings``."""

    def __init__(self, settings: BridgeSettings, topic_root: str, clock: Callable[[], float] = time.time) -> None:
        """Validator for one topic root; ``clock`` returns epoch seconds (inject a fake one in tests)."""
        self.settings = settings
        self.root = topic_root
        self.clock = clock
        self._stamp: tuple[int, str] = (-1, "")

    def check(self, topic: str, payload: bytes, props: Sequence[tuple[str, str]] = ()) -> Accepted | Rejected:
        """Validate one MQTT message."""
        addr = parse_mqtt_topic(topic, self.root)
        if addr is None:
            return Rejected("unknown_topic", f"topic does not follow {self.root}/tenant/gateway/family/device/stream")
        limit = self.settings.max_frame_bytes if addr.stream == "frame" else self.settings.max_reading_bytes
        size = len(payload) + (sum(len(k) + len(v) for k, v in props) if props else 0)
        if size > limit:
            return Rejected("oversized", f"{size} bytes (body and user properties) > limit {limit}", addr.tenant,
                            addr.device)
        if addr.stream == "frame":
            return self._frame(addr, payload, props)
        if props:
            problem = _property_problem(props)
            if problem:
                return Rejected("bad_properties", problem, addr.tenant, addr.device)
        if addr.stream == "reading":
            fast = fast_reading_fields(payload, addr)
            if fast is not None:
                now = self.clock()
                if abs(fast[1] - now) <= self.settings.max_clock_skew_s:
                    return Accepted("reading", KAFKA_TOPIC_OF_STREAM["reading"], addr.device,
                                    [*props, (RECEIVED_HEADER, self._received_at(now))], addr.tenant, addr.gateway,
                                    fast[0])
        return self._json(addr, payload, props)

    def _received_at(self, now: float) -> str:
        """``received_at(now)``, formatted once per millisecond."""
        ms = int(now * 1000)
        if ms != self._stamp[0]:
            self._stamp = (ms, received_at(now))
        return self._stamp[1]

    def _json(self, addr: MqttAddress, payload: bytes, props: Sequence[tuple[str, str]]) -> Accepted | Rejected:
        model = _JSON_MODELS[addr.stream]
        try:
            event: Event = validate_json(model, payload)
        except ValidationError as exc:
            return Rejected(classify(exc, "schema"), error_summary(exc), addr.tenant, addr.device)
        # A status names the gateway in its topic; its device_id may be a device of that gateway.
        check_device = addr.stream != "status"
        return self._common(addr, event, props, check_device)

    def _frame(self, addr: MqttAddress, payload: bytes, props: Sequence[tuple[str, str]]) -> Accepted | Rejected:
        if not is_jpeg(payload):
            return Rejected("not_jpeg", f"body of {len(payload)} bytes lacks JPEG SOI/EOI markers",
                            addr.tenant, addr.device)
        try:
            meta = frame_meta_strict(props)
        except ValidationError as exc:
            return Rejected(classify(exc, "bad_frame_meta"), error_summary(exc), addr.tenant, addr.device)
        if meta.jpeg_bytes != len(payload):
            return Rejected("bad_frame_meta", f"jpeg_bytes={meta.jpeg_bytes} but body has {len(payload)} bytes",
                            addr.tenant, addr.device)
        try:
            info = jpeg.inspect(payload)
        except jpeg.JpegRejected as exc:
            return Rejected(exc.reason, exc.detail, addr.tenant, addr.device)
        if (info.width, info.height) != (meta.width, meta.height):
            return Rejected("frame_size_mismatch", f"JPEG header {info.width}x{info.height} but FrameMeta "
                            f"{meta.width}x{meta.height}", addr.tenant, addr.device)
        return self._common(addr, meta, props, True)

    def _common(self, addr: MqttAddress, event: Event, props: Sequence[tuple[str, str]],
                check_device: bool) -> Accepted | Rejected:
        if (event.tenant != addr.tenant or event.gateway_id != addr.gateway
                or (check_device and event.device_id != addr.device)):
            return Rejected("topic_mismatch", f"topic {addr.tenant}/{addr.gateway}/{addr.device} but event "
                            f"{event.tenant}/{event.gateway_id}/{event.device_id}", addr.tenant, addr.device)
        if event.event_id != fast_event_id(event.gateway_id, addr.stream, event.seq):
            return Rejected("bad_event_id", f"event_id {event.event_id} != id of {event.gateway_id}/{addr.stream}/"
                            f"{event.seq}", addr.tenant, addr.device)
        now = self.clock()
        skew = event.captured_at.timestamp() - now
        if abs(skew) > self.settings.max_clock_skew_s:
            return Rejected("clock_skew", f"captured_at {event.captured_at.isoformat()} is {skew:+.0f}s from bridge "
                            "clock", addr.tenant, addr.device)
        headers = [*props, (RECEIVED_HEADER, self._received_at(now))]
        return Accepted(addr.stream, KAFKA_TOPIC_OF_STREAM[addr.stream], event.device_id, headers,
                        addr.tenant, addr.gateway, event.seq)
