"""What a chaos run checks at the end: every published seq against the store, Kafka and the views.

The gateways' own seq stores say what was published; the analyst view ``v_sensor_readings`` and
Kafka's ``raw.frames`` say what arrived; the worker group's committed offsets say whether every frame
was analysed; the ``v_*`` views must hold each ``event_id`` once.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from citystream.clickhouse import query_rows
from citystream.schemas import migrate as schema
from citystream.schemas.topics import RAW_FRAMES
from citystream.settings import Settings


def published_seqs(state_dir: Path, prefix: str) -> dict[str, dict[str, int]]:
    """stream -> gateway -> next seq, read from the gateways' own seq stores."""
    out: dict[str, dict[str, int]] = {"reading": {}, "frame": {}}
    for db in sorted(state_dir.glob(f"{prefix}-gw-*.sqlite3")):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            for gateway, stream, nxt in conn.execute("SELECT gateway, stream, next FROM seq"):
                if stream in out:
                    out[stream][gateway] = int(nxt)
        finally:
            conn.close()
    return out


def spool_left(state_dir: Path, prefix: str) -> int:
    """Rows still waiting in the gateways' spools."""
    left = 0
    for db in state_dir.glob(f"{prefix}-gw-*.sqlite3"):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            left += int(conn.execute("SELECT count(*) FROM spool").fetchone()[0])
        finally:
            conn.close()
    return left


def stored_reading_seqs(settings: Settings, prefix: str) -> dict[str, set[int]]:
    """gateway -> distinct reading seqs in the analyst view."""
    rows = query_rows(settings, f"SELECT gateway_id AS g, groupUniqArray(seq) AS seqs FROM "
                                f"{schema.view_of(schema.SENSOR_READINGS)} WHERE gateway_id LIKE '{prefix}-gw-%' "
                                f"GROUP BY gateway_id")
    return {str(r["g"]): {int(s) for s in r["seqs"]} for r in rows}


def view_duplicates(settings: Settings) -> dict[str, int]:
    """Rows minus distinct event ids in each analyst view (duplicates an analyst would see)."""
    out = {}
    for table in (schema.SENSOR_READINGS, schema.PLATE_READS, schema.ALERTS, schema.DEVICE_STATUS):
        row = query_rows(settings, f"SELECT count() - uniqExact(event_id) AS d FROM {schema.view_of(table)}")[0]
        out[table] = int(row["d"])
    return out


def worker_caught_up(settings: Settings) -> bool:
    """Whether the worker group committed every ``raw.frames`` partition to its end (every frame analysed)."""
    topic = settings.kafka.topic(RAW_FRAMES)
    worker = Consumer({**settings.kafka.client_config(), "group.id": settings.kafka.topic(settings.worker.app_id),
                       "enable.auto.commit": False})
    try:
        parts = worker.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: worker.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
        committed = {tp.partition: tp.offset for tp in worker.committed(
            [TopicPartition(topic, p) for p in parts], timeout=30)}
    except KafkaException:
        return False
    finally:
        worker.close()
    return all(committed.get(p, -1) >= end for p, end in ends.items() if end > 0)


def frames_in_kafka(settings: Settings) -> dict[str, set[int]]:
    """gateway -> frame seqs in ``raw.frames``."""
    topic = settings.kafka.topic(RAW_FRAMES)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"chaos-check-{time.time_ns()}",
                         "enable.auto.commit": False})
    seqs: dict[str, set[int]] = {}
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        remaining = sum(ends.values())
        deadline = time.monotonic() + 120
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None:
                    continue
                remaining -= 1
                headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in msg.headers() or []}
                if "gateway_id" in headers and "seq" in headers:
                    seqs.setdefault(headers["gateway_id"], set()).add(int(headers["seq"]))
    finally:
        consumer.close()
    return seqs


def reconcile(expected: dict[str, int], seen: dict[str, set[int]]) -> dict[str, Any]:
    """published / stored / lost of one stream, with a sample of lost seqs per gateway."""
    published = sum(expected.values())
    lost = {g: sorted(set(range(n)) - seen.get(g, set())) for g, n in expected.items()}
    lost_total = sum(len(v) for v in lost.values())
    return {"published": published, "stored": published - lost_total, "lost": lost_total,
            "lost_seqs": {g: v[:20] for g, v in lost.items() if v}}
