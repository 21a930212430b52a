"""faust_fixes on Faust's real consumer loop: a seek during a stale batch re-reads, a dropped record is re-read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from citystream.processors import faust_fixes

TOPIC = "unit.raw.frames"
TP = TopicPartition(TOPIC, 0)


class LogConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with its broker thread replaced by one in-memory partition log.

    Everything above the thread (getmany, the fetch loop, perform_seek, seek, read offsets) is Faust's.
    """

    def setup(self, end: int, committed: int, batch: int) -> None:
        self.end, self.committed, self.batch, self.position, self.fetches = end, committed, batch, committed, 0
        self.fetched_in: dict[int, int] = {}
        self._set_active_tps({TP})

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        first, last = self.position, min(self.end, self.position + self.batch)
        if first >= last:
            await asyncio.sleep(0.01)
            return {}
        self.fetches += 1
        self.position = last
        for offset in range(first, last):
            self.fetched_in[offset] = self.fetches
        return {TP: [ConsumerRecord(TOPIC, 0, o, 0, 0, b"cam-1", b"frame", None, 3, 5, ()) for o in range(first, last)]}

    async def seek_to_committed(self) -> dict[Any, int]:
        self.position = self.committed
        return {TP: self.committed}

    async def _seek(self, partition: Any, offset: int) -> None:
        self.position = offset

    def assignment(self) -> set[Any]:
        return {TP}

    def highwater(self, tp: Any) -> int:
        return self.end


async def drain(tmp_path: Path, on_message: Callable[[LogConsumer, Any], Awaitable[None]], done: Callable[[], bool],
                *, committed: int = 4, read_offset: int | None = None,
                listener: faust_fixes.DropListener | None = None) -> LogConsumer:
    """Run Faust's fetch loop over a 10-record partition until ``done()`` (bounded), then stop it."""
    app = faust.App("fix-test", broker="kafka://127.0.0.1:9", store="memory://", datadir=str(tmp_path))
    app.topics.acks_enabled_for = lambda topic: True  # as for an agent's input topic
    if listener is not None:
        faust_fixes.watch(app, listener)

    async def callback(message: Any) -> None:
        await on_message(consumer, message)

    consumer = LogConsumer(app.transport, callback=callback, on_partitions_revoked=None,
                           on_partitions_assigned=None)
    consumer.setup(end=10, committed=committed, batch=6)
    consumer._committed_offset[TP] = committed
    if read_offset is not None:
        consumer._read_offset[TP] = read_offset
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    task = asyncio.ensure_future(consumer._drain_messages(fetcher))
    for _ in range(500):
        if done() or task.done():
            break
        await asyncio.sleep(0.01)
    fetcher._stopped.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return consumer


def seek_during_a_stale_batch(tmp_path: Path) -> list[tuple[int, int]]:
    """Recovery seeks back to the committed offset (4) while record 5 of a batch fetched before is delivered."""
    delivered: list[tuple[int, int]] = []

    async def on_message(consumer: LogConsumer, message: Any) -> None:
        delivered.append((message.offset, consumer.fetched_in[message.offset]))
        if message.offset == 5 and consumer.fetches == 1:
            await consumer.perform_seek()

    def reread() -> bool:
        return {o for o, batch in delivered if batch > 1} >= set(range(4, 10))

    asyncio.run(drain(tmp_path, on_message, reread))
    return delivered


@pytest.mark.unit
def test_a_seek_during_a_stale_batch_reads_every_record_again(tmp_path: Path) -> None:
    assert faust_fixes.apply()
    delivered = seek_during_a_stale_batch(tmp_path)
    # the seek promised a re-read from the committed offset: every record from 4 on comes again
    assert {o for o, batch in delivered if batch > 1} == set(range(4, 10)), delivered


@pytest.mark.unit
def test_upstream_loop_drops_the_records_a_seek_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug the patch exists for; when this fails, upstream changed: re-check faust_fixes and its pin."""
    assert faust_fixes.apply()
    monkeypatch.setattr(faust.transport.consumer.Consumer, "_drain_messages", faust_fixes.upstream_drain_messages())
    delivered = seek_during_a_stale_batch(tmp_path)
    assert {o for o, batch in delivered if batch > 1} == {9}, delivered  # 4..8 dropped as "already read"


@pytest.mark.unit
def test_a_dropped_unprocessed_record_is_reported_counted_and_read_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert faust_fixes.apply()
    delivered: list[int] = []
    reported: list[tuple[str, int, int]] = []

    async def on_message(consumer: LogConsumer, message: Any) -> None:
        delivered.append(message.offset)

    def listener(topic: str, partition: int, offset: int) -> None:
        reported.append((topic, partition, offset))

    def run() -> None:
        asyncio.run(drain(tmp_path, on_message, lambda: set(delivered) >= set(range(4, 10)), read_offset=8,
                          listener=listener))

    with caplog.at_level(logging.WARNING, logger="citystream.processors.faust_fixes"):
        run()
    assert reported == [(TOPIC, 0, 4)]
    assert set(delivered) >= set(range(4, 10)), delivered  # 4..7 were below the stale read offset 8
    warnings = [r for r in caplog.records if "dropped a record" in r.getMessage()]
    assert [(r.topic, r.partition, r.offset) for r in warnings] == [(TOPIC, 0, 4)]  # type: ignore[attr-defined]
