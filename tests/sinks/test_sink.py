"""The sink as a real process: Kafka records become rows, poison goes to the DLQ, offsets follow inserts."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from citystream.clickhouse import OWNER_FILE
from citystream.schemas import topics
from citystream.schemas.events import DeadLetter
from citystream.settings import Settings
from tests.conftest import citystream
from tests.sinks.factory import alert, face, plate, reading, status
from tests.sinks.procs import SINK_TOPICS, SinkProcess, committed_and_ends, produce, query, sink_settings, wait_for

pytestmark = pytest.mark.integration

NOT_JSON = b"\xff\xfenot json at all"


def poison_records() -> list[tuple[str, bytes | None, bytes]]:
    """Three records the sink can never store, on partitions that also carry good records."""
    too_big = orjson.loads(reading(9_000).model_dump_json())
    too_big["seq"] = 2**64
    missing = orjson.loads(plate(9_001, "z").model_dump_json())
    del missing["plate_pseudonym"]
    return [(topics.RAW_READINGS, b"pm-01", NOT_JSON),
            (topics.RAW_READINGS, b"pm-01", json.dumps(too_big).encode()),
            (topics.PLATE_READS, b"cam-01", orjson.dumps(missing))]


def test_records_become_rows_poison_goes_to_dlq_and_offsets_follow(settings: Settings, tmp_path: Path) -> None:
    readings = [reading(i, float(i), device=f"pm-{i % 4:02d}") for i in range(200)]
    others = [*[plate(i, "abc"[i % 3]) for i in range(10)], *[alert(i) for i in range(5)],
              *[status(i) for i in range(3)], *[face(i) for i in range(2)]]
    produce(settings, readings[:100])
    produce(settings, poison_records())
    produce(settings, [*readings[100:], *others])
    sink = SinkProcess(sink_settings(settings, tmp_path), tmp_path / "sink.yaml").start()
    try:
        cfg = sink.config
        wait_for("all readings", lambda: sink.count("v_sensor_readings") == 200)
        wait_for("three dead letters stored", lambda: sink.count("v_dead_letters") == 3)
        assert [sink.count(v) for v in ("v_plate_reads", "v_alerts", "v_device_status", "v_face_matches")] == \
            [10, 5, 3, 2]
        ids = query(cfg, "SELECT groupArray(event_id) AS ids FROM v_sensor_readings")[0]["ids"]
        assert sorted(ids) == sorted(r.event_id for r in readings)

        dead = query(cfg, "SELECT stage, reason, detail, original_topic, original_bytes, headers, "
                          "base64Encode(original_bytes) AS b64 FROM v_dead_letters ORDER BY reason")
        assert [(d["stage"], d["reason"], d["original_topic"]) for d in dead] == [
            ("sink", "not_json", settings.kafka.topic(topics.RAW_READINGS)),
            ("sink", "schema_mismatch", settings.kafka.topic(topics.PLATE_READS)),
            ("sink", "value_out_of_range", settings.kafka.topic(topics.RAW_READINGS))]
        assert "plate_pseudonym" in dead[1]["detail"] and "seq" in dead[2]["detail"]
        assert {base64.b64decode(d["b64"]) for d in dead} == {value for _t, _k, value in poison_records()}
        # citystream query --json: text stays text, bytes that are not UTF-8 come back as base64
        assert base64.b64decode(dead[0]["original_bytes"]) == NOT_JSON
        assert json.loads(dead[1]["original_bytes"])["kind"] == "plate_read"
        assert all(isinstance(d["headers"], dict) for d in dead)

        def all_committed() -> bool:
            committed, ends = committed_and_ends(settings)
            return committed == ends

        wait_for("offsets committed up to the end of every partition", all_committed, timeout=30)

        assert sink.metric("citystream_sink_rows_inserted_total", table="sensor_readings") == 200
        assert sink.metric("citystream_sink_dlq_total", reason="not_json") == 1
        assert sink.metric("citystream_sink_batch_rows_count", table="sensor_readings") >= 1
        lag = sink.samples("citystream_sink_consumer_lag_messages")
        assert {labels["topic"] for labels, _v in lag} >= {settings.kafka.topic(topics.RAW_READINGS)}
        assert all(value >= 0 for _l, value in lag)
        for statement in ("DROP TABLE sensor_readings", "SELECT 1 SETTINGS max_threads = 1",
                          "SELECT 1 INTO OUTFILE 'leak.csv'"):
            res = query(cfg, statement, check=False)
            # ClickHouse refuses writes (readonly); the query guard refuses settings and files first
            assert res.returncode == 1 and ("readonly" in res.stderr.lower() or "refused" in res.stderr), res.stderr
        assert sink.count("sensor_readings") == 200
        assert sink.terminate() == 0
    finally:
        sink.kill()
    assert not (sink.store / OWNER_FILE).exists()
    assert sink.count("v_sensor_readings") == 200  # no sink: the path is opened directly
    letters = dlq_records(settings, 3)
    assert sorted(d.reason for d in letters) == ["not_json", "schema_mismatch", "value_out_of_range"]
    assert {d.original_bytes for d in letters} == {value for _t, _k, value in poison_records()}


def dlq_records(settings: Settings, n: int) -> list[DeadLetter]:
    """The first ``n`` DeadLetters on the DLQ topic."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"{settings.sink.group_id}-check",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.kafka.topic(topics.DLQ)])
    out: list[DeadLetter] = []
    try:
        def more() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(DeadLetter.model_validate_json(msg.value()))
            return len(out) >= n

        wait_for(f"{n} DLQ records", more, every=0)
    finally:
        consumer.close()
    return out


