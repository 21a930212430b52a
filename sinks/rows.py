"""Kafka record -> ClickHouse row: which table each topic feeds, the columns, and the Arrow schema.

Records are read with the strict contract (:func:`citystream.schemas.strict.validate_json`: no type
coercion, no repeated keys, bounded integers, per-metric ranges), the same rules the bridge enforces,
so a record that reached Kafka without the bridge is held to them too. A record that fails its
contract (bad JSON, schema mismatch, a value that does not fit its column) raises
:class:`PoisonRecord`; the sink turns it into a DeadLetter (stage ``sink``) for the DLQ.
``ingested_at`` is not set here: the sink stamps it on the whole batch when it builds the Arrow table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from citystream.schemas import migrate as schema
from citystream.schemas import topics
from citystream.schemas.events import (
    Alert,
    DeadLetter,
    DeviceStatus,
    Event,
    FaceMatch,
    FrameMeta,
    PlateRead,
    SensorReading,
    error_summary,
)
from citystream.schemas.fast import READING_FORM
from citystream.schemas.ranges import RANGES
from citystream.schemas.strict import validate_json
from citystream.sinks.fast import BulkJson, Values, metric_range_sql, reading_values

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
TS = pa.timestamp("ms", tz="UTC")
LC = pa.string()

Row = dict[str, Any]

COMMON: list[tuple[str, pa.DataType]] = [
    ("event_id", pa.string()), ("schema_version", pa.uint16()), ("tenant", LC), ("gateway_id", LC),
    ("device_id", LC), ("seq", pa.uint64()), ("captured_at", TS), ("district", LC),
]
TRAILER: list[tuple[str, pa.DataType]] = [("kafka_partition", pa.uint16()), ("kafka_offset", pa.uint64())]
BBOX = pa.list_(pa.int32())

SPECIFIC: dict[str, list[tuple[str, pa.DataType]]] = {
    schema.SENSOR_READINGS: [("metric", LC), ("value", pa.float64())],
    schema.PLATE_READS: [("source_event_id", pa.string()), ("plate_pseudonym", pa.string()),
                         ("confidence", pa.float32()), ("bbox", BBOX),
                         ("watchlist_hit", pa.bool_())],
    schema.FACE_MATCHES: [("source_event_id", pa.string()), ("watchlist_entry_id", pa.string()),
                          ("distance", pa.float32()), ("bbox", BBOX)],
    schema.ALERTS: [("alert_type", LC), ("severity", LC), ("state", LC), ("message", pa.string()),
                    ("value", pa.float64()), ("threshold", pa.float64()), ("source_event_id", pa.string())],
    schema.DEVICE_STATUS: [("state", LC), ("queue_depth", pa.uint32()), ("fps", pa.float32()), ("dropped", pa.uint64()),
                           ("spool_bytes", pa.uint64()), ("gap_from_seq", pa.uint64()), ("gap_to_seq", pa.uint64()),
                           ("detail", pa.string())],
    schema.FRAME_INDEX: [("width", pa.uint16()), ("height", pa.uint16()), ("jpeg_bytes", pa.uint32()),
                         ("motion_score", pa.float32()), ("keyframe", pa.bool_()), ("detections", pa.uint16()),
                         ("object_ref", pa.string()), ("sha256", pa.string())],
    schema.DEAD_LETTERS: [("stage", LC), ("reason", LC), ("detail", pa.string()), ("original_topic", LC),
                          ("original_bytes", pa.binary()), ("headers", pa.map_(pa.string(), pa.string())),
                          ("first_seen_at", TS)],
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table's insert block (ingested_at included)."""
    return pa.schema([*COMMON, *SPECIFIC[table], ("ingested_at", TS), *TRAILER])


