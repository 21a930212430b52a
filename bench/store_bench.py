"""Store benchmarks: raw Kafka produce/consume, raw ``insert_arrow``, and the sink Kafka -> ClickHouse.

The same readings serve all three: they are produced once (the produce ceiling), read back by a plain
consumer (the consume ceiling), turned into the sink's own Arrow blocks and inserted directly (the
insert ceiling, same table and batch size, distinct blocks so deduplication never short-cuts), and
finally consumed by a ``citystream sink`` process whose committed offsets are watched.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from citystream import clickhouse
from citystream.bench import messages
from citystream.bench.common import Entry, Procs, entry, isolated, tag, wait_until
from citystream.bench.kafka_io import CommitWatch, partitions
from citystream.schemas.migrate import migrate
from citystream.schemas.topics import RAW_READINGS
from citystream.settings import Settings
from citystream.sinks.batch import TableRows
from citystream.sinks.clickhouse import FETCH_TUNING
from citystream.sinks.rows import ROUTES, to_row
from citystream.stack.kafka import ensure_topics

DEVICES = 60


def _payloads(count: int) -> list[tuple[bytes, bytes]]:
    out = []
    stamp = messages.now_iso()
    for i in range(count):
        device = f"store-dev-{i % DEVICES:02d}"
        out.append((device.encode(), messages.reading("store-gw", device, i, stamp)))
    return out


def produce(s: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Produce every record (idempotent, lz4, linger 5 ms like the bridge); returns records/s."""
    producer = Producer({**s.kafka.client_config(), "enable.idempotence": True, "linger.ms": 5,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})
    failed: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(120) > 0 or failed:
        raise RuntimeError(f"produce failed: {failed[:3] or 'flush timeout'}")
    return len(records) / (time.perf_counter() - started)


def consume(s: Settings, topic: str, count: int) -> float:
    """Read ``count`` records from the beginning with a plain consumer; returns records/s."""
    consumer = Consumer({**s.kafka.client_config(), **FETCH_TUNING, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})  # the sink's fetch sizes: a like-for-like ceiling
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions(s, topic)])
    got = 0
    started = time.perf_counter()
    deadline = time.monotonic() + 120
    try:
        while got < count and time.monotonic() < deadline:
            got += sum(1 for m in consumer.consume(num_messages=10_000, timeout=0.2) if not m.error())
    finally:
        consumer.close()
    if got < count:
        raise RuntimeError(f"consumer read {got} of {count} records")
    return count / (time.perf_counter() - started)


def insert_ceiling(workdir: Path, config: Path, records: list[tuple[bytes, bytes]], batch: int) -> float:
    """Rows/s of ``insert_arrow`` of the sink's Arrow blocks into ``sensor_readings`` (this process's chDB)."""
    s = isolated(config, tag(), **{"clickhouse.dsn": f"chdb://{workdir / 'ceiling-ch'}",
                                   "clickhouse.database": "bench_ceiling"})
    migrate(clickhouse.connect(s, database=False), s.clickhouse.database)
    client = clickhouse.connect(s)
    route = ROUTES[RAW_READINGS]
    stamp = int(time.time() * 1000)
    blocks = []
    for start in range(0, len(records) - batch + 1, batch):
        rows = TableRows.empty(route.table)
        for offset, (key, value) in enumerate(records[start:start + batch], start):
            row = to_row(route, value)
            row.update(kafka_partition=0, kafka_offset=offset)
            rows.append(row, ("bench", key, value, None))
        blocks.append(rows.to_arrow(stamp))
    if not blocks:
        raise ValueError(f"{len(records)} records do not fill one batch of {batch}")
    started = time.perf_counter()
    for block in blocks:
        client.insert_arrow(route.table, block, database=s.clickhouse.database)
    rate = batch * len(blocks) / (time.perf_counter() - started)
    client.command(f"DROP DATABASE `{s.clickhouse.database}` SYNC")  # its background merges would slow the sink
    return rate


def store_stages(config: Path, procs: Procs, workdir: Path, count: int, batch: int) -> dict[str, Entry]:
    """Kafka and insert ceilings, then the sink process on the same records."""
    name = tag()
    s = isolated(config, name, **{"clickhouse.dsn": f"chdb://{workdir / (name + '-ch')}",
                                  "clickhouse.database": "bench", "sink.batch_rows": batch, "sink.query_port": 0,
                                  "sink.frames_dir": str(workdir / (name + "-frames"))})
    ensure_topics(s)
    topic = s.kafka.topic(RAW_READINGS)
    records = _payloads(count)
    produced = produce(s, topic, records)
    consumed = consume(s, topic, count)
    out: dict[str, Entry] = {
        "ceiling:kafka_produce": entry(produced, "records/s", None, records=count, payload_bytes=len(records[0][1])),
        "ceiling:kafka_consume": entry(consumed, "records/s", None, records=count),
    }
    try:
        insert = insert_ceiling(workdir, config, records, batch)
        out["ceiling:insert_arrow"] = entry(insert, "rows/s", None, batch_rows=batch)
    except Exception as exc:  # the sink is still measured; its ratio then has no ceiling
        insert = 0.0
        out["ceiling:insert_arrow"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    watch = CommitWatch(s, s.sink.group_id, topic)
    sink = procs.start(f"{name}-sink", s, "sink")
    try:
        done = wait_until(lambda: watch.poll() >= count, 300, "sink committed", 0.05, check=lambda: procs.check(sink))
        path = clickhouse.chdb_path(s.clickhouse.dsn)
        assert path is not None
        stored = int(clickhouse.query_rows(s, "SELECT count() AS n FROM sensor_readings")[0]["n"])
    finally:
        watch.close()
        code = procs.stop(sink)
    assert watch.first is not None
    first_at, first_rows = watch.first
    if first_rows >= count:
        raise RuntimeError(f"the sink committed all {count} rows in one window; raise the load or lower the batch")
    rate = (count - first_rows) / (done - first_at)
    out["sink_rows"] = entry(rate, "rows/s", insert or None, batch_rows=batch, records=count, stored=stored,
                             kafka_consume_ratio=round(rate / consumed, 4), target_rows_s=200_000,
                             sink_exit_code=code, measured="between the first and the last offset commit")
    return out
