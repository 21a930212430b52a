"""Faust's committable offset on its real consumer: never past an unprocessed first record (faust_fixes).

In a rebalance loop a whole series, the first 33 records of a ``raw.readings`` partition, was committed
without being processed: they were fetched, cleared from the agent's queue by the rebalance, and not
fetched again, since ``seek_to_committed`` leaves a partition without a committed offset where it is.
The records after them were processed, and upstream's ``_new_offset`` committed their run because it
checks where a run starts only against a truthy committed offset (and then off by one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types.tuples import Message

from citystream.processors import faust_fixes

pytestmark = pytest.mark.unit
TOPIC = "unit.raw.readings"
TP = TopicPartition(TOPIC, 5)


class SeekConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with the broker's answers replaced: one partition, its committed offset, its start."""

    committed: int | None = None
    log_start = 0
    sought: list[tuple[Any, int]]

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return {TP: self.committed}

    async def earliest_offsets(self, *partitions: Any) -> dict[Any, int]:
        return {tp: self.log_start for tp in partitions}

    async def _seek(self, partition: Any, offset: int) -> None:
        self.sought.append((partition, offset))

    def assignment(self) -> set[Any]:
        return {TP}


async def _no_callback(message: Any) -> None:
    raise AssertionError("nothing is fetched here")


def assigned(tmp_path: Path, committed: int | None, log_start: int = 0) -> SeekConsumer:
    """A consumer just assigned ``TP`` (``perform_seek`` done, as at the end of recovery)."""
    assert faust_fixes.apply()

    async def make() -> SeekConsumer:
        app = faust.App("head-test", broker="kafka://127.0.0.1:9", store="memory://", datadir=str(tmp_path))
        app.topics.acks_enabled_for = lambda topic: True  # as for an agent's input topic
        consumer = SeekConsumer(app.transport, callback=_no_callback, on_partitions_revoked=None,
                                on_partitions_assigned=None)
        consumer.committed, consumer.log_start, consumer.sought = committed, log_start, []
        await consumer.perform_seek()
        return consumer

    return asyncio.run(make())


def ack(consumer: SeekConsumer, offsets: range) -> None:
    for offset in offsets:
        consumer.ack(Message(TOPIC, TP.partition, offset, 0.0, 0, {}, b"pm-4", b"{}", None, tp=TP))


def test_no_committed_offset_the_unprocessed_first_records_hold_the_commit(tmp_path: Path) -> None:
    consumer = assigned(tmp_path, committed=None)
    assert consumer.sought == [(TP, 0)]  # what was fetched before is read again from the log start
    ack(consumer, range(33, 66))  # the next series was processed, the first one (0..32) was not
    assert consumer._new_offset(TP) is None
    ack(consumer, range(0, 33))
    assert consumer._new_offset(TP) == 66


def test_the_record_at_the_committed_offset_holds_the_commit(tmp_path: Path) -> None:
    consumer = assigned(tmp_path, committed=39)
    assert consumer.sought == []  # Faust's own seek to the committed offset (39) is enough
    ack(consumer, range(40, 45))
    assert consumer._new_offset(TP) is None
    ack(consumer, range(39, 40))
    assert consumer._new_offset(TP) == 45


def test_a_partition_whose_log_starts_later_commits_from_its_start(tmp_path: Path) -> None:
    consumer = assigned(tmp_path, committed=None, log_start=120)  # older records deleted by retention
    ack(consumer, range(120, 130))
    assert consumer._new_offset(TP) == 130


@pytest.mark.parametrize("committed, first_acked, expected", [(None, 33, 66), (39, 40, 45)])
def test_upstream_commits_past_the_unprocessed_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    committed: int | None, first_acked: int, expected: int) -> None:
    monkeypatch.setattr(faust_fixes, "strict_head", False)
    consumer = assigned(tmp_path, committed=committed)
    consumer._committed_offset[TP] = committed  # upstream's bookkeeping: no log start for a partition never committed
    ack(consumer, range(first_acked, expected))
    assert consumer._new_offset(TP) == expected