# One contract per table. A table's columns are its contract's fields (``kind`` aside), what the sink adds
# for provenance, and what it derives; checked here at import and against the migrations by
# tests/schemas/test_drift.py, so a field added to a contract without its column (or the reverse) is named.
TABLE_CONTRACTS: dict[str, type[BaseModel]] = {
    schema.SENSOR_READINGS: SensorReading, schema.PLATE_READS: PlateRead, schema.FACE_MATCHES: FaceMatch,
    schema.ALERTS: Alert, schema.DEVICE_STATUS: DeviceStatus, schema.FRAME_INDEX: FrameMeta,
    schema.DEAD_LETTERS: DeadLetter,
}
PROVENANCE = ("ingested_at", "kafka_partition", "kafka_offset")
DERIVED: dict[str, tuple[str, ...]] = {
    schema.FRAME_INDEX: ("detections", "object_ref", "sha256"),  # the claim-check archiver's
    schema.DEAD_LETTERS: ("gateway_id", "device_id", "seq", "captured_at", "district"),  # common columns, empty
}


def contract_drift(table: str, model: type[BaseModel]) -> list[str]:
    """How a table's Arrow columns and its contract's fields disagree, one line per field (empty: they agree)."""
    fields = [name for name in model.model_fields if name != "kind"]
    expected = [*fields, *DERIVED.get(table, ())]
    columns = [name for name in arrow_schema(table).names if name not in PROVENANCE]
    return ([f"{table}.{name}: contract field {model.__name__}.{name} has no column" for name in expected
             if name not in columns] +
            [f"{table}.{name}: column not in contract {model.__name__}" for name in columns if name not in expected])


_DRIFT = [line for table, model in TABLE_CONTRACTS.items() for line in contract_drift(table, model)]
if _DRIFT:  # pragma: no cover - caught by the unit tests
    raise RuntimeError("sink columns and contracts disagree: " + "; ".join(_DRIFT))


