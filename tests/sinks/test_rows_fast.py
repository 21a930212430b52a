"""Unit: the sensor-reading fast path accepts only what the contract accepts, and builds the same row."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from citystream.schemas import topics
from citystream.sinks.batch import TableRows, Window
from citystream.sinks.fast import reading_values
from citystream.sinks.rows import ROUTES, PoisonRecord, Row, to_row
from tests.sinks.factory import reading

pytestmark = pytest.mark.unit

ROUTE = ROUTES[topics.RAW_READINGS]
COLUMNS = [name for name in TableRows.empty(ROUTE.table).columns if name not in ("kafka_partition", "kafka_offset")]
BASE: dict[str, Any] = orjson.loads(reading(3, 41.5).model_dump_json())
MISSING = object()


def _with(**changes: Any) -> bytes:
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

CASES: list[bytes | None] = [
    _with(), None, b"", b"\xff{", b"[]", b'"x"', b"3", b"  " + _with() + b"\n", _with(extra=1),
    _with(district=MISSING), _with(district="ธัญบุรี" * 18), _with(district="ธ" * 128), _with(district="ธ" * 129),
    _with(district=None), _with(kind=MISSING), _with(kind="plate_read"), _with(kind=None),
    _with(schema_version=MISSING), _with(metric="PM25"), _with(metric=5), _with(metric="rain_mm_h"),
    _with(value=MISSING), _with(seq=MISSING), _with(tenant=MISSING),
    _with()[:-1] + b',"seq":99}', _with()[:-1] + b',"value":1e400}', _with()[:-1] + b',"value":NaN}',
    _with()[:-1] + b',"district":"\\ud800"}', _with()[:-1] + b',"seq":18446744073709551616}',
    _with(district="ok")[:-1].replace(b'"ok"', b'"o\xffk"') + b"}",
    *[_with(captured_at=s) for s in STAMPS], *[_with(value=v) for v in VALUES],
    *[_with(seq=v) for v in INTS], *[_with(schema_version=v) for v in INTS],
    *[_with(tenant=t) for t in [*TEXTS, "nakhon-rangsit", "Nakhon"]], *[_with(gateway_id=t) for t in TEXTS],
    *[_with(device_id=t) for t in TEXTS], *[_with(event_id=e) for e in EVENT_IDS],
]


def _slow(value: bytes | None) -> Row | None:
    try:
        return to_row(ROUTE, value)
    except PoisonRecord:
        return None


def _typed(values: list[Any]) -> list[tuple[type, Any]]:
    return [(type(v), v) for v in values]


@pytest.mark.parametrize("value", CASES)
def test_fast_path_accepts_only_valid_readings_and_builds_the_same_row(value: bytes | None) -> None:
    fast = None if value is None else reading_values(value)
    slow = _slow(value)
    if fast is not None:
        assert slow is not None, "the fast path accepted a record the contract refuses"
        assert _typed(list(fast)) == _typed([slow[name] for name in COLUMNS])


def test_fast_path_takes_the_common_forms() -> None:
    accepted = [_with(), _with(value=17), _with(captured_at="2026-11-25T22:03:48.0149+07:00"),
                _with(district=MISSING, schema_version=MISSING, kind=MISSING), _with(district="ธ" * 128)]
    assert all(reading_values(v) is not None for v in accepted)
    assert sum(reading_values(v) is not None for v in CASES if v is not None) >= 40


def test_value_rows_and_dict_rows_make_the_same_arrow_block() -> None:
    records = [_with(seq=i, captured_at=f"2026-11-25T15:03:{i:02d}.5Z", value=i / 3) for i in range(6)]
    by_dict, mixed = Window(), Window()
    for offset, value in enumerate(records):
        row = to_row(ROUTE, value)
        row.update(kafka_partition=1, kafka_offset=offset)
        by_dict.add(ROUTE.table, row, ("t", None, value, None))
        fast = reading_values(value)
        assert fast is not None
        if offset % 2:
            mixed.add(ROUTE.table, row, ("t", None, value, None))
        else:
            mixed.add_values(ROUTE.table, (*fast, 1, offset), ("t", None, value, None))
    assert mixed.rows == by_dict.rows == 6
    expected = by_dict.tables[ROUTE.table].to_arrow(123)
    assert mixed.tables[ROUTE.table].to_arrow(123).equals(expected)
    assert mixed.tables[ROUTE.table].to_arrow(123, 2, 5).equals(expected.slice(2, 3))
    assert mixed.tables[ROUTE.table].row(4) == by_dict.tables[ROUTE.table].row(4)


def test_a_timestamp_that_overflows_in_utc_is_poison_not_a_crash() -> None:
    with pytest.raises(PoisonRecord) as caught:
        to_row(ROUTE, _with(captured_at="0001-01-01T00:30:00+01:00"))
    assert caught.value.reason == "schema_mismatch"
    assert reading_values(_with(captured_at="0001-01-01T00:30:00+01:00")) is None
