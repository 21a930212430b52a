"""Faust's flow control on its real consumer, queues and conductor, without Kafka: the worker stall and its fix.

Each test drives faust-streaming 0.15.3 / mode-streaming 0.7.1 objects (``Consumer`` flow-control
bookkeeping, ``_drain_messages``, ``FlowControlEvent``/``FlowControlQueue``, the conductor's
per-partition callback) over in-memory partition logs, so what they show happens on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.conductor import ConductorCompiler
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from citystream.processors import faust_fixes

FRAMES = "unit.raw.frames"
READINGS = "unit.raw.readings"
CHANGELOG = "unit.worker-sensor-state-changelog"


class MemoryConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with its broker thread replaced by in-memory partition logs.

    Everything above the thread (getmany, the fetch loop, active/paused/buffered partitions,
    perform_seek, acks and the committable offset) is Faust's. ``_getmany`` is a long poll: it
    returns what the *currently* active partitions hold, waiting up to 20 ms for a seek to bring
    records, like aiokafka's ``fetched_records`` called with Faust's live set of active partitions.
    """

    def setup(self, ends: dict[Any, int], committed: dict[Any, int], batch: int) -> None:
        self.ends, self.committed, self.batch = dict(ends), dict(committed), batch
        self.position = dict(committed)
        self.wakeup = asyncio.Event()
        self.after_seek: Callable[[], Awaitable[None]] | None = None

    def _available(self, active: Any) -> dict[Any, list[Any]]:
        found = {}
        for tp in sorted(active or (), key=lambda t: (t.topic, t.partition)):
            first = self.position.get(tp, 0)
            last = min(self.ends.get(tp, 0), first + self.batch)
            if first < last:
                self.position[tp] = last
                found[tp] = [ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, ())
                             for o in range(first, last)]
        return found

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:
        found = self._available(active_partitions)
        if not found:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), 0.02)
            except TimeoutError:
                pass
            found = self._available(active_partitions)
        return found

    async def seek_to_committed(self) -> dict[Any, int]:
        self.position.update(self.committed)
        self.wakeup.set()
        if self.after_seek is not None:  # the reply still travels back from the consumer thread
            await self.after_seek()
        return dict(self.committed)

    async def _seek(self, partition: Any, offset: int) -> None:
        self.position[partition] = offset
        self.wakeup.set()

    def assignment(self) -> set[Any]:
        return set(self.ends)

    def highwater(self, tp: Any) -> int:
        return self.ends[tp]


def make_consumer(tmp_path: Path, callback: Callable[[Any], Awaitable[None]], ends: dict[Any, int],
                  committed: dict[Any, int], batch: int = 6) -> tuple[faust.App, MemoryConsumer]:
    """A Faust app whose topics all take acks, and a MemoryConsumer on it delivering to ``callback``."""
    app = faust.App("flow-test", broker="kafka://127.0.0.1:9", store="memory://", datadir=str(tmp_path))
    app.topics.acks_enabled_for = lambda topic: topic != CHANGELOG
    consumer = MemoryConsumer(app.transport, callback=callback, on_partitions_revoked=None,
                              on_partitions_assigned=None)
    consumer.setup(ends, committed, batch)
    consumer._committed_offset.update(committed)
    consumer._set_active_tps(set(ends))
    return app, consumer


async def run_loop(consumer: MemoryConsumer) -> tuple[asyncio.Task[None], SimpleNamespace]:
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    return asyncio.ensure_future(consumer._drain_messages(fetcher)), fetcher