def test_sigterm_flushes_the_open_window_commits_and_exits_0(settings: Settings, tmp_path: Path) -> None:
    sink = SinkProcess(sink_settings(settings, tmp_path, batch_age_s=3600.0, batch_rows=50),
                       tmp_path / "sink.yaml").start()
    try:
        produce(settings, [reading(i) for i in range(57)])
        wait_for("the first window (50 rows) inserted", lambda: sink.count("sensor_readings") == 50)
        wait_for("7 rows pending in the open window", lambda: sink.metric("citystream_sink_window_rows") == 7)
        committed, ends = committed_and_ends(settings)
        assert sum(committed.get(tp, 0) for tp in ends) == 50  # the open window is not committed
        assert sink.terminate() == 0
    finally:
        sink.kill()
    committed, ends = committed_and_ends(settings)
    assert committed == ends and sum(ends.values()) == 57
    assert sink.count("v_sensor_readings") == 57


def test_query_json_reads_through_the_running_sink(settings: Settings, tmp_path: Path) -> None:
    sink = SinkProcess(sink_settings(settings, tmp_path), tmp_path / "sink.yaml").start()
    try:
        produce(settings, [reading(1, 41.5)])
        wait_for("one reading", lambda: sink.count("v_sensor_readings") == 1)
        res = query(sink.config, "SELECT event_id, gateway_id, captured_at, ingested_at, value, district "
                                 "FROM v_sensor_readings", check=False)
        assert res.returncode == 0, res.stderr
        [row] = json.loads(res.stdout)
        expected = reading(1, 41.5)
        assert row["event_id"] == expected.event_id and row["gateway_id"] == "gw-1"
        assert row["captured_at"] == expected.captured_at.isoformat() and row["ingested_at"].endswith("+00:00")
        assert (row["value"], row["district"]) == (41.5, "ธัญบุรี")
        bad = query(sink.config, "SELECT nope FROM v_sensor_readings", check=False)
        assert bad.returncode == 1 and "nope" in bad.stderr
        busy = citystream("migrate", config=sink.config, check=False)
        assert busy.returncode == 1 and "owned by a running sink" in busy.stderr
        assert sink.terminate() == 0
    finally:
        sink.kill()
    again = citystream("migrate", "--json", config=sink.config)
    assert json.loads(again.stdout) == {"database": settings.clickhouse.database, "applied": []}


def test_rebalance_flushes_the_window_and_nothing_is_lost_or_doubled(settings: Settings, tmp_path: Path) -> None:
    sink = SinkProcess(sink_settings(settings, tmp_path, batch_age_s=3600.0, batch_rows=1_000_000),
                       tmp_path / "sink.yaml").start()
    try:
        produce(settings, [reading(i, device=f"pm-{i % 6:02d}") for i in range(40)])
        wait_for("40 rows in the open window", lambda: sink.metric("citystream_sink_window_rows") == 40)
        intruder = Consumer({**settings.kafka.client_config(), "group.id": settings.sink.group_id,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 6000})
        intruder.subscribe([settings.kafka.topic(t) for t in SINK_TOPICS])
        try:
            wait_for("the intruder joins the group", lambda: intruder.poll(0.5) is not None or intruder.assignment())
            # The sink's partitions were revoked: it flushed and committed its window first.
            wait_for("the revoked window inserted", lambda: sink.count("sensor_readings") == 40)
            produce(settings, [reading(i, device=f"pm-{i % 6:02d}") for i in range(40, 60)])
        finally:
            intruder.close()  # leaves without committing: its partitions return to the sink, which re-reads them

        def all_consumed() -> bool:  # inserted (flushed on a revoke) or pending in the open window
            pending = sink.metric("citystream_sink_window_rows")
            return sink.count("sensor_readings") + pending == 60

        wait_for("all 60 records consumed by the sink again", all_consumed)
        assert sink.terminate() == 0
    finally:
        sink.kill()
    committed, ends = committed_and_ends(settings)
    assert committed == ends
    assert query(sink.config, "SELECT count() AS n, uniqExact(event_id) AS ids FROM sensor_readings") == \
        [{"n": 60, "ids": 60}]
