"""The writer on embedded chDB: dedup tokens, backoff on outages, poison isolation by splitting blocks, and
programming errors that stop the stage instead of dead-lettering a batch."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from citystream import clickhouse
from citystream.schemas.migrate import migrate
from citystream.settings import ClickHouseSettings
from citystream.sinks.batch import Window
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.replay import pending_window
from citystream.sinks.rows import ROUTES, to_row
from citystream.sinks.writer import STAGE_ATTEMPTS, StageError, Stopped, Writer, classify
from tests.sinks.factory import TOPIC_OF, plate, reading

pytestmark = pytest.mark.integration


class SimulatedTime(threading.Event):
    """A stop event whose waits advance a simulated clock instead of sleeping, and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        """Record the backoff delay and let simulated time pass."""
        assert timeout is not None
        self.waits.append(timeout)
        self.now += timeout
        return self.is_set()


class Outage:
    """A client whose inserts fail with a connection error until ``until`` (simulated seconds)."""

    def __init__(self, client: Any, time: SimulatedTime, until: float) -> None:
        self.client = client
        self.time = time
        self.until = until
        self.failures = 0

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        """Fail during the outage, else insert."""
        if self.time.now < self.until:
            self.failures += 1
            raise ConnectionError("Connection refused")
        return self.client.insert_arrow(*args, **kwargs)


@pytest.fixture
def ch(chdb_dsn: str, unique: str) -> ClickHouseSettings:
    """This test's migrated database on the process's chDB path."""
    settings = ClickHouseSettings(dsn=chdb_dsn, database=unique)
    migrate(clickhouse.connect(settings, database=False), unique)
    return settings


def window_of(events: list[BaseModel], partition: int = 0, first_offset: int = 0) -> Window:
    """A window holding the events at consecutive offsets of one partition of their topic."""
    window = Window()
    for i, event in enumerate(events):
        topic = TOPIC_OF[type(event)]
        value = event.model_dump_json().encode()
        window.track(topic, partition, first_offset + i, len(value))
        route = ROUTES[topic]
        row = to_row(route, value)
        row.update(kafka_partition=partition, kafka_offset=first_offset + i)
        window.add(route.table, row, (topic, None, value, None))
    return window


def count(client: Any, sql: str) -> int:
    """A single number."""
    return int(client.command(sql))


def test_same_window_inserted_twice_is_dropped_by_its_token(ch: ClickHouseSettings) -> None:
    client = clickhouse.connect(ch)
    writer = Writer(client, ch.database, SinkMetrics(CollectorRegistry()), 1.0, threading.Event())
    events: list[BaseModel] = [reading(i) for i in range(30)]
    assert writer.insert_window(window_of(events), 1) == []
    assert writer.insert_window(window_of(events), 2) == []
    assert count(client, "SELECT count() FROM sensor_readings") == 30
    assert count(client, "SELECT sum(readings) FROM v_sensor_1h") == 30
    assert writer.insert_window(window_of(events, first_offset=30), 3) == []  # same events, other offsets
    assert count(client, "SELECT count() FROM sensor_readings") == 60
    assert count(client, "SELECT count() FROM v_sensor_readings") == 30


def test_outage_backs_off_exponentially_with_a_cap_then_every_row_arrives(ch: ClickHouseSettings) -> None:
    time = SimulatedTime()
    registry = CollectorRegistry()
    outage = Outage(clickhouse.connect(ch), time, until=20.0)
    writer = Writer(outage, ch.database, SinkMetrics(registry), 4.0, time, clock=lambda: time.now)
    assert writer.insert_window(window_of([reading(i) for i in range(100)]), 1) == []
    # doubling from 0.2 s up to the 4 s cap, each delay jittered down by at most 20 % (citystream.retry.Backoff)
    bases = [0.2, 0.4, 0.8, 1.6, 3.2] + [4.0] * (len(time.waits) - 5)
    assert len(time.waits) >= 9 and all(0.8 * b <= w <= b for w, b in zip(time.waits, bases, strict=True)), time.waits
    assert outage.failures == len(time.waits)
    assert registry.get_sample_value("citystream_sink_insert_retries_total",
                                     {"table": "sensor_readings"}) == len(time.waits)
    assert registry.get_sample_value("citystream_sink_rows_inserted_total", {"table": "sensor_readings"}) == 100
    assert count(outage.client, "SELECT count() FROM v_sensor_readings") == 100


def test_stop_during_an_outage_gives_up_without_inserting(ch: ClickHouseSettings) -> None:
    time = SimulatedTime()
    time.set()
    outage = Outage(clickhouse.connect(ch), time, until=1e9)
    writer = Writer(outage, ch.database, SinkMetrics(CollectorRegistry()), 1.0, time)
    with pytest.raises(Stopped):
        writer.insert_window(window_of([reading(1)]), 1)
    assert count(outage.client, "SELECT count() FROM sensor_readings") == 0


