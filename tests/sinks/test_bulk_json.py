"""ClickHouse checks and parses blocks of readings: it passes only what the contract accepts, with the same row.

The corpus is the shared one of the contract check (tests/schemas/test_fast.py). Every record goes through
:meth:`Writer.insert_window` as a raw block on embedded chDB; records the store does not pass come back to
the per-record path. Each stored row must be the row ``to_row`` builds (captured_at to the millisecond,
value bit for bit), and every record the contract refuses must have come back.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from citystream import clickhouse
from citystream.schemas import topics
from citystream.schemas.migrate import migrate
from citystream.settings import ClickHouseSettings
from citystream.sinks.batch import RawRows, Window
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.rows import ROUTES, PoisonRecord, Row, to_row
from citystream.sinks.writer import Writer
from tests.schemas.test_fast import CASES, MISSING, body

pytestmark = pytest.mark.integration

ROUTE = ROUTES[topics.RAW_READINGS]
TOPIC = "t.raw.readings"


class Record:
    """The parts of a Kafka record the sink reads."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def topic(self) -> str:
        """Topic name."""
        return TOPIC

    def key(self) -> bytes | None:
        """No key."""
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        """No headers."""
        return None


def _contract(value: bytes) -> Row | None:
    try:
        return to_row(ROUTE, value)
    except PoisonRecord:
        return None


def _spelled(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["captured_at"] = int(out["captured_at"])  # epoch ms on both sides
    out["value"] = (out["value"], math.copysign(1.0, out["value"]))  # -0.0 and 0.0 differ
    return out


def stored_through_bulk(ch: ClickHouseSettings, values: list[bytes]) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """Insert ``values`` (offsets 0..n-1) as one raw block; the stored rows by offset, and what came back."""
    client = clickhouse.connect(ch)
    writer = Writer(client, ch.database, SinkMetrics(CollectorRegistry()), 1.0, threading.Event())
    window = Window()
    for offset, value in enumerate(values):
        window.track(TOPIC, 0, offset, len(value))
        window.add_raw(ROUTE.table, value, 0, offset, Record(value))
    returned: list[int] = []

    def fallback(_window: Window, raw: RawRows, indices: list[int]) -> None:
        assert raw.table == ROUTE.table
        returned.extend(indices)

    assert writer.insert_window(window, 1, fallback) == []
    result = client.query("SELECT * EXCEPT (ingested_at, captured_at), toUnixTimestamp64Milli(captured_at) AS "
                          f"captured_at FROM `{ch.database}`.{ROUTE.table}")
    rows = {int(r["kafka_offset"]): r for r in (dict(zip(result.column_names, row, strict=True))
                                                 for row in result.result_rows)}
    return rows, sorted(returned)


@pytest.fixture
def ch(chdb_dsn: str, unique: str) -> ClickHouseSettings:
    """A database whose sensor_readings has the migrated columns but keeps every row (plain MergeTree).

    The real table is a ReplacingMergeTree: it would fold the corpus's records (one event id) into one row.
    """
    migrated = ClickHouseSettings(dsn=chdb_dsn, database=unique)
    admin = clickhouse.connect(migrated, database=False)
    migrate(admin, unique)
    admin.command(f"CREATE DATABASE `{unique}_plain`")
    admin.command(f"CREATE TABLE `{unique}_plain`.{ROUTE.table} AS `{unique}`.{ROUTE.table} "
                  "ENGINE = MergeTree ORDER BY tuple()")
    return ClickHouseSettings(dsn=chdb_dsn, database=f"{unique}_plain")


def test_the_store_passes_only_valid_readings_and_stores_the_rows_to_row_builds(ch: ClickHouseSettings) -> None:
    values = [v for v in CASES if v is not None]
    stored, returned = stored_through_bulk(ch, values)
    assert sorted([*stored, *returned]) == list(range(len(values))), "every record is stored or comes back once"
    for offset, row in stored.items():
        expected = _contract(values[offset])
        assert expected is not None, f"the store passed a record the contract refuses: {values[offset]!r}"
        expected.update(kafka_partition=0, kafka_offset=offset)
        assert _spelled(row) == _spelled(expected), values[offset]
    assert len(stored) >= 40  # the common forms do not need the per-record path


def test_the_common_forms_pass_in_bulk(ch: ClickHouseSettings) -> None:
    accepted = [body(), body(value=17), body(captured_at="2026-11-25T22:03:48.0149+07:00"),
                body(district=MISSING, schema_version=MISSING, kind=MISSING), body(district="ธ" * 42),
                body(captured_at="2026-11-25T15:03:48-03:30"), body(value=-0.0), body(value=1000)]
    stored, returned = stored_through_bulk(ch, accepted)
    assert returned == [] and len(stored) == len(accepted)


def test_records_out_of_the_canonical_form_come_back_for_the_contract_to_decide(ch: ClickHouseSettings) -> None:
    odd = [b" " + body(), body()[:-1] + b',"seq":3}', body(value=5000), body(captured_at="2026-02-30T15:03:48Z"),
           body(captured_at="1800-01-01T00:00:00Z"), body(value=2**53 + 1), body(district='a"b'), b"{}"]
    stored, returned = stored_through_bulk(ch, odd)
    assert stored == {} and returned == list(range(len(odd)))
