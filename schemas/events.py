"""Event contracts: pydantic models are the source of truth (JSON Schemas are exported from them).

Identity: every event has a deterministic ``event_id`` = UUIDv5 over ``gateway_id/stream/seq``
(``seq`` increases monotonically per gateway and stream), so a retry carries the same id and
storage removes the copy. Derived events (a plate read from a frame) take UUIDv5 over the source
event id and an index. Time: ``captured_at`` is UTC, tz-aware, millisecond precision.
Units are part of field or metric names (``pm25_ug_m3`` is µg/m³, ``water_level_cm`` is cm).
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from citystream.schemas.ranges import RANGES, json_schema_rules

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1
"""Largest counter a contract carries (seq, byte and drop counts): fits every signed 64-bit consumer and
ClickHouse's UInt64 columns, so ``seq - 1`` in a gap record fits too."""
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
ID_NAMESPACE = uuid.UUID("6f1d3a7e-3c8b-5e43-9a55-2a1c0c1f7e10")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes
NAME = r"^[A-Za-z0-9_.-]{1,64}$"
TENANT = r"^[a-z0-9-]{1,64}$"


# RFC 3339 date-time (the JSON Schema ``date-time`` format), ASCII digits only.
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
                     r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")


_DATETIME = TypeAdapter(datetime)


def _rfc3339(value: object) -> object:
    """A datetime, or RFC 3339 text parsed by pydantic: no epoch numbers, no date-only or space-separated forms."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
        raise PydanticCustomError("datetime_format", "timestamp must be an RFC 3339 date-time string like "
                                  "2026-11-25T15:03:48.014Z")
    try:
        return _DATETIME.validate_python(value)
    except ValidationError as exc:
        raise PydanticCustomError("datetime_parsing", "Input should be a valid datetime: {error}",
                                  {"error": exc.errors()[0]["msg"]}) from None


def _utc_ms(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (UTC)")
    try:
        value = value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:30:00+01:00
        raise ValueError("timestamp out of range") from exc
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcMs = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_utc_ms)]
Pixel = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]  # ClickHouse Array(Int32)


class Stream(StrEnum):
    """What a gateway sends; part of the MQTT topic and of the event id."""

    READING = "reading"
    FRAME = "frame"
    STATUS = "status"


class Metric(StrEnum):
    """Sensor quantities; the unit is in the name."""

    PM25 = "pm25_ug_m3"
    PM10 = "pm10_ug_m3"
    TEMPERATURE = "temperature_c"
    HUMIDITY = "humidity_pct"
    WATER_LEVEL = "water_level_cm"
    NOISE = "noise_db_a"
    RAIN = "rain_mm_h"


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(ID_NAMESPACE, name))`` without building a UUID object (the bridge checks every id)."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make_event_id(gateway_id: str, stream: str, seq: int) -> str:
    """Deterministic id of the ``seq``-th event of one gateway stream (every stage derives ids here)."""
    return uuid5_text(f"{gateway_id}/{stream}/{seq}")


def derived_event_id(source_event_id: str, kind: str, index: int) -> str:
    """Deterministic id of the ``index``-th event of ``kind`` derived from one source event."""
    return uuid5_text(f"{source_event_id}/{kind}/{index}")


class Contract(BaseModel):
    """Base of all contracts: immutable, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(Contract):
    """Fields every event carries."""

    event_id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=65535)
    tenant: str = Field(pattern=TENANT, description="municipality, e.g. nakhon-rangsit")
    gateway_id: str = Field(pattern=NAME)
    device_id: str = Field(pattern=NAME)
    seq: int = Field(ge=0, le=INT64_MAX, description="per-gateway, per-stream monotonically increasing counter")
    captured_at: UtcMs = Field(description="event time at the device, UTC, ms")
    district: str = Field("", max_length=128, description="where the device stands (Thai or English)")