def test_rows_refused_by_clickhouse_are_isolated_and_the_rest_inserted(ch: ClickHouseSettings) -> None:
    client = clickhouse.connect(ch)
    registry = CollectorRegistry()
    writer = Writer(client, ch.database, SinkMetrics(registry), 1.0, threading.Event())
    window = window_of([plate(i, "abc"[i % 3]) for i in range(9)] + [reading(i) for i in range(5)])
    plates = window.tables["plate_reads"]
    plates.columns["plate_pseudonym"][4] = "f" * 65  # does not fit FixedString(64): refused by ClickHouse
    poison = writer.insert_window(window, 1)
    assert sorted((p.table, p.row["seq"]) for p in poison) == [("plate_reads", 4)]
    assert all(p.source[2] for p in poison) and all(p.detail for p in poison)
    assert count(client, "SELECT count() FROM v_plate_reads") == 8
    assert count(client, "SELECT count() FROM v_sensor_readings") == 5
    again = writer.insert_window(window, 2)  # a replay splits the same way, so every sub-block is dropped
    assert len(again) == 1
    assert count(client, "SELECT count() FROM plate_reads") == 8
    assert count(client, "SELECT count() FROM sensor_readings") == 5


class Broken:
    """A client whose inserts fail with a programming error (as a driver bug would), never with a ClickHouse code."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        """Fail like a bug."""
        self.calls += 1
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")


def test_a_programming_error_is_a_stage_error_and_dead_letters_nothing(ch: ClickHouseSettings) -> None:
    time = SimulatedTime()
    registry = CollectorRegistry()
    client = clickhouse.connect(ch)
    writer = Writer(client, ch.database, SinkMetrics(registry), 1.0, time)
    window = window_of([reading(i) for i in range(8)])
    window.tables["sensor_readings"].columns["value"][2] = "warm"  # a code bug: not a Float64 after the contract
    with pytest.raises(StageError, match="ArrowInvalid"):
        writer.insert_window(window, 1)
    assert len(time.waits) == STAGE_ATTEMPTS - 1, "retried with backoff, then given up"
    assert count(client, "SELECT count() FROM sensor_readings") == 0  # no half of the batch went in either
    broken = Broken(client)
    writer = Writer(broken, ch.database, SinkMetrics(CollectorRegistry()), 1.0, SimulatedTime())
    with pytest.raises(StageError, match="TypeError"):
        writer.insert_window(window_of([reading(i) for i in range(8)]), 1)
    assert broken.calls == STAGE_ATTEMPTS  # one block, never split into per-row dead letters
    assert registry.get_sample_value("citystream_sink_rows_inserted_total", {"table": "sensor_readings"}) is None


def test_errors_are_classified_by_what_clickhouse_names() -> None:
    assert classify(DatabaseError("Code: 131. DB::Exception: String too long for type FixedString(64)")) == "poison"
    assert classify(DatabaseError("Code: 60. DB::Exception: Unknown table")) == "outage"
    assert classify(ConnectionError("Connection refused")) == "outage"
    assert classify(OperationalError("timed out")) == "outage"
    for bug in (TypeError("x"), ValueError("y"), KeyError("z"), pa.ArrowInvalid("w")):
        assert classify(bug) == "stage"


def test_pending_window_is_the_newest_logged_one_not_yet_committed(ch: ClickHouseSettings) -> None:
    client = clickhouse.connect(ch)
    writer = Writer(client, ch.database, SinkMetrics(CollectorRegistry()), 1.0, threading.Event())
    topic = TOPIC_OF[type(reading(0))]
    first = window_of([reading(i) for i in range(10)])
    writer.log_window("g", first)
    second = window_of([reading(i) for i in range(10, 15)], first_offset=10)
    writer.log_window("g", second)
    assert pending_window(client, ch.database, "g", {(topic, 0): 10}) == {(topic, 0): (10, 14)}
    assert pending_window(client, ch.database, "g", {(topic, 0): 15}) is None  # committed
    assert pending_window(client, ch.database, "g", {(topic, 1): 10}) is None  # partition not assigned here
    assert pending_window(client, ch.database, "other", {(topic, 0): 10}) is None


def test_a_rebuilt_window_with_other_interleaving_splits_the_same_way(ch: ClickHouseSettings) -> None:
    client = clickhouse.connect(ch)
    writer = Writer(client, ch.database, SinkMetrics(CollectorRegistry()), 1.0, threading.Event())
    a = window_of([plate(i, "a", camera="cam-a") for i in range(6)], partition=0)
    b = window_of([plate(i, "b", camera="cam-b") for i in range(6)], partition=1)

    def interleaved(order: list[tuple[Window, int]]) -> Window:
        window = Window()
        for source, i in order:
            rows = source.tables["plate_reads"]
            row = rows.row(i)
            window.track(rows.sources[i][0], row["kafka_partition"], row["kafka_offset"], 1)
            if (row["kafka_partition"], row["kafka_offset"]) == (1, 3):
                row["plate_pseudonym"] = "f" * 65  # poison: ClickHouse refuses it for FixedString(64)
            window.add("plate_reads", row, rows.sources[i])
        return window

    first = interleaved([(a, i) for i in range(6)] + [(b, i) for i in range(6)])
    replay = interleaved([(w, i) for i in range(6) for w in (b, a)])
    assert first.token("plate_reads") == replay.token("plate_reads")
    assert [p.row["seq"] for p in writer.insert_window(first, 1)] == [3]
    assert [p.row["seq"] for p in writer.insert_window(replay, 2)] == [3]
    good = {(r["device_id"], r["seq"]) for r in (dict(zip(("device_id", "seq"), row, strict=True)) for row in
            client.query("SELECT device_id, seq FROM plate_reads").result_rows)}
    assert len(good) == 11 and ("cam-b", 3) not in good
    assert count(client, "SELECT count() FROM plate_reads") == 11
