"""Unit: the shared SensorReading fast check accepts only what the contract accepts, with the same values.

``CASES`` is the shared corpus: the sink's row test (tests/sinks/test_rows_fast.py) runs it too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import Field, field_validator

from citystream.schemas import fast
from citystream.schemas.events import SensorReading, make_event_id
from citystream.schemas.fast import FIELDS, fast_reading, matches_contract
from citystream.schemas.ranges import RANGES
from citystream.schemas.strict import validate_json

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = orjson.loads(SensorReading(
    event_id=make_event_id("gw-1", "reading", 3), tenant="nakhon-rangsit", gateway_id="gw-1", device_id="pm-01",
    seq=3, captured_at=datetime(2026, 11, 25, 12, 0, 3, tzinfo=UTC), district="ธัญบุรี", metric="pm25_ug_m3",
    value=41.5).model_dump_json())
MISSING = object()


def body(**changes: Any) -> bytes:
    """BASE as JSON with fields changed (MISSING drops one)."""
    doc = dict(BASE)
    for name, value in changes.items():
        if value is MISSING:
            doc.pop(name)
        else:
            doc[name] = value
    return orjson.dumps(doc)


STAMPS = ["2026-11-25T15:03:48Z", "2026-11-25T15:03:48.014Z", "2026-11-25T15:03:48.1Z", "2026-11-25T15:03:48.123456Z",
          "2026-11-25T22:03:48.0149+07:00", "2026-11-25T11:33:48.999999-03:30", "1969-12-31T23:59:59.9995Z",
          "2026-11-25T15:03:48.1234567Z", "2026-11-25T15:03:48", "2026-11-25t15:03:48Z", "2026-11-25 15:03:48Z",
          "2026-02-30T15:03:48Z", "2026-11-25T24:00:00Z", "2026-11-25T15:03:60Z", "2026-11-25T15:03:48+24:00",
          "2026-11-25T15:03:48+05:60", "0001-01-01T00:30:00+01:00", "2026-11-25", "20261125T150348Z",
          "2026-11-25T15:03:48z", "２０２６-11-25T15:03:48Z", "2026-11-25T15:03:48+0700", 1_700_000_000, 1.5e12, None,
          ["2026-11-25T15:03:48Z"]]
VALUES = [17, -3, 0, 2**53, 2**53 + 1, 1e308, -0.0, 41.5, "41.5", "NaN", True, None, [1]]
INTS = [0, 1, 65_535, 65_536, 2**63, 2**64 - 1, -1, 1.0, "3", True, None]
TEXTS = ["a", "gw-1", "gw.1_x", "A", "", "x" * 64, "x" * 65, "bad name", "gw\n", "ก", 5, None, [1], {"a": 1}]
EVENT_IDS = [BASE["event_id"], BASE["event_id"].upper(), BASE["event_id"][:-1], BASE["event_id"] + "\n", 36 * "-", 7]
# Added with the shared check: timestamps at the edges of the range and of the offsets, numbers at the edges
# of what orjson keeps as int, text measured in code points.
EDGE_STAMPS = ["2026-11-25T15:03:48+23:59", "2026-11-25T15:03:48-23:59", "2026-11-25T15:03:48-00:00",
               "1800-01-01T00:00:00Z", "1899-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z",
               "0001-01-01T00:30:00-01:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
               "9999-12-31T23:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-06-30T23:59:60Z"]
RAW_NUMBERS = [b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808", b"-9223372036854775809",
               b"123456789012345678901234567", b"1e-400", b"-1e308", b"4.9e-324", b"1E3", b"-0"]

CASES: list[bytes | None] = [
    body(), None, b"", b"\xff{", b"[]", b'"x"', b"3", b"  " + body() + b"\n", body(extra=1),
    body(district=MISSING), body(district="ธัญบุรี" * 18), body(district="ธ" * 128), body(district="ธ" * 129),
    body(district=None), body(kind=MISSING), body(kind="plate_read"), body(kind=None),
    body(schema_version=MISSING), body(metric="PM25"), body(metric=5), body(metric="rain_mm_h"),
    body(value=MISSING), body(seq=MISSING), body(tenant=MISSING),
    body()[:-1] + b',"seq":99}', body()[:-1] + b',"value":1e400}', body()[:-1] + b',"value":NaN}',
    body()[:-1] + b',"district":"\\ud800"}', body()[:-1] + b',"seq":18446744073709551616}',
    body(district="ok")[:-1].replace(b'"ok"', b'"o\xffk"') + b"}",
    *[body(captured_at=s) for s in STAMPS], *[body(value=v) for v in VALUES],
    *[body(seq=v) for v in INTS], *[body(schema_version=v) for v in INTS],
    *[body(tenant=t) for t in [*TEXTS, "nakhon-rangsit", "Nakhon"]], *[body(gateway_id=t) for t in TEXTS],
    *[body(device_id=t) for t in TEXTS], *[body(event_id=e) for e in EVENT_IDS],
    # added with the shared check
    *[body(captured_at=s) for s in EDGE_STAMPS], *[body()[:-1] + b',"value":' + n + b"}" for n in RAW_NUMBERS],
    body()[:-1] + b',"seq":18446744073709551615}', body(district="😀" * 128), body(district="😀" * 129),
    body(tenant="nakhon١"), body(device_id="pm\u00a001"), body(kind="sensor_reading"), body(metric=["pm25_ug_m3"]),
    body()[:-1] + b',"tenant":"x","tenant":"nakhon-rangsit"}', b'{"kind":"sensor_reading"}', b"{}", b"null",
    # added with the strict contract (issue 15): repeated keys (same or other value, escaped spellings), quotes
    # in text, range edges per metric, the int64 bound of seq, the UInt16 bound of schema_version
    body()[:-1] + b',"seq":3}', body()[:-1] + b',"value":41.5}', b'{"seq":3,' + body()[1:],
    body()[:-1] + b',"metric":"noise_db_a"}', body()[:-1] + b',"\\u0073eq":3}',
    body()[:-1] + b',"kind":"sensor_reading"}',
    body(district='a"b'), body()[:-1].replace(b'"district":"', b'"district":"\\u0022', 1) + b"}",
    body(district="\\"), body()[:-1] + b',"district":"x","district":"x"}',
    *[body(metric=m, value=v) for m, (low, high) in RANGES.items()
      for v in (low, high, low - 0.001, high + 0.001, int(low), int(high) + 1, -0.0)],
    body(value=5000), body(value=1.79e308), body(value=-1e-300),
    body(seq=2**63 - 1), body(seq=2**63), body(schema_version=65_535), body(schema_version=65_536),
    body(value=True), body(value="220.1"), body(captured_at=1796667452521), body(captured_at="1796667452"),
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _contract(value: bytes | None) -> SensorReading | None:
    if value is None:
        return None
    try:
        return validate_json(SensorReading, value)
    except Exception:  # ValidationError, or anything else the contract's validators raise: refused either way
        return None


def _spelled(values: Any) -> list[tuple[type, Any]]:
    """Typed values in FIELDS order; ``value`` as the float the contract holds."""
    got = dict(zip(FIELDS, values, strict=True))
    return [(type(v), v) for v in {**got, "value": float(got["value"])}.values()]


def _model_values(model: SensorReading) -> list[Any]:
    """The model's values in FIELDS order, spelled as fast_reading spells them (captured_at in epoch ms)."""
    ms, rest = divmod(model.captured_at - EPOCH, timedelta(milliseconds=1))
    assert not rest
    spelled = {**model.model_dump(), "metric": model.metric.value, "captured_at": ms}
    return [spelled[name] for name in FIELDS]


