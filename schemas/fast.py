"""Fast check of the ``SensorReading`` contract for hot paths: orjson plus explicit checks.

:func:`fast_reading` proves a JSON body a valid :class:`~citystream.schemas.events.SensorReading`
with cheap checks, each as strict as or stricter than the contract, and returns its field values
(:data:`Reading`, named by :data:`FIELDS`).
Whatever it cannot prove valid (bad JSON, unknown or missing fields, an unusual timestamp form, a
repeated key, a value out of its metric's range…) returns ``None``, meaning "not decided here": the
caller validates with pydantic (:func:`citystream.schemas.strict.validate_json`, strict mode plus a
duplicate-key check), which decides the poison / DLQ reason, so reasons never depend on the path.
Guarantee: accepted here ⇒ ``validate_json(SensorReading, body)`` accepts it, with the same values.
Callers add their own checks (the bridge: topic and event id; the sink: column ranges).

Duplicate keys cost no second parse: orjson keeps the last of two equal keys, so a body with a
repeated key has more JSON strings than the parsed object. Every string of an accepted body is a key
or a value without a ``"`` in it (checked), so it has exactly 2 quote characters per string; the
body's quote count then proves that no key was repeated (one ``bytes.count``).

The checks are written for the contract as it is (:data:`CONTRACT`: each field's type, default and
constraints, plus the validators) and the range rule that ``validate_json`` adds
(``schemas.ranges``). If ``SensorReading`` differs from it, :data:`ENABLED` is False and
:func:`fast_reading` always returns ``None`` (everything takes the pydantic path) until this module
is updated; a unit test fails meanwhile.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from citystream.schemas.events import INT64_MAX, NAME, TENANT, Metric, SensorReading
from citystream.schemas.ranges import RANGES

REQUIRED = PydanticUndefined
_DISTRICT_MAX = 128
# name -> (type, default, constraints) of the SensorReading fields the checks below implement.
CONTRACT: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "event_id": (str, REQUIRED, {"pattern": r"^[0-9a-f-]{36}$"}),
    "schema_version": (int, 1, {"ge": 1, "le": 65535}),
    "tenant": (str, REQUIRED, {"pattern": TENANT}),
    "gateway_id": (str, REQUIRED, {"pattern": NAME}),
    "device_id": (str, REQUIRED, {"pattern": NAME}),
    "seq": (int, REQUIRED, {"ge": 0, "le": INT64_MAX}),
    "captured_at": (datetime, REQUIRED, {"before": "_rfc3339", "after": "_utc_ms"}),
    "district": (str, "", {"max_length": _DISTRICT_MAX}),
    "kind": (Literal["sensor_reading"], "sensor_reading", {}),
    "metric": (Metric, REQUIRED, {}),
    "value": (float, REQUIRED, {}),
}
# Field validators (name -> fields) and model validators (name -> mode).
VALIDATORS: tuple[dict[str, tuple[str, ...]], dict[str, str]] = ({"_finite": ("value",)}, {})


# A valid reading's field values in contract order, without ``kind`` (always ``sensor_reading``).
# Two spellings differ from the model: ``captured_at`` is the epoch milliseconds of the contract's UTC
# millisecond timestamp, and ``value`` is the JSON number as parsed (int or finite float; the contract
# holds ``float(value)``). A plain tuple: the hot paths unpack or index it (no per-record class instance).
FIELDS = ("event_id", "schema_version", "tenant", "gateway_id", "device_id", "seq", "captured_at", "district",
          "metric", "value")
Reading = tuple[str, int, str, str, str, int, int, str, str, int | float]


def _constraints(info: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in info.metadata:
        if isinstance(meta, AfterValidator):
            out["after"] = getattr(meta.func, "__name__", repr(meta.func))
        elif isinstance(meta, BeforeValidator):
            out["before"] = getattr(meta.func, "__name__", repr(meta.func))
        elif dataclasses.is_dataclass(meta):
            out.update({f.name: getattr(meta, f.name) for f in dataclasses.fields(meta)})
        else:
            out.update(getattr(meta, "__dict__", None) or {repr(meta): True})
    return out


def describe(model: type[BaseModel]) -> tuple[dict[str, tuple[Any, Any, dict[str, Any]]], tuple[Any, ...]]:
    """A model's fields as ``CONTRACT`` spells them, and its validators as ``VALIDATORS`` does."""
    fields = {name: (info.annotation, info.default, _constraints(info)) for name, info in model.model_fields.items()}
    decorators = model.__pydantic_decorators__
    validators = ({name: tuple(d.info.fields) for name, d in decorators.field_validators.items()},
                  {name: d.info.mode for name, d in decorators.model_validators.items()})
    return fields, validators


