"""Helpers for sink tests: a sink subprocess with its own chDB path, producing, queries, committed offsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from citystream.clickhouse import OWNER_FILE, chdb_path, query_rows
from citystream.schemas import topics
from citystream.schemas.events import Event
from citystream.settings import Settings
from tests.conftest import REPO, citystream, free_port, write_settings
from tests.sinks.factory import TOPIC_OF

T = TypeVar("T")
SINK_TOPICS = (topics.RAW_READINGS, topics.DEVICE_STATUS, topics.PLATE_READS, topics.FACE_MATCHES, topics.ALERTS,
               topics.DLQ)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` (a guard, not a spec)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def sink_settings(settings: Settings, tmp_path: Path, **sink: Any) -> Settings:
    """Settings for a sink subprocess: its own chDB path, a free query port and metrics port."""
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    return settings.model_copy(update={
        "clickhouse": settings.clickhouse.model_copy(update={"dsn": f"chdb://{store}"}),
        "sink": settings.sink.model_copy(update={"query_port": 0, "batch_age_s": 0.3, "session_timeout_ms": 6_000,
                                                        **sink}),
        "metrics": settings.metrics.model_copy(update={"port": free_port()}),
    })


class SinkProcess:
    """``citystream sink`` as a real subprocess (it must own its chDB path); ``command`` replaces its arguments."""

    def __init__(self, settings: Settings, config: Path, command: list[str] | None = None) -> None:
        self.settings = settings
        self.config = write_settings(settings, config)
        self.log = config.with_suffix(".log")
        self.command = command or ["-m", "citystream", "--config", str(self.config), "sink"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def store(self) -> Path:
        """The sink's chDB data directory."""
        path = chdb_path(self.settings.clickhouse.dsn)
        assert path is not None
        return path

    def start(self) -> SinkProcess:
        """Start the sink and wait until it advertises its query endpoint."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.command], stdout=log, stderr=log, cwd=REPO,
                                         env=dict(os.environ))
        wait_for("the sink's owner file", self._advertised, timeout=60)
        return self

    def _advertised(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sink exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            doc = json.loads((self.store / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return False
        return bool(doc.get("pid") == self.proc.pid and doc.get("url"))

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to end by itself; returns the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample named ``name`` on the sink's /metrics endpoint: (labels, value)."""
        url = f"http://127.0.0.1:{self.settings.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            families = text_string_to_metric_families(resp.read().decode())
        return [(s.labels, float(s.value)) for f in families for s in f.samples if s.name == name]

    def metric(self, name: str, **labels: str) -> float:
        """Current value of one sample."""
        for found, value in self.samples(name):
            if found == labels:
                return value
        raise AssertionError(f"metric {name}{labels} not found")

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """Rows of read-only SQL: through the running sink's query endpoint (in-process, fast for polling),
        or through ``citystream query --json`` once it has exited (that opens the path in a subprocess)."""
        if self.proc is not None and self.proc.poll() is None:
            return query_rows(self.settings, sql)
        rows: list[dict[str, Any]] = query(self.config, sql)
        return rows

    def count(self, view: str) -> int:
        """Rows in a table or view."""
        return int(self.rows(f"SELECT count() AS n FROM {view}")[0]["n"])

    def logs(self) -> str:
        """Everything the sink wrote."""
        return self.log.read_text(errors="replace")


def query(config: Path, sql: str, check: bool = True) -> Any:
    """``citystream query --json SQL`` (a subprocess, so it never opens a chDB path in the test process)."""
    res = citystream("query", "--json", sql, config=config, check=False)
    if check:
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    return res


def produce(settings: Settings, records: Iterable[Event | tuple[str, bytes | None, bytes]]) -> int:
    """Produce events (JSON, keyed by device id) or raw (topic base, key, value) records; returns the count."""
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True, "linger.ms": 5})
    n = 0
    for record in records:
        key: bytes | None
        if isinstance(record, Event):
            topic, key, value = TOPIC_OF[type(record)], record.device_id.encode(), record.model_dump_json().encode()
        else:
            topic, key, value = record
        producer.produce(settings.kafka.topic(topic), value=value, key=key)
        n += 1
    assert producer.flush(30) == 0
    return n


def committed_and_ends(settings: Settings) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Committed offsets of the sink group and high watermarks, for every source partition with data."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": settings.sink.group_id,
                         "enable.auto.commit": False})
    try:
        parts = []
        for spec in topics.TOPICS:
            if spec.name in SINK_TOPICS:
                parts += [TopicPartition(settings.kafka.topic(spec.name), p) for p in range(spec.partitions)]
        ends = {}
        for tp in parts:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0:
                ends[(tp.topic, tp.partition)] = high
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10)
                     if (tp.topic, tp.partition) in ends}
        return committed, ends
    finally:
        consumer.close()
