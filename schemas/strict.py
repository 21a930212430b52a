"""Strict reading of input: the exported JSON Schemas, with no coercion, no duplicate keys.

Pydantic's default (lax) mode accepts more than the exported JSON Schemas say: ``true`` or ``"220.1"``
for a number, an epoch number for a date-time; its JSON parser, like orjson, keeps the last of two
equal keys. Input from devices is read here instead:

- :func:`validate_json` — a JSON body against a contract in pydantic's strict mode, after a
  duplicate-key check, plus the contract rules a model does not hold itself (a reading's per-metric
  range, :mod:`citystream.schemas.ranges`, exported into its JSON Schema); one ``ValidationError``
  for every problem, with error types ``duplicate_key`` and ``out_of_range`` for those two.
- :func:`frame_meta_strict` — FrameMeta from MQTT user properties / Kafka headers. Each value must be
  exactly what :func:`citystream.schemas.wire.frame_meta_pairs` writes: text fields as they are,
  other fields as their JSON token (``12``, ``0.25``, ``true``); a repeated or unknown name is an error.

The fast path (:mod:`citystream.schemas.fast`) implements the same rules for readings and is
equivalence-tested against :func:`validate_json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from citystream.schemas.events import FrameMeta, SensorReading
from citystream.schemas.ranges import out_of_range

M = TypeVar("M", bound=BaseModel)


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


def duplicate_key(raw: bytes | str) -> str | None:
    """The first key that an object of this JSON repeats, or None (also for text that is not JSON)."""
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        return dup.key
    except (ValueError, RecursionError):  # not JSON (or not UTF-8): the contract check says why
        return None
    return None


def _error(model: type[BaseModel], kind: str, message: str, loc: tuple[str | int, ...], value: object,
           **context: object) -> ValidationError:
    detail: InitErrorDetails = {"type": PydanticCustomError(kind, message, context), "loc": loc, "input": value}
    return ValidationError.from_exception_data(model.__name__, [detail])


def validate_json(model: type[M], raw: bytes | str) -> M:
    """``raw`` as ``model`` under the exported JSON Schema: strict types, no duplicate keys; raises ValidationError."""
    key = duplicate_key(raw)
    if key is not None:
        raise _error(model, "duplicate_key", "duplicate key '{key}' in a JSON object", (key,), raw, key=key)
    event = model.model_validate_json(raw, strict=True)
    if isinstance(event, SensorReading):
        problem = out_of_range(event.metric, event.value)
        if problem is not None:
            raise _error(model, "out_of_range", "value out of the metric's range: {problem}", ("value",), event.value,
                         problem=problem)
    return event


_TEXT_FIELDS = frozenset(name for name, spec in FrameMeta.model_json_schema()["properties"].items()
                         if spec.get("type") == "string")


def frame_meta_strict(pairs: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes]) -> FrameMeta:
    """FrameMeta from string pairs as ``frame_meta_pairs`` writes them; raises ValidationError."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    doc: dict[str, Any] = {}
    for key, raw in items:
        value = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if key not in FrameMeta.model_fields:
            raise _error(FrameMeta, "unknown_property", "unknown FrameMeta property '{key}'", (key,), value, key=key)
        if key in doc:
            raise _error(FrameMeta, "duplicate_property", "FrameMeta property '{key}' given more than once", (key,),
                         value, key=key)
        doc[key] = value if key in _TEXT_FIELDS else _token(value)
    return FrameMeta.model_validate_json(orjson.dumps(doc), strict=True)


def _token(value: str) -> object:
    """A JSON scalar token (number, true, false) as its value; anything else stays text (strict mode refuses it)."""
    if value != value.strip():
        return value
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    return parsed if isinstance(parsed, (int, float)) else value
