"""Fast path for sensor readings: orjson plus explicit checks, straight into column order.

:func:`reading_values` proves a record valid with cheap checks that are each as strict as or stricter
than the :class:`~citystream.schemas.events.SensorReading` contract and the column ranges of
``sensor_readings``; it returns the row's values in column order, exactly as
:func:`citystream.sinks.rows.to_row` would build them. Whatever it cannot prove valid (bad JSON,
unknown or missing fields, an unusual timestamp form, a number orjson widened to float, a value out
of range…) returns ``None`` and the caller takes the full pydantic path, so poison detection and DLQ
reasons are those of the contract. Guarantee: accepted here ⇒ accepted there, with the same row.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from citystream.schemas.events import Metric

Values = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EVENT_ID_CHARS = "0123456789abcdef-"  # event_id: ^[0-9a-f-]{36}$
_TENANT = re.compile(r"[a-z0-9-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# The plain RFC 3339 form only (what the gateways send); other forms pydantic accepts take the full path.
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_METRICS = frozenset(m.value for m in Metric)
_REQUIRED = frozenset({"event_id", "tenant", "gateway_id", "device_id", "seq", "captured_at", "metric", "value"})
_ALLOWED = _REQUIRED | {"schema_version", "district", "kind"}
_CACHE_MAX = 8192
_FLOAT_EXACT = 2**53


class _Checked:
    """Bounded memo of strings already proven to match a pattern (tenants, gateways and devices repeat)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.seen: set[str] = set()

    def ok(self, value: object) -> bool:
        if type(value) is not str:
            return False
        if value in self.seen:
            return True
        if self.pattern.fullmatch(value) is None:
            return False
        if len(self.seen) >= _CACHE_MAX:
            self.seen.clear()
        self.seen.add(value)
        return True


_TENANTS = _Checked(_TENANT)
_NAMES = _Checked(_NAME)
_STAMPS: dict[str, int] = {}


def stamp_ms(value: object) -> int | None:
    """Milliseconds since the epoch of a plain RFC 3339 UTC/offset timestamp, or None if not that form."""
    if type(value) is not str:
        return None
    cached = _STAMPS.get(value)
    if cached is not None:
        return cached
    if _STAMP.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or not 1900 <= parsed.year <= 9000:
        return None
    # Offsets are whole minutes, so flooring the exact instant equals truncating to ms, then converting.
    result = (parsed - _EPOCH) // _MS
    if len(_STAMPS) >= _CACHE_MAX:
        _STAMPS.clear()
    _STAMPS[value] = result
    return result


def reading_values(value: bytes) -> Values | None:
    """A sensor reading's column values (common columns, metric, value), or None: take the full path."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    keys = doc.keys()
    if not _REQUIRED <= keys <= _ALLOWED:
        return None
    try:
        return _reading(doc)
    except TypeError:  # an unhashable value (list, object) where a string belongs
        return None


def _reading(doc: dict[str, Any]) -> Values | None:
    if doc.get("kind", "sensor_reading") != "sensor_reading":
        return None
    event_id = doc["event_id"]
    if type(event_id) is not str or len(event_id) != 36 or event_id.strip(_EVENT_ID_CHARS):
        return None
    version = doc.get("schema_version", 1)
    if type(version) is not int or not 1 <= version < 1 << 16:
        return None
    tenant, gateway, device = doc["tenant"], doc["gateway_id"], doc["device_id"]
    # Memo sets hold only str, so a non-str never hits them and goes through ok()'s type check.
    if tenant not in _TENANTS.seen and not _TENANTS.ok(tenant):
        return None
    if gateway not in _NAMES.seen and not _NAMES.ok(gateway):
        return None
    if device not in _NAMES.seen and not _NAMES.ok(device):
        return None
    seq = doc["seq"]
    if type(seq) is not int or not 0 <= seq < 1 << 64:
        return None
    stamp = doc["captured_at"]
    captured = _STAMPS.get(stamp) if type(stamp) is str else None
    if captured is None:
        captured = stamp_ms(stamp)
        if captured is None:
            return None
    district = doc.get("district", "")
    if type(district) is not str or len(district) > 128:
        return None
    metric = doc["metric"]
    if type(metric) is not str or metric not in _METRICS:
        return None
    number = doc["value"]
    if type(number) is float:
        if not math.isfinite(number):
            return None
    elif type(number) is int and -_FLOAT_EXACT <= number <= _FLOAT_EXACT:
        number = float(number)
    else:
        return None
    return (event_id, version, tenant, gateway, device, seq, captured, district, metric, number)
