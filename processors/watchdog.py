"""Worker liveness: stop a worker whose input waits while nothing of it is processed.

Faust can stall without an error: in 1 of 31 restarts with a backlog and 1 of 8 two-worker
rebalances measured here (faust-streaming 0.15.3), a worker kept running but stopped taking records
from some input partitions. The cause found (issue 14): at the end of recovery Faust cleared the
agents' queues after seeking to the committed offsets, so records fetched in between were never
processed and the commit stopped at them; :mod:`faust_fixes` keeps those queues. The watchdog stays
as a last resort. A stalled worker looks healthy to its supervisor, so the worker watches itself:
every ``CHECK_EVERY_S`` it compares, per assigned input partition, the committed offset with the
partition's high-water mark. A partition with records
waiting whose committed offset has not moved for ``worker.stall_timeout_s`` is stalled; the worker
then logs an ERROR naming the partitions, counts ``citystream_worker_stalls_total``, stops
gracefully (SIGTERM to itself: acknowledged work is committed) and exits with code
:data:`STALLED_EXIT`, so that systemd, Docker (``restart: unless-stopped``) or Kubernetes start it
again. A restarted worker reads from the committed offsets: at least once, nothing skipped. If the
graceful stop itself hangs, the process exits hard after ``HARD_EXIT_AFTER_S``.

The check is off while partitions are being assigned or tables recovered, and with
``stall_timeout_s: 0``. Before stopping, the worker logs :func:`stall_diagnostics` (the agents'
tracebacks and the consumer's flow state) for whoever looks for the cause.

Each check also exports what it read as ``citystream_worker_consumer_lag_messages{topic, partition}``
(:class:`InputLag`: high-water mark minus this worker's committed offset, per assigned input
partition; a revoked partition's series is removed). It is as fresh as the last check: every
``CHECK_EVERY_S`` while the worker is ready, not updated during a rebalance or recovery, nor with
``stall_timeout_s: 0`` (the check does not run then).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from citystream.processors.frames_agent import EMITTER_TASK

STALLED_EXIT = 3
CHECK_EVERY_S = 5.0
HARD_EXIT_AFTER_S = 60.0
Positions = Mapping[Any, tuple[int, int]]  # partition -> (committed offset, high-water mark)


class InputLag:
    """``citystream_worker_consumer_lag_messages{topic, partition}``: input records not yet committed."""

    name = "citystream_worker_consumer_lag_messages"
    _on: weakref.WeakKeyDictionary[CollectorRegistry, InputLag] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the gauge on ``registry``."""
        self.gauge = Gauge(self.name, "High-water mark minus the worker's committed offset, per input partition",
                           ["topic", "partition"], registry=registry)
        self._series: set[tuple[str, str]] = set()

    @classmethod
    def on(cls, registry: CollectorRegistry) -> InputLag:
        """The one InputLag of ``registry`` (created on first use)."""
        found = cls._on.get(registry)
        if found is None:
            found = cls._on[registry] = cls(registry)
        return found

    def update(self, positions: Positions) -> None:
        """Set the lag of every partition in ``positions``; drop the series of partitions no longer there."""
        seen = set()
        for tp, (committed, high) in positions.items():
            key = (str(getattr(tp, "topic", tp)), str(getattr(tp, "partition", "")))
            self.gauge.labels(*key).set(max(0, high - committed))
            seen.add(key)
        for key in self._series - seen:
            self.gauge.remove(*key)
        self._series = seen


class StallWatch:
    """Finds input partitions with records waiting whose committed offset has not moved for ``timeout_s``.

    Every position it is fed also goes to ``lag`` (default: the InputLag of the process's default
    registry, which the worker serves).
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                 lag: InputLag | None = None) -> None:
        """Watch with the given timeout (seconds; 0 never reports) and clock."""
        self.timeout_s = timeout_s
        self.clock = clock
        self.lag = lag if lag is not None else InputLag.on(REGISTRY)
        self._since: dict[Any, tuple[int, float]] = {}  # partition -> (committed offset, when first seen)

    def stalled(self, positions: Positions) -> list[Any]:
        """Feed the current positions; return the partitions stalled for at least ``timeout_s``."""
        self.lag.update(positions)
        now = self.clock()
        found: list[Any] = []
        for tp, (committed, high) in positions.items():
            seen = self._since.get(tp)
            if high <= committed or seen is None or seen[0] != committed:
                self._since[tp] = (committed, now)
            elif self.timeout_s > 0 and now - seen[1] >= self.timeout_s:
                found.append(tp)
        for tp in set(self._since) - set(positions):
            del self._since[tp]
        return found

    def reset(self) -> None:
        """Forget every partition (assignment changing, tables recovering)."""
        self._since.clear()


def input_positions(consumer: Any, topics: Iterable[str]) -> dict[Any, tuple[int, int]]:
    """(committed offset, high-water mark) of the consumer's assigned partitions of ``topics``.

    Reads Faust 0.15.3's consumer bookkeeping (``_committed_offset``); a partition whose high-water
    mark is not known yet is left out.
    """
    wanted = set(topics)
    positions: dict[Any, tuple[int, int]] = {}
    for tp in consumer.assignment():
        if tp.topic not in wanted:
            continue
        high = consumer.highwater(tp)
        if high is None or high < 0:
            continue
        committed = consumer._committed_offset.get(tp)
        positions[tp] = (committed if committed is not None and committed >= 0 else 0, high)
    return positions


def _partitions(tps: Any) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps or ())


def stall_diagnostics(app: Any) -> dict[str, Any]:
    """Where a stalled Faust 0.15.3 worker is stuck: agent and frames-emitter tracebacks, the consumer's flow state.

    Best effort: a value that cannot be read is reported as the error that reading it raised.
    """
    consumer = app.consumer
    probes: dict[str, Callable[[], Any]] = {
        "assigned": lambda: _partitions(consumer.assignment()),
        "active": lambda: _partitions(consumer._active_partitions),
        "paused": lambda: _partitions(consumer._paused_partitions),
        "buffered": lambda: _partitions(consumer._buffered_partitions),
        "flow_active": lambda: consumer.flow_active,
        "unacked_messages": lambda: len(consumer._unacked_messages),
        "producer_buffer": lambda: app.producer.buffer.size,
        "agent_tracebacks": lambda: app.agents.human_tracebacks()[-6000:],
        "emitter_stacks": lambda: task_stacks(EMITTER_TASK)[-3000:],
    }
    found: dict[str, Any] = {}
    for name, probe in probes.items():
        try:
            found[name] = probe()
        except Exception as exc:  # diagnostics must never stop the stop
            found[name] = f"unreadable: {exc!r}"
    return found


def task_stacks(name: str) -> str:
    """Where this loop's tasks called ``name`` wait (tasks an agent started are not in its traceback)."""
    import asyncio
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task.get_name() == name:
            task.print_stack(limit=8, file=out)
    return out.getvalue() or f"no task {name!r}"


def stop_stalled_process(hard_exit_after_s: float = HARD_EXIT_AFTER_S) -> None:
    """Ask this process to stop gracefully (SIGTERM); exit with ``STALLED_EXIT`` if it is still alive later."""
    timer = threading.Timer(hard_exit_after_s, os._exit, args=(STALLED_EXIT,))
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)
