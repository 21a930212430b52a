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
    Metric,
    SensorReading,
    derived_event_id,
    error_summary,
    make_event_id,
)
from citystream.schemas.ranges import RANGES, out_of_range
from citystream.schemas.strict import frame_meta_strict, validate_json
from citystream.schemas.wire import frame_meta_from_pairs, frame_meta_pairs, to_json
from citystream.settings.worker import DEFAULT_RANGES

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


# --- strict contracts (issue 15) --------------------------------------------------------------------
def _strict_error(model: type[SensorReading] | type[FrameMeta], raw: bytes) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_json(model, raw)
    return str(caught.value.errors()[0]["type"])


def test_the_strict_reader_refuses_coercion_repeated_keys_and_implausible_values() -> None:
    good = orjson.loads(reading().model_dump_json())
    assert validate_json(SensorReading, orjson.dumps(good)) == reading()
    for change in ({"value": True}, {"value": "41.5"}, {"seq": "5"}, {"seq": 5.0}, {"metric": 1},
                   {"captured_at": 1796667452521}, {"captured_at": "1796667452"}, {"captured_at": "2026-01-05"},
                   {"captured_at": "2026-01-05 08:00:00Z"}, {"seq": 2**63}, {"schema_version": 65_536}):
        assert _strict_error(SensorReading, orjson.dumps({**good, **change})) != "", change
    assert _strict_error(SensorReading, orjson.dumps(good)[:-1] + b',"metric":"noise_db_a"}') == "duplicate_key"
    assert _strict_error(SensorReading, orjson.dumps({**good, "value": 5000})) == "out_of_range"
    assert _strict_error(SensorReading, orjson.dumps({**good, "value": 1.79e308})) == "out_of_range"
    # the lax model (Python code, the worker) still refuses epoch numbers and non-RFC 3339 text for time
    with pytest.raises(ValidationError):
        SensorReading.model_validate_json(orjson.dumps({**good, "captured_at": 1796667452521}))


def test_the_one_range_rule_is_exported_and_matches_the_workers_defaults() -> None:
    assert set(RANGES) == {m.value for m in Metric}
    rules = orjson.loads(export.rendered()["sensor_reading.json"])["allOf"]
    exported = {r["if"]["properties"]["metric"]["const"]: r["then"]["properties"]["value"] for r in rules}
    assert exported == {m: {"minimum": b.low, "maximum": b.high} for m, b in RANGES.items()}
    # the worker's configurable ranges default to the same rule (it reads readings the bridge already checked)
    assert {m: (r.low, r.high) for m, r in DEFAULT_RANGES.items()} == {m: tuple(b) for m, b in RANGES.items()}
    assert out_of_range("pm25_ug_m3", 1000.0) is None and out_of_range("pm25_ug_m3", 1000.1) is not None


def test_frame_meta_properties_are_read_strictly() -> None:
    meta = FrameMeta(event_id=make_event_id("gw-1", "frame", 2), tenant="nakhon-rangsit", gateway_id="gw-1",
                     device_id="cam-1", seq=2, captured_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC), width=640,
                     height=480, jpeg_bytes=81234, motion_score=0.42, keyframe=True)
    pairs = frame_meta_pairs(meta)
    assert frame_meta_strict(pairs) == meta == frame_meta_strict(dict(pairs))
    problems = {"repeated": [*pairs, ("tenant", "other-city")], "same twice": [*pairs, ("width", "640")],
                "unknown": [*pairs, ("colour", "red")]}
    edits = {"width": ["640.0", " 640", "0x280", "true", "6.4e2"], "keyframe": ["1", "True", "yes"],
             "motion_score": ["NaN", "1.5", "true", "'0.4'"], "seq": [str(2**64), "-1"],
             "captured_at": ["1796667452", "2026-01-05"]}
    for name, values in edits.items():
        for value in values:
            problems[f"{name}={value}"] = [(k, value if k == name else v) for k, v in pairs]
    for label, bad in problems.items():
        with pytest.raises(ValidationError):
            frame_meta_strict(bad)
        assert label


def test_event_ids_are_uuid5_over_the_contract_namespace() -> None:
    import uuid

    from citystream.ingest.bridge.validate import fast_event_id
    from citystream.schemas.events import ID_NAMESPACE, derived_event_id, make_event_id, uuid5_text

    for name in ("gw-1/reading/0", "gw-1/reading/18446744073709551615", "สถานี/frame/7", ""):
        assert uuid5_text(name) == str(uuid.uuid5(ID_NAMESPACE, name))
    assert make_event_id("gw-1", "reading", 5) == str(uuid.uuid5(ID_NAMESPACE, "gw-1/reading/5"))
    assert derived_event_id("abc", "plate", 2) == str(uuid.uuid5(ID_NAMESPACE, "abc/plate/2"))
    assert fast_event_id is make_event_id  # the bridge checks ids with the contract's one function


def test_what_the_stages_write_is_in_the_canonical_form_the_store_checks_in_bulk() -> None:
    import re

    from pydantic import field_validator

    from citystream.schemas.events import SensorReading, make_event_id
    from citystream.schemas.fast import READING_FORM, canonical_form

    assert READING_FORM is not None, "the bulk path is off: schemas.fast cannot derive SensorReading's form"
    pattern, limits = READING_FORM
    reading = SensorReading(event_id=make_event_id("gw-1", "reading", 3), tenant="nakhon-rangsit", gateway_id="gw-1",
                            device_id="pm-01", seq=3, captured_at=datetime(2026, 11, 25, 12, 0, 3, 14000, tzinfo=UTC),
                            district="ธัญบุรี", metric="pm25_ug_m3", value=41.5)
    assert re.fullmatch(pattern, to_json(reading).decode())
    assert limits["seq"] == ("value", 0, 2**63 - 1) and limits["district"] == ("length", 0, 128)

    class Checked(SensorReading):
        @field_validator("device_id")
        @classmethod
        def _upper(cls, v: str) -> str:
            return v.upper()

    assert canonical_form(Checked) is None  # a validator it does not know: no bulk path, never a wrong one
