"""Kafka errors while looking up offsets are transient for the sink: it retries instead of exiting."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from citystream.retry import Backoff
from citystream.sinks.clickhouse import COMMITTED_ATTEMPTS
from citystream.sinks.frames import CHECK_EVERY_S, MAX_CHECK_BACKOFF_S, FrameArchiver, PendingFrame
from citystream.sinks.replay import committed_offsets

pytestmark = pytest.mark.unit


class FlakyConsumer:
    """``committed()`` raises ``_TIMED_OUT`` for the first ``failures`` calls (a restarting broker)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list[TopicPartition]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[Any]:
        return []


class NoWait(threading.Event):
    """A stop event whose waits return at once (never set)."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def archiver(worker: FlakyConsumer, clock: FakeClock) -> FrameArchiver:
    arch = FrameArchiver.__new__(FrameArchiver)
    arch.clock = clock
    arch.worker = worker
    arch.consumer = worker
    arch.topic = "raw.frames"
    arch.pending = [PendingFrame("raw.frames", 0, 5, None, b"")]
    arch.pending_bytes = 0
    arch.paused = False
    arch.next_check = 0.0
    arch.failures = 0
    arch.backoff = Backoff(CHECK_EVERY_S * 2, MAX_CHECK_BACKOFF_S)
    arch.gate = None
    return arch


def test_frame_archiver_backs_off_on_offset_lookup_errors_and_asks_again() -> None:
    clock = FakeClock()
    worker = FlakyConsumer(failures=3)
    arch = archiver(worker, clock)
    delays = []
    for _ in range(3):
        arch.step()  # must not raise
        delays.append(arch.next_check - clock.now)
        clock.now = arch.next_check
    assert worker.calls == 3 and arch.failures == 3
    assert delays == sorted(delays) and delays[0] > 0, f"backoff should grow: {delays}"
    arch.step()  # the broker answers again: the lookup goes through (nothing is committed by the worker yet)
    assert worker.calls == 4 and arch.failures == 0


def test_sink_rides_out_committed_offsets_timeouts_on_assignment() -> None:
    parts = [TopicPartition("raw.readings", 0)]
    flaky = FlakyConsumer(failures=COMMITTED_ATTEMPTS - 1)
    found = committed_offsets(flaky, parts, NoWait(), COMMITTED_ATTEMPTS)
    assert found is not None and found[0].offset == 0 and flaky.calls == COMMITTED_ATTEMPTS
    assert committed_offsets(FlakyConsumer(failures=COMMITTED_ATTEMPTS), parts, NoWait(),
                             COMMITTED_ATTEMPTS) is None, "gives up, does not raise"