class PoisonRecord(Exception):
    """A record that can never be stored as it is; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def ms(value: datetime) -> int:
    """Milliseconds since the epoch of a tz-aware datetime."""
    return (value - EPOCH) // MS


def _fits(name: str, value: int | None, bits: int) -> int | None:
    if value is not None and not 0 <= value < (1 << bits):
        raise PoisonRecord("value_out_of_range", f"{name}: {value} does not fit UInt{bits}")
    return value


def _common(ev: Event) -> Row:
    return {"event_id": ev.event_id, "schema_version": _fits("schema_version", ev.schema_version, 16),
            "tenant": ev.tenant, "gateway_id": ev.gateway_id, "device_id": ev.device_id,
            "seq": _fits("seq", ev.seq, 64), "captured_at": ms(ev.captured_at), "district": ev.district}


def _reading(ev: SensorReading) -> Row:
    return {**_common(ev), "metric": ev.metric.value, "value": ev.value}


def _plate(ev: PlateRead) -> Row:
    return {**_common(ev), "source_event_id": ev.source_event_id, "plate_pseudonym": ev.plate_pseudonym,
            "confidence": ev.confidence,
            "bbox": list(ev.bbox), "watchlist_hit": ev.watchlist_hit}


def _face(ev: FaceMatch) -> Row:
    return {**_common(ev), "source_event_id": ev.source_event_id, "watchlist_entry_id": ev.watchlist_entry_id,
            "distance": ev.distance, "bbox": list(ev.bbox)}


def _alert(ev: Alert) -> Row:
    return {**_common(ev), "alert_type": ev.alert_type, "severity": ev.severity.value, "state": ev.state,
            "message": ev.message, "value": ev.value, "threshold": ev.threshold, "source_event_id": ev.source_event_id}


def _status(ev: DeviceStatus) -> Row:
    return {**_common(ev), "state": ev.state.value, "queue_depth": _fits("queue_depth", ev.queue_depth, 32),
            "fps": ev.fps, "dropped": _fits("dropped", ev.dropped, 64),
            "spool_bytes": _fits("spool_bytes", ev.spool_bytes, 64),
            "gap_from_seq": _fits("gap_from_seq", ev.gap_from_seq, 64),
            "gap_to_seq": _fits("gap_to_seq", ev.gap_to_seq, 64), "detail": ev.detail}


def _dead_letter(ev: DeadLetter) -> Row:
    return {"event_id": ev.event_id, "schema_version": ev.schema_version, "tenant": ev.tenant, "gateway_id": "",
            "device_id": "", "seq": 0, "captured_at": ms(ev.first_seen_at), "district": "", "stage": ev.stage,
            "reason": ev.reason, "detail": ev.detail, "original_topic": ev.original_topic,
            "original_bytes": ev.original_bytes, "headers": list(ev.headers.items()),
            "first_seen_at": ms(ev.first_seen_at)}


@dataclass(frozen=True)
class Route:
    """Which table a topic feeds and how a record becomes a row.

    ``fast`` (optional) maps a record it can prove valid straight to the row's values in column order
    (without the Kafka trailer) and returns None for anything else, which then takes :func:`to_row`.
    ``bulk`` (optional) lets the store check and parse whole blocks of the route's canonical JSON
    (:class:`~citystream.sinks.fast.BulkJson`); records it does not pass take :func:`to_row`.
    """

    table: str
    model: type[BaseModel]
    to_row: Callable[[Any], Row]
    fast: Callable[[bytes], Values | None] | None = None
    legacy: Callable[[bytes], bytes] | None = None
    bulk: BulkJson | None = None


_PLATE_TEXT = (b'"registration"', b'"province"')


def _plate_without_text(value: bytes) -> bytes:
    """A PlateRead written before plate text left the contract, without that text (else unchanged).

    Records still in ``plate.reads`` at an upgrade would otherwise be dead letters keeping the plate
    text for the DLQ's retention. Read with orjson (a repeated key keeps its last value): these records
    come from the worker, not from devices.
    """
    if not any(marker in value for marker in _PLATE_TEXT):
        return value
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if not isinstance(doc, dict):
        return value
    doc.pop("registration", None)
    doc.pop("province", None)
    return orjson.dumps(doc)


def _reading_bulk() -> BulkJson | None:
    bulk = BulkJson(SensorReading, arrow_schema(schema.SENSOR_READINGS), READING_FORM)
    bulk.add_check(metric_range_sql({metric: (b.low, b.high) for metric, b in RANGES.items()}))
    return bulk if bulk.pattern is not None else None


ROUTES: dict[str, Route] = {
    topics.RAW_READINGS: Route(schema.SENSOR_READINGS, SensorReading, _reading, reading_values, bulk=_reading_bulk()),
    topics.DEVICE_STATUS: Route(schema.DEVICE_STATUS, DeviceStatus, _status),
    topics.PLATE_READS: Route(schema.PLATE_READS, PlateRead, _plate, legacy=_plate_without_text),
    topics.FACE_MATCHES: Route(schema.FACE_MATCHES, FaceMatch, _face),
    topics.ALERTS: Route(schema.ALERTS, Alert, _alert),
    topics.DLQ: Route(schema.DEAD_LETTERS, DeadLetter, _dead_letter),
}


# Errors that only say "a number beyond its bound" (a column's width, a metric's range): value_out_of_range.
_BEYOND_BOUNDS = frozenset({"less_than_equal", "out_of_range"})


def to_row(route: Route, value: bytes | None) -> Row:
    """Validate one record against its contract and map it to a row; raises PoisonRecord."""
    if value is None:
        raise PoisonRecord("empty_record", "record has no value")
    if route.legacy is not None:
        value = route.legacy(value)
    try:
        event = validate_json(route.model, value)
    except ValidationError as exc:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            raise PoisonRecord("not_json", error_summary(exc)) from exc
        reason = "value_out_of_range" if {e["type"] for e in exc.errors()} <= _BEYOND_BOUNDS else "schema_mismatch"
        raise PoisonRecord(reason, error_summary(exc)) from exc
    except OverflowError as exc:  # a validator's arithmetic (e.g. UTC conversion of year 1 +01:00) is not wrapped
        raise PoisonRecord("schema_mismatch", f"value out of range: {exc}") from exc
    return route.to_row(event)