async def stop_loop(task: asyncio.Task[None], fetcher: SimpleNamespace) -> None:
    fetcher._stopped.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def until(done: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    for _ in range(int(timeout_s / 0.01)):
        if done():
            return True
        await asyncio.sleep(0.01)
    return done()


# --- root cause: records fetched after recovery's seek are cleared by flow_control.resume() ----------------


def resume_after_recovery(tmp_path: Path, *, fetch_in_flight: bool,
                          arrivals: bool = True) -> tuple[list[int], int | None, bool]:
    """A restart with a backlog: frames 4..9 wait (committed 4), the sensor table recovers, streams resume.

    Follows ``Recovery.on_recovery_completed`` step by step while the fetch loop runs (its flow was
    resumed for the changelogs): resume the stream partitions, ``perform_seek()`` (the committed
    offsets come back from the consumer thread after the fetch loop has already handed the first
    batch, 4..9, to the agent's queue), ``app.flow_control.resume()``, ``consumer.resume_flow()``.
    With ``arrivals`` frames 10..13 arrive afterwards. ``fetch_in_flight``: the fetch of 4..9 was issued before the seek
    (a long poll) rather than after it.
    Returns the offsets the agent processed, the offset Faust would commit, and whether the partition
    is stuck with records waiting.
    """
    tp, changelog = TP(FRAMES, 0), TP(CHANGELOG, 0)

    async def scenario() -> tuple[list[int], int | None, bool]:
        queue: Any = None

        async def hand_over(message: Any) -> None:  # the conductor's put into the agent's channel queue
            queue.put_nowait(message)

        app, consumer = make_consumer(tmp_path, hand_over, {tp: 10, changelog: 0}, {tp: 4, changelog: 0})
        queue = app.FlowControlQueue(maxsize=100, clear_on_resume=True)  # what every agent channel uses

        async def first_batch_handed_over() -> None:
            await until(lambda: queue.qsize() >= 6)

        consumer.after_seek = first_batch_handed_over
        # recovery: stream partitions paused, flow resumed so that the changelogs are read
        consumer.pause_partitions({tp})
        app.flow_control.resume()
        consumer.resume_flow()
        task, fetcher = await run_loop(consumer)
        await asyncio.sleep(0.05 if fetch_in_flight else 0)
        if not fetch_in_flight:
            consumer.wakeup.set()  # let the idle poll return, so the next fetch starts after the seek began
        # Recovery.on_recovery_completed
        consumer.resume_partitions({tp})
        await consumer.perform_seek()
        app.flow_control.resume()
        consumer.resume_flow()
        if arrivals:
            consumer.ends[tp] = 14  # gateways go on sending: 10..13 arrive
        # the agent (idle until now): takes what its queue holds and acknowledges it
        processed: list[int] = []

        async def agent() -> None:
            while True:
                message = await queue.get()
                processed.append(message.offset)
                consumer.ack(message)

        worker = asyncio.ensure_future(agent())
        await until(lambda: len(processed) >= consumer.ends[tp] - 4, 1.0)
        worker.cancel()
        await stop_loop(task, fetcher)
        await asyncio.gather(worker, return_exceptions=True)
        commit = consumer._new_offset(tp)
        stuck = commit is None and consumer.highwater(tp) > 4  # records wait, the commit cannot move
        return processed, commit, stuck

    return asyncio.run(scenario())


@pytest.mark.unit
@pytest.mark.parametrize("fetch_in_flight", [False, True])
@pytest.mark.parametrize("arrivals", [False, True])
def test_records_fetched_after_recoverys_seek_are_all_processed_and_committed(
        tmp_path: Path, fetch_in_flight: bool, arrivals: bool) -> None:
    assert faust_fixes.apply()
    processed, commit, stuck = resume_after_recovery(tmp_path, fetch_in_flight=fetch_in_flight, arrivals=arrivals)
    end = 14 if arrivals else 10
    assert sorted(set(processed)) == list(range(4, end)), processed
    assert commit == end and not stuck


@pytest.mark.unit
def test_upstream_resume_clears_records_fetched_after_the_seek(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream, unpatched: 4..9 are cleared from the agent's queue unprocessed.

    With nothing fetched afterwards the commit stays at 4 for good (the watchdog's stall); when
    10..13 follow, the read offset the seek left at 4 makes 5..10 a "gap" and Faust commits 11 with
    4..9 never processed (the issue's "committed offset 29 while offset 19 had no output"). When this
    fails, upstream changed: re-check faust_fixes and its pin.
    """
    assert faust_fixes.apply()
    monkeypatch.setattr(faust.transport.consumer.Consumer, "_drain_messages", faust_fixes.upstream_drain_messages())
    monkeypatch.setattr(FlowControlEvent, "resume", faust_fixes.upstream_flow_resume())
    assert resume_after_recovery(tmp_path, fetch_in_flight=True, arrivals=False) == ([], None, True)
    processed, commit, _stuck = resume_after_recovery(tmp_path, fetch_in_flight=True, arrivals=True)
    assert processed == [10, 11, 12, 13] and commit == 11


@pytest.mark.unit
def test_the_seek_guard_alone_does_not_prevent_the_stall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faust#596's guard (the patch before issue 14) on the same run: 4..9 lost from the queue, the commit stuck."""
    assert faust_fixes.apply()
    monkeypatch.setattr(FlowControlEvent, "resume", faust_fixes.upstream_flow_resume())
    processed, commit, stuck = resume_after_recovery(tmp_path, fetch_in_flight=True, arrivals=True)
    assert processed == [10, 11, 12, 13] and commit is None and stuck


@pytest.mark.unit
def test_a_gap_never_covers_delivered_records_nor_the_one_being_delivered(tmp_path: Path) -> None:
    tp = TP(FRAMES, 0)

    async def gaps(exact: bool) -> list[tuple[int, int]]:
        _app, consumer = make_consumer(tmp_path, _noop, {tp: 20}, {tp: 4})
        old, faust_fixes.exact_gaps = faust_fixes.exact_gaps, exact
        try:
            await faust_fixes._add_gap(consumer, {5, 6, 8}, tp, 5, 12)  # read offset 4, record 12 arrives
        finally:
            faust_fixes.exact_gaps = old
        return sorted((i.begin, i.end - 1) for i in consumer._gap[tp])

    assert asyncio.run(gaps(True)) == [(7, 7), (9, 11)]
    assert asyncio.run(gaps(False)) == [(5, 12)]  # upstream: delivered 5, 6, 8 and record 12 itself


# --- lead (a): a partition removed by on_buffer_full returns only through a pending pressure-drop callback ----


@pytest.mark.unit
def test_a_buffer_full_partition_stays_inactive_while_other_partitions_keep_the_queue_above_the_drop_mark(
        tmp_path: Path) -> None:
    a, b = TP(FRAMES, 0), TP(FRAMES, 1)

    async def scenario() -> None:
        app = faust.App("flow-a", broker="kafka://127.0.0.1:9", store="memory://", datadir=str(tmp_path))
        chan = app.topic(FRAMES, key_serializer="raw", value_serializer="raw")
        chan._queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # high mark 8, drop mark 4
        _app, consumer = make_consumer(tmp_path, _noop, {a: 100, b: 100}, {a: 0, b: 0})
        app.consumer = consumer
        app.flow_control.resume()
        compiler = ConductorCompiler()
        deliver = {tp: compiler.build(app.topics, tp, {chan}) for tp in (a, b)}  # the conductor's callbacks
        offsets = {a: 0, b: 0}

        async def fetch(tp: Any) -> None:
            record = ConsumerRecord(tp.topic, tp.partition, offsets[tp], 0, 0, b"k", b"v", None, 1, 1, ())
            offsets[tp] += 1
            await deliver[tp](consumer._to_message(tp, record))

        for _ in range(9):
            await fetch(a)
        assert a not in consumer._active_partitions and a in consumer._buffered_partitions
        app.flow_control.clear()  # a rebalance or a resume: the queue is emptied, a's callback stays pending
        queue = chan.queue
        assert queue.qsize() == 0 and len(queue._pending_pressure_drop_callbacks) == 1
        for _ in range(6):
            await fetch(b)
        for _ in range(50):  # the agent takes one, partition b brings one: the queue stays above the drop mark
            queue.get_nowait()
            await fetch(b)
        assert a not in consumer._active_partitions  # not fetched while b keeps the queue above 4
        while queue.qsize() > 4:  # b's backlog ends: at the drop mark the agent's get fires a pending callback
            queue.get_nowait()
        queue.get_nowait()
        assert a in consumer._active_partitions

    asyncio.run(scenario())


async def _noop(message: Any) -> None:
    return None


# --- lead (b): the conductor awaits one full channel, so every topic waits ----------------------------------


@pytest.mark.unit
def test_a_full_frames_queue_blocks_the_fetch_loop_for_readings_too(tmp_path: Path) -> None:
    frames, readings = TP(FRAMES, 0), TP(READINGS, 0)

    async def scenario() -> tuple[int, int]:
        app = faust.App("flow-b", broker="kafka://127.0.0.1:9", store="memory://", datadir=str(tmp_path))
        frames_chan = app.topic(FRAMES, key_serializer="raw", value_serializer="raw").clone(is_iterator=True)
        frames_chan._queue = app.FlowControlQueue(maxsize=2, clear_on_resume=True)
        readings_chan = app.topic(READINGS, key_serializer="raw", value_serializer="raw").clone(is_iterator=True)
        handlers: dict[Any, Callable[[Any], Awaitable[None]]] = {}

        async def conductor(message: Any) -> None:
            await handlers[message.tp](message)

        _app, consumer = make_consumer(tmp_path, conductor, {frames: 20, readings: 20}, {frames: 0, readings: 0},
                                       batch=5)
        app.consumer = consumer
        consumer.app = app
        app.topics.acks_enabled_for = lambda topic: True
        app.flow_control.resume()
        compiler = ConductorCompiler()
        handlers[frames] = compiler.build(app.topics, frames, {frames_chan})
        handlers[readings] = compiler.build(app.topics, readings, {readings_chan})
        task, fetcher = await run_loop(consumer)
        await asyncio.sleep(0.3)  # nobody takes frames (a saturated frames agent); readings are taken at once
        got = readings_chan.queue.qsize()
        await stop_loop(task, fetcher)
        return frames_chan.queue.qsize(), got

    frames_held, readings_got = asyncio.run(scenario())
    assert frames_held == 2
    assert readings_got <= 5, readings_got  # readings wait behind the frames channel's put


@pytest.mark.unit
@pytest.mark.parametrize("faust_version, mode_version", [("0.15.4", "0.7.1"), ("0.15.3", "0.8.0")])
def test_the_patch_refuses_an_unverified_faust_or_mode_version(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture,
                                                               faust_version: str, mode_version: str) -> None:
    monkeypatch.setattr(faust_fixes, "_state", {"applied": False, "version": None})
    monkeypatch.setattr(faust_fixes, "faust_version", lambda: faust_version)
    monkeypatch.setattr(faust_fixes, "mode_version", lambda: mode_version)
    with caplog.at_level("ERROR", logger="citystream.processors.faust_fixes"):
        assert not faust_fixes.apply()
    assert any("NOT applied" in r.getMessage() and f"{faust_version}/{mode_version}" in r.getMessage()
               for r in caplog.records)