class SensorReading(Event):
    """One measurement of one quantity by one sensor.

    ``value`` must lie in its metric's range (``schemas.ranges``): part of the exported JSON Schema and
    enforced by the strict reader (``schemas.strict.validate_json``) at the bridge and the sink, not by
    this model, so code may still build and test an implausible reading.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"allOf": json_schema_rules()})

    kind: Literal["sensor_reading"] = "sensor_reading"
    metric: Metric
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number (no NaN/Infinity)")
        return v


if set(RANGES) != {m.value for m in Metric}:  # pragma: no cover - caught by the unit tests
    raise RuntimeError("schemas.ranges.RANGES must name every Metric exactly once")


class FrameMeta(Event):
    """Metadata of one camera frame; the JPEG travels as the message body (MQTT user properties / Kafka headers)."""

    kind: Literal["frame_meta"] = "frame_meta"
    width: int = Field(ge=1, le=8192)
    height: int = Field(ge=1, le=8192)
    jpeg_bytes: int = Field(ge=1, le=UINT32_MAX)
    motion_score: float = Field(ge=0.0, le=1.0, description="fraction of the frame that changed")
    keyframe: bool = False


class PlateRead(Event):
    """A licence plate read on one frame; ``device_id`` is the camera.

    No plate text: the registration and province stay in the worker, only their keyed pseudonym
    leaves it (PDPA minimisation; see docs/PRIVACY.md for the key and its rotation).
    """

    kind: Literal["plate_read"] = "plate_read"
    source_event_id: str
    plate_pseudonym: str = Field(pattern=r"^[0-9a-f]{64}$",
                                 description="HMAC-SHA256 of the normalised registration and province, key per tenant")
    confidence: float = Field(ge=0.0, le=1.0)
    bbox: tuple[Pixel, Pixel, Pixel, Pixel] = Field(description="x, y, w, h in frame pixels")
    watchlist_hit: bool = False


class FaceMatch(Event):
    """A face on a frame that matched a watchlist entry (non-matches are never emitted)."""

    kind: Literal["face_match"] = "face_match"
    source_event_id: str
    watchlist_entry_id: str
    distance: float = Field(ge=0.0, le=100.0, description="euclidean distance of 128-d embeddings")
    bbox: tuple[Pixel, Pixel, Pixel, Pixel]


class Severity(StrEnum):
    """Alert severity."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Event):
    """Something a control room should see; raised once per episode (hysteresis) and cleared."""

    kind: Literal["alert"] = "alert"
    alert_type: str = Field(pattern=r"^[a-z0-9_]{1,64}$", description="pm25_band, water_rise, plate_watchlist, ...")
    severity: Severity
    state: Literal["raised", "cleared"] = "raised"
    message: str = Field(max_length=1024)
    value: float | None = Field(None, allow_inf_nan=False)
    threshold: float | None = Field(None, allow_inf_nan=False)
    source_event_id: str | None = None


class DeviceState(StrEnum):
    """What a status event reports."""

    ONLINE = "online"
    OFFLINE = "offline"
    HEARTBEAT = "heartbeat"
    GAP = "gap"
    CAMERA_ERROR = "camera_error"


class DeviceStatus(Event):
    """Gateway / device health: heartbeat, last-will (offline), sequence gaps seen by the bridge."""

    kind: Literal["device_status"] = "device_status"
    state: DeviceState
    queue_depth: int = Field(0, ge=0, le=UINT32_MAX)
    fps: float = Field(0.0, ge=0.0, le=1000.0)
    dropped: int = Field(0, ge=0, le=INT64_MAX)
    spool_bytes: int = Field(0, ge=0, le=INT64_MAX)
    gap_from_seq: int | None = Field(None, ge=0, le=INT64_MAX)
    gap_to_seq: int | None = Field(None, ge=0, le=INT64_MAX)
    detail: str = Field("", max_length=1024)


class DeadLetter(Contract):
    """Input a stage could not accept, kept with its original bytes and the reason."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    kind: Literal["dead_letter"] = "dead_letter"
    event_id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=65535)
    tenant: str = Field("", description="when the topic revealed it, else empty")
    stage: str = Field(pattern=r"^[a-z_]+$", description="bridge, worker, sink")
    reason: str = Field(pattern=r"^[a-z_]+$", description="machine-readable reason, e.g. not_json")
    detail: str = Field("", max_length=4096, description="field path and message")
    original_topic: str
    original_bytes: bytes = Field(description="the input as received (base64 in JSON)")
    headers: dict[str, str] = Field(default_factory=dict)
    first_seen_at: UtcMs

    @classmethod
    def build(cls, *, stage: str, reason: str, detail: str, topic: str, payload: bytes,
              headers: dict[str, str] | None = None, tenant: str = "",
              now: datetime | None = None) -> DeadLetter:
        """A dead letter whose id is deterministic over stage, topic, reason and bytes."""
        digest = hashlib.sha256(payload).hexdigest()
        event_id = uuid5_text(f"{stage}/{topic}/{reason}/{digest}")
        return cls(event_id=event_id, tenant=tenant, stage=stage, reason=reason,
                   detail=detail[:4096], original_topic=topic, original_bytes=payload, headers=headers or {},
                   first_seen_at=now or datetime.now(UTC))


EVENT_MODELS: dict[str, type[Contract]] = {
    "sensor_reading": SensorReading,
    "frame_meta": FrameMeta,
    "plate_read": PlateRead,
    "face_match": FaceMatch,
    "alert": Alert,
    "device_status": DeviceStatus,
    "dead_letter": DeadLetter,
}


def error_summary(exc: Exception) -> str:
    """Field paths and reasons of a validation error as one line."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    if not errors:
        return str(exc)[:500]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors]
    return "; ".join(parts)[:4096]
