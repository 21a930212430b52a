"""Contracts: identity, time, validation and the exported JSON Schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from citystream.schemas import export
from citystream.schemas.events import (
    DeadLetter,
    FrameMeta,
    SensorReading,
    derived_event_id,
    error_summary,
    make_event_id,
)
from citystream.schemas.wire import frame_meta_from_pairs, frame_meta_pairs, to_json

pytestmark = pytest.mark.unit

BKK = timezone(timedelta(hours=7))


def reading(**kw: object) -> SensorReading:
    base: dict[str, object] = dict(event_id=make_event_id("gw-1", "reading", 5), tenant="nakhon-rangsit",
                                   gateway_id="gw-1", device_id="pm-01", seq=5,
                                   captured_at=datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=BKK),
                                   metric="pm25_ug_m3", value=41.5, district="ธัญบุรี")
    base.update(kw)
    return SensorReading.model_validate(base)


def test_event_id_is_deterministic_per_gateway_stream_and_seq() -> None:
    assert make_event_id("gw-1", "reading", 5) == make_event_id("gw-1", "reading", 5)
    ids = {make_event_id(g, s, n) for g in ("gw-1", "gw-2") for s in ("reading", "frame") for n in range(50)}
    assert len(ids) == 200
    assert derived_event_id(make_event_id("gw-1", "frame", 1), "plate", 0) != derived_event_id(
        make_event_id("gw-1", "frame", 1), "plate", 1)


def test_captured_at_is_utc_with_millisecond_precision() -> None:
    r = reading()
    assert r.captured_at == datetime(2026, 1, 5, 1, 0, 0, 123000, tzinfo=UTC)
    assert r.captured_at.utcoffset() == timedelta(0)
    assert b'"captured_at":"2026-01-05T01:00:00.123000Z"' in to_json(r)


def test_naive_timestamp_is_rejected_with_field_path() -> None:
    with pytest.raises(ValidationError) as info:
        reading(captured_at=datetime(2026, 1, 5, 8, 0))
    assert "captured_at" in error_summary(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValidationError) as info:
        reading(value=bad)
    assert error_summary(info.value).startswith("value:")


def test_unknown_fields_and_metrics_are_rejected() -> None:
    with pytest.raises(ValidationError):
        reading(colour="red")
    with pytest.raises(ValidationError) as info:
        reading(metric="pm3_ppm")
    assert "metric" in error_summary(info.value)


def test_json_round_trip() -> None:
    r = reading()
    assert SensorReading.model_validate_json(to_json(r)) == r


def test_frame_meta_travels_as_string_pairs() -> None:
    meta = FrameMeta(event_id=make_event_id("gw-1", "frame", 9), tenant="nakhon-rangsit", gateway_id="gw-1",
                     device_id="cam-03", seq=9, captured_at=datetime.now(UTC), width=1280, height=720,
                     jpeg_bytes=81234, motion_score=0.42, keyframe=False)
    pairs = frame_meta_pairs(meta)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
    assert frame_meta_from_pairs([(k, v.encode()) for k, v in pairs]) == meta
    broken = [(k, "wide" if k == "width" else v) for k, v in pairs]
    with pytest.raises(ValidationError):
        frame_meta_from_pairs(broken)


def test_dead_letter_keeps_original_bytes_and_has_stable_id() -> None:
    payload = b"\xff\x00not json"
    now = datetime(2026, 11, 1, tzinfo=UTC)
    a = DeadLetter.build(stage="bridge", reason="not_json", detail="x", topic="city/a/b/sensor/c/reading",
                         payload=payload, headers={"k": "v"}, now=now)
    b = DeadLetter.build(stage="bridge", reason="not_json", detail="y", topic="city/a/b/sensor/c/reading",
                         payload=payload, now=now)
    assert a.event_id == b.event_id
    doc = orjson.loads(a.model_dump_json())
    assert DeadLetter.model_validate_json(a.model_dump_json()).original_bytes == payload
    assert doc["reason"] == "not_json" and doc["headers"] == {"k": "v"}


def test_exported_json_schemas_match_the_models() -> None:
    files = export.rendered()
    assert set(files) == {p.name for p in export.OUT_DIR.glob("*.json")}, "run python -m citystream.schemas.export"
    for name, data in files.items():
        assert (export.OUT_DIR / name).read_bytes() == data, f"{name} drifted: run python -m citystream.schemas.export"
