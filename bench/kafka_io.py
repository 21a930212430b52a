"""Kafka sides of the benchmark: counting what arrived (distinct sequence numbers), committed offsets."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from citystream.settings import Settings


def partitions(settings: Settings, topic: str) -> list[int]:
    """Partition numbers of a topic."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-meta-{uuid.uuid4().hex[:6]}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}")
        return sorted(meta.partitions)
    finally:
        consumer.close()


def _seq(msg: Any) -> int | None:
    for key, value in msg.headers() or []:
        if key == "seq":
            return int(value)
    try:
        seq = orjson.loads(msg.value()).get("seq")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    return int(seq) if isinstance(seq, int) else None


class Arrivals(threading.Thread):
    """Reads a topic from the beginning in a thread; counts records and distinct ``seq`` per key."""

    def __init__(self, settings: Settings, topic: str) -> None:
        """Assign every partition of ``topic`` from offset 0 (call ``start()`` to begin)."""
        super().__init__(daemon=True)
        self.consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.max.bytes": 64 * 1024 * 1024})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions(settings, topic)])
        self.records: dict[str, int] = {}
        self.seqs: dict[str, set[int]] = {}
        self.last: dict[str, float] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        """Consume until stopped."""
        try:
            while not self.stopping.is_set():
                for msg in self.consumer.consume(num_messages=2000, timeout=0.1):
                    if msg.error():
                        continue
                    key = (msg.key() or b"").decode(errors="replace")
                    seq = _seq(msg)
                    now = time.time()
                    with self.lock:
                        self.records[key] = self.records.get(key, 0) + 1
                        if seq is not None:
                            self.seqs.setdefault(key, set()).add(seq)
                        self.last[key] = now
        finally:
            self.consumer.close()

    def distinct(self, key: str) -> int:
        """Distinct sequence numbers seen for one key (device id)."""
        with self.lock:
            return len(self.seqs.get(key, ()))

    def stop(self) -> None:
        """Stop consuming and close."""
        self.stopping.set()
        self.join(10)


class CommitWatch:
    """Polls a group's committed offsets (without joining the group); remembers when they first moved."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        """Watch ``group`` on ``topic``."""
        self.tps = [TopicPartition(topic, p) for p in partitions(settings, topic)]
        self.consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
        self.first: tuple[float, int] | None = None
        self.value = 0

    def poll(self) -> int:
        """Sum of the committed offsets (= records the group finished, reading from offset 0)."""
        got = self.consumer.committed(self.tps, timeout=10)
        self.value = sum(max(tp.offset, 0) for tp in got)
        if self.value > 0 and self.first is None:
            self.first = (time.time(), self.value)
        return self.value

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()
