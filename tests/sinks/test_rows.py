"""Unit: record -> row mapping, poison reasons, window limits and tokens, replay admission, owner files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from citystream.clickhouse import OWNER_FILE, chdb_path, read_owner
from citystream.schemas import migrate as schema
from citystream.schemas import topics
from citystream.schemas.events import DeadLetter
from citystream.sinks.batch import Window
from citystream.sinks.query_cli import jsonable
from citystream.sinks.replay import Replay
from citystream.sinks.rows import ROUTES, PoisonRecord, arrow_schema, ms, to_row
from tests.sinks.factory import T0, alert, block, face, plate, reading, status

pytestmark = pytest.mark.unit


def test_every_event_kind_maps_to_its_table_with_the_full_arrow_schema() -> None:
    for events in ([reading(1)], [plate(1, "a")], [alert(1)], [status(1)], [face(1)]):
        table, arrow = block(events)
        assert arrow.schema == arrow_schema(table)
        assert arrow.num_rows == 1
        assert arrow.column("event_id").to_pylist() == [events[0].event_id]
    row = to_row(ROUTES[topics.RAW_READINGS], reading(3, 41.5).model_dump_json().encode())
    assert (row["metric"], row["value"], row["seq"], row["captured_at"]) == ("pm25_ug_m3", 41.5, 3, ms(T0) + 3000)


@pytest.mark.parametrize(("value", "reason", "detail"), [
    (None, "empty_record", "no value"),
    (b"\xff{", "not_json", ""),
    (b'{"kind": "sensor_reading"}', "schema_mismatch", "event_id"),
    (json.dumps({**orjson.loads(reading(1).model_dump_json()), "seq": 2**64}).encode(), "value_out_of_range", "seq"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "value": "NaN"}), "schema_mismatch", "value"),
    # the strict contract: no coercion, bounded integers, per-metric ranges, no repeated keys
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "value": True}), "schema_mismatch", "value"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "value": "220.1"}), "schema_mismatch", "value"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "captured_at": 1796667452521}), "schema_mismatch",
     "captured_at"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "schema_version": 65_536}), "value_out_of_range",
     "schema_version"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "value": 5000}), "value_out_of_range", "outside"),
    (orjson.dumps({**orjson.loads(reading(1).model_dump_json()), "value": 1.79e308}), "value_out_of_range", "outside"),
    (reading(1).model_dump_json().encode()[:-1] + b',"metric":"noise_db_a"}', "schema_mismatch", "duplicate key"),
])
def test_poison_records_have_a_reason_and_detail(value: bytes | None, reason: str, detail: str) -> None:
    with pytest.raises(PoisonRecord) as caught:
        to_row(ROUTES[topics.RAW_READINGS], value)
    assert caught.value.reason == reason
    assert detail in caught.value.detail


def test_dead_letter_rows_keep_the_original_bytes_and_topic() -> None:
    letter = DeadLetter.build(stage="bridge", reason="not_json", detail="x", topic="city/a", payload=b"\x00\xff",
                              headers={"h": "v"}, now=T0)
    row = to_row(ROUTES[topics.DLQ], letter.model_dump_json().encode())
    assert (row["original_bytes"], row["original_topic"], row["headers"]) == (b"\x00\xff", "city/a", [("h", "v")])
    assert row["captured_at"] == row["first_seen_at"] == ms(T0)
    assert ROUTES[topics.DLQ].table == schema.DEAD_LETTERS


def test_window_limits_tokens_and_commit_offsets() -> None:
    now = [100.0]
    window = Window(clock=lambda: now[0])
    assert window.is_empty() and not window.is_full(1, 1024, 1.0)
    window.track("a", 0, 5, 10)
    window.track("a", 0, 6, 10)
    window.track("b", 2, 40, 10)
    assert not window.is_full(10, 1024, 1.0)
    assert window.is_full(10, 30, 1.0)
    now[0] += 1.0
    assert window.is_full(10, 1024, 1.0)
    assert window.commit_offsets() == {("a", 0): 7, ("b", 2): 41}
    same = Window()
    for topic, partition, offset in (("b", 2, 40), ("a", 0, 5), ("a", 0, 6)):
        same.track(topic, partition, offset, 1)
    assert same.token("sensor_readings") == window.token("sensor_readings")
    assert window.token("sensor_readings") != window.token("plate_reads")
    assert window.token("sensor_readings", "0:5") != window.token("sensor_readings")
    same.track("a", 0, 7, 1)
    assert same.token("sensor_readings") != window.token("sensor_readings")


def test_replay_admits_only_the_logged_ranges_and_holds_the_rest() -> None:
    now = [0.0]
    replay = Replay({("a", 0): (5, 7), ("b", 1): (3, 3)}, deadline=10.0, clock=lambda: now[0])
    assert replay.admit(("a", 0), 5, "a5") and replay.admit(("a", 0), 6, "a6")
    assert not replay.admit(("c", 0), 1, "c1")
    assert not replay.complete()
    assert replay.admit(("a", 0), 7, "a7") and not replay.admit(("a", 0), 8, "a8")
    assert replay.admit(("b", 1), 3, "b3")
    assert replay.complete() and replay.held == ["c1", "a8"]
    late = Replay({("a", 0): (5, 7)}, deadline=10.0, clock=lambda: now[0])
    now[0] = 10.0
    assert late.complete()


def test_owner_file_names_a_live_process_only(tmp_path: Path) -> None:
    assert chdb_path("http://localhost:8123") is None
    assert chdb_path(f"chdb://{tmp_path}") == tmp_path.resolve()
    assert read_owner(tmp_path) is None
    (tmp_path / OWNER_FILE).write_text(json.dumps({"pid": os.getppid(), "url": "http://x", "started_at": 1.0}))
    owner = read_owner(tmp_path)
    assert owner is not None and owner.url == "http://x"
    (tmp_path / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "url": "http://x", "started_at": 1.0}))
    assert read_owner(tmp_path) is None  # this very process is not a remote owner
    (tmp_path / OWNER_FILE).write_text("{not json")
    assert read_owner(tmp_path) is None


def test_query_values_become_json() -> None:
    naive = datetime(2026, 1, 5, 1, 2, 3, 456000)
    assert jsonable(naive) == "2026-01-05T01:02:03.456000+00:00"
    assert jsonable({"d": naive.date(), "b": [b"ok", b"\xff"]}) == {"d": "2026-01-05", "b": ["ok", "/w=="]}
    assert jsonable(datetime(2026, 1, 5, tzinfo=UTC)) == "2026-01-05T00:00:00+00:00"