@pytest.mark.parametrize("value", CASES)
def test_fast_reading_accepts_only_what_the_contract_accepts_with_the_same_values(value: bytes | None) -> None:
    fast_values = None if value is None else fast_reading(value)
    model = _contract(value)
    if fast_values is not None:
        assert model is not None, "the fast check accepted a body the contract refuses"
        assert type(fast_values[FIELDS.index("value")]) in (int, float)
        assert _spelled(fast_values) == _spelled(_model_values(model))


def test_fast_reading_takes_the_common_forms() -> None:
    accepted = [body(), body(value=17), body(captured_at="2026-11-25T22:03:48.0149+07:00"),
                body(district=MISSING, schema_version=MISSING, kind=MISSING), body(district="ธ" * 128),
                body(captured_at="2026-11-25T15:03:48+23:59"), body(captured_at="1800-01-01T00:00:00Z"),
                body(value=1000), body(value=0), body(metric="temperature_c", value=-20.0)]
    assert all(fast_reading(v) is not None for v in accepted)
    assert sum(fast_reading(v) is not None for v in CASES if v is not None) >= 50


def test_an_offset_minute_of_60_is_left_to_the_contract() -> None:
    odd = body(captured_at="2026-11-25T15:03:48+05:60")  # fromisoformat takes it, the contract does not
    assert fast_reading(odd) is None and _contract(odd) is None


def test_the_fast_check_is_on_for_the_current_contract() -> None:
    # Fails when SensorReading changed: update CONTRACT and the checks in schemas/fast.py together.
    assert fast.ENABLED
    assert matches_contract(SensorReading)


class _ExtraField(SensorReading):
    unit: str = ""


class _NarrowDistrict(SensorReading):
    district: str = Field("", max_length=64)


class _NewDefault(SensorReading):
    schema_version: int = Field(2, ge=1)


class _NullableValue(SensorReading):
    value: float | None  # type: ignore[assignment]


class _LooserSeq(SensorReading):
    seq: int = Field(ge=-1)


class _NewValidator(SensorReading):
    @field_validator("seq")
    @classmethod
    def _even(cls, v: int) -> int:
        return v


@pytest.mark.parametrize("model", [_ExtraField, _NarrowDistrict, _NewDefault, _NullableValue, _LooserSeq,
                                   _NewValidator], ids=lambda m: m.__name__)
def test_a_changed_contract_switches_the_fast_check_off(model: type[SensorReading]) -> None:
    assert not matches_contract(model)


def test_a_switched_off_check_decides_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast_reading(body()) is not None
    monkeypatch.setattr(fast, "ENABLED", False)
    assert fast_reading(body()) is None
