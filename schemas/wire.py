"""Wire formats shared by every stage.

- Readings, statuses and derived events travel as the JSON of their contract (UTF-8, orjson).
- A frame travels as raw JPEG bytes; its ``FrameMeta`` fields travel beside it as string pairs:
  MQTT v5 user properties on the broker, Kafka headers in Kafka (same names, same values).
- Every Kafka record is keyed by ``device_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from pydantic import BaseModel

from citystream.schemas.events import FrameMeta


def to_json(event: BaseModel) -> bytes:
    """The wire JSON of a contract."""
    return event.model_dump_json().encode()


def frame_meta_pairs(meta: FrameMeta) -> list[tuple[str, str]]:
    """FrameMeta as (name, value) string pairs for MQTT user properties / Kafka headers."""
    data = meta.model_dump(mode="json")
    return [(k, v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in data.items()]


def frame_meta_from_pairs(pairs: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes]) -> FrameMeta:
    """Rebuild FrameMeta from string pairs (lax parsing of numbers and booleans); raises ValidationError."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    data: dict[str, object] = {}
    for key, raw in items:
        if key not in FrameMeta.model_fields:
            continue
        data[key] = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return FrameMeta.model_validate(data)