def matches_contract(model: type[BaseModel]) -> bool:
    """True when ``model`` is exactly the contract the fast checks were written for."""
    return model.model_config.get("extra") == "forbid" and describe(model) == (CONTRACT, VALIDATORS)


ENABLED = matches_contract(SensorReading)

_REQUIRED = frozenset(name for name, (_, default, _) in CONTRACT.items() if default is REQUIRED)
_ALLOWED = frozenset(CONTRACT)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EVENT_ID_CHARS = "0123456789abcdef-"  # event_id: ^[0-9a-f-]{36}$
_METRICS = frozenset(m.value for m in Metric)
# The plain RFC 3339 form only (what gateways send); other forms pydantic accepts take the full path.
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_CACHE_MAX = 8192
_ABSENT: Any = object()
_BOUNDS = {metric: (bounds.low, bounds.high) for metric, bounds in RANGES.items()}
# Quote characters in a body of n members without a repeated key: 2 per key, 2 per string value; the numbers
# are seq, value and (index True) schema_version.
_QUOTES = [(4 * n - 4, 4 * n - 6) for n in range(len(CONTRACT) + 1)]


class _Checked:
    """Bounded memo of strings already proven to match a pattern (tenants, gateways and devices repeat)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern.removeprefix("^").removesuffix("$"))  # used with fullmatch
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


_TENANTS = _Checked(TENANT)
_NAMES = _Checked(NAME)
_STAMPS: dict[str, int] = {}


def stamp_ms(value: object) -> int | None:
    """Epoch ms of a plain RFC 3339 timestamp as the contract stores it (UTC, cut to ms), else None."""
    if type(value) is not str:
        return None
    cached = _STAMPS.get(value)
    if cached is not None:
        return cached
    if _STAMP.fullmatch(value) is None:
        return None
    try:
        at = datetime.fromisoformat(value)
        if not 1 < at.year < 9999:  # only there can the contract's UTC conversion overflow (offsets < 24 h)
            at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    result = (at - _EPOCH) // _MS  # offsets are whole minutes: flooring the instant = the contract's cut to ms
    if len(_STAMPS) >= _CACHE_MAX:
        _STAMPS.clear()
    _STAMPS[value] = result
    return result


def fast_reading(raw: bytes) -> Reading | None:
    """The field values of a surely valid ``SensorReading`` body, or None: validate with pydantic."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not ENABLED or not _REQUIRED <= doc.keys() <= _ALLOWED:
        return None
    try:
        return _checked(raw, doc)
    except TypeError:  # an unhashable value (list, object) where a string belongs
        return None


def _checked(raw: bytes, doc: dict[str, Any]) -> Reading | None:
    if doc.get("kind", "sensor_reading") != "sensor_reading":
        return None
    event_id = doc["event_id"]
    if type(event_id) is not str or len(event_id) != 36 or event_id.strip(_EVENT_ID_CHARS):
        return None
    version = doc.get("schema_version", _ABSENT)
    version_given = version is not _ABSENT
    if not version_given:
        version = 1
    elif type(version) is not int or not 1 <= version <= 65535:
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
    if type(seq) is not int or not 0 <= seq <= INT64_MAX:
        return None
    stamp = doc["captured_at"]
    captured = _STAMPS.get(stamp) if type(stamp) is str else None
    if captured is None:
        captured = stamp_ms(stamp)
        if captured is None:
            return None
    district = doc.get("district", "")
    if type(district) is not str or len(district) > _DISTRICT_MAX:
        return None
    metric = doc["metric"]
    if type(metric) is not str or metric not in _METRICS:
        return None
    number = doc["value"]
    if type(number) is float:
        if not math.isfinite(number):
            return None
    elif type(number) is not int:
        return None
    low, high = _BOUNDS[metric]
    if not low <= number <= high:
        return None
    # Members: seq, value and schema_version (when present) are numbers, every other one a string without '"'.
    if raw.count(b'"') != _QUOTES[len(doc)][version_given] or '"' in district:
        return None  # a repeated key (or a quote escaped in the district): the full path decides
    return event_id, version, tenant, gateway, device, seq, captured, district, metric, number


