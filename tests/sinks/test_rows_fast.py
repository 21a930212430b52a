"""Unit: the sensor-reading fast path accepts only what the contract accepts, and builds the same row.

The corpus is the shared one of the contract check (tests/schemas/test_fast.py); here each case must also
give the same row as ``to_row``, column ranges included.
"""

from __future__ import annotations

from typing import Any

import pytest

from citystream.schemas import fast as schemas_fast
from citystream.schemas import topics
from citystream.schemas.fast import FIELDS, fast_reading
from citystream.sinks.batch import TableRows, Window
from citystream.sinks.fast import reading_values
from citystream.sinks.rows import ROUTES, PoisonRecord, Row, to_row
from tests.schemas.test_fast import CASES, MISSING, body

pytestmark = pytest.mark.unit

ROUTE = ROUTES[topics.RAW_READINGS]
COLUMNS = [name for name in TableRows.empty(ROUTE.table).columns if name not in ("kafka_partition", "kafka_offset")]


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
    accepted = [body(), body(value=17), body(captured_at="2026-11-25T22:03:48.0149+07:00"),
                body(district=MISSING, schema_version=MISSING, kind=MISSING), body(district="ธ" * 128)]
    assert all(reading_values(v) is not None for v in accepted)
    assert sum(reading_values(v) is not None for v in CASES if v is not None) >= 40


def test_value_rows_and_dict_rows_make_the_same_arrow_block() -> None:
    records = [body(seq=i, captured_at=f"2026-11-25T15:03:{i:02d}.5Z", value=i / 3) for i in range(6)]
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
        to_row(ROUTE, body(captured_at="0001-01-01T00:30:00+01:00"))
    assert caught.value.reason == "schema_mismatch"
    assert reading_values(body(captured_at="0001-01-01T00:30:00+01:00")) is None


def test_the_contract_fields_are_the_columns_in_order() -> None:
    assert list(FIELDS) == COLUMNS  # reading_values hands fast_reading's tuple on as the row's values


def test_the_contract_now_holds_the_column_bounds() -> None:
    # schema_version fits UInt16, seq a signed 64-bit counter and value its metric's range in the contract
    # itself, so both paths refuse these; the sink's own column checks stay as a second line.
    for record in (body(schema_version=65_536), body(value=2**53 + 1), body(seq=2**63)):
        assert fast_reading(record) is None and reading_values(record) is None
        with pytest.raises(PoisonRecord) as caught:
            to_row(ROUTE, record)
        assert caught.value.reason == "value_out_of_range"


def test_a_switched_off_contract_check_leaves_every_record_to_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemas_fast, "ENABLED", False)
    assert reading_values(body()) is None
    assert to_row(ROUTE, body())["seq"] == 3