# ---- the canonical JSON form, as one regular expression (RE2 syntax), for engines that check in bulk --------
# A body in this form is compact JSON with the contract's fields in model order (optional ones may be left out),
# no escapes, no unknown or repeated key, and every value of its field's JSON type and character class: what
# the stages write (``schemas.wire.to_json``). It is derived from the model; a field of a kind not handled here
# makes :func:`canonical_form` return None and everything takes the per-record path (a unit test fails
# meanwhile). The pattern has no counted repetition (RE2 then keeps its fast DFA): lengths and numeric bounds
# are in :func:`field_limits`; calendar dates and the metric's range are the caller's.
_CLASS_PATTERN = re.compile(r"\^(\[[^\]\"\\]+\])\{(\d+)(?:,(\d+))?\}\$")
_NAME_SAFE = re.compile(r"[a-z0-9_]+")
JSON_TEXT = r'[^"\\\x00-\x1f]*'
JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
JSON_STAMP = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
              r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
KNOWN_VALIDATORS = {"_finite": "finite"}  # field validators whose rule the caller checks (JSON numbers are finite)
Limit = tuple[str, int, int]
"""(``length`` in characters | ``value``, lowest, highest), both inclusive."""


def _value_pattern(annotation: Any, constraints: dict[str, Any]) -> tuple[str, Limit | None] | None:
    """The pattern of one field's JSON value and its limit, or None for a kind of field not handled."""
    if annotation is str and set(constraints) == {"pattern"}:
        match = _CLASS_PATTERN.fullmatch(constraints["pattern"])
        if match is None:
            return None
        low, high = int(match.group(2)), int(match.group(3) or match.group(2))
        return f'"{match.group(1)}*"', ("length", low, high)
    if annotation is str and set(constraints) <= {"max_length"}:
        return f'"{JSON_TEXT}"', ("length", 0, constraints.get("max_length", 2**31))
    if annotation is int and set(constraints) == {"ge", "le"} and constraints["ge"] >= 0:
        return "(?:0|[1-9][0-9]*)", ("value", constraints["ge"], constraints["le"])
    if annotation is float and not constraints:
        return JSON_NUMBER, None
    if annotation is datetime and constraints == {"before": "_rfc3339", "after": "_utc_ms"}:
        return f'"{JSON_STAMP}"', None
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum) and not constraints:
        values = [m.value for m in annotation]
        return ('"(?:' + "|".join(values) + ')"', None) if all(_NAME_SAFE.fullmatch(v) for v in values) else None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal and len(args) == 1 and _NAME_SAFE.fullmatch(str(args[0])):
        return f'"{args[0]}"', None
    return None


def canonical_form(model: type[BaseModel]) -> tuple[str, dict[str, Limit]] | None:
    """An RE2 pattern of the canonical JSON form of ``model`` and its fields' limits, or None if not derivable."""
    fields, (field_validators, model_validators) = describe(model)
    if model.model_config.get("extra") != "forbid" or model_validators:
        return None
    if not set(field_validators) <= set(KNOWN_VALIDATORS):
        return None
    parts, limits = [], {}
    for index, (name, (annotation, default, constraints)) in enumerate(fields.items()):
        found = _value_pattern(annotation, constraints)
        if found is None or not _NAME_SAFE.fullmatch(name):
            return None
        value, limit = found
        if limit is not None:
            limits[name] = limit
        member = f'{"," if index else ""}"{name}":{value}'
        if default is REQUIRED:
            parts.append(member)
        elif index:
            parts.append(f"(?:{member})?")
        else:
            return None  # an optional first member would need its comma on the next one
    return "^\\{" + "".join(parts) + "\\}$", limits


READING_FORM = canonical_form(SensorReading) if ENABLED else None
