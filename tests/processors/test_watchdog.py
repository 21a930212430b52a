"""Worker liveness: a stalled worker stops with exit code 3, a busy or idle one does not."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from citystream.processors.watchdog import STALLED_EXIT, StallWatch, input_positions
from citystream.schemas.topics import RAW_FRAMES
from citystream.settings import Settings
from tests.processors.worker_helpers import (
    all_committed,
    committed_and_ends,
    plate_frames,
    produce,
    start_worker,
    stop_worker,
    wait_for_metric,
    worker_settings_for,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
def test_only_a_partition_with_waiting_records_and_a_still_offset_is_stalled() -> None:
    clock = Clock()
    watch = StallWatch(30, clock)
    assert watch.stalled({"busy": (10, 50), "idle": (50, 50), "stuck": (7, 9)}) == []
    clock.now += 29
    assert watch.stalled({"busy": (20, 50), "idle": (50, 50), "stuck": (7, 9)}) == []
    clock.now += 1
    assert watch.stalled({"busy": (30, 60), "idle": (50, 50), "stuck": (7, 9)}) == ["stuck"]
    clock.now += 29
    assert watch.stalled({"busy": (40, 60), "idle": (50, 50), "stuck": (8, 9)}) == []  # it moved: clock restarts
    clock.now += 29
    assert watch.stalled({"busy": (40, 60), "idle": (50, 50), "stuck": (8, 9)}) == []
    clock.now += 1
    assert watch.stalled({"busy": (40, 60), "idle": (50, 50), "stuck": (8, 9)}) == ["busy", "stuck"]


@pytest.mark.unit
def test_reset_forgotten_partitions_and_a_zero_timeout_never_report() -> None:
    clock = Clock()
    watch = StallWatch(5, clock)
    watch.stalled({"a": (1, 2)})
    clock.now += 10
    watch.reset()
    assert watch.stalled({"a": (1, 2)}) == []  # e.g. a rebalance happened meanwhile
    clock.now += 10
    assert watch.stalled({"b": (0, 1)}) == []  # "a" was revoked: forgotten
    clock.now += 10
    assert watch.stalled({"a": (1, 2)}) == []
    never = StallWatch(0, clock)
    never.stalled({"a": (1, 2)})
    clock.now += 1e6
    assert never.stalled({"a": (1, 2)}) == []


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self) -> None:
        self._committed_offset = {TP("in", 0): 5, TP("in", 1): None, TP("other", 0): 1}
        self.high = {TP("in", 0): 9, TP("in", 1): 3, TP("in", 2): None, TP("other", 0): 4}

    def assignment(self) -> set[TP]:
        return set(self.high)

    def highwater(self, tp: TP) -> int | None:
        return self.high[tp]


@pytest.mark.unit
def test_input_positions_reads_committed_offsets_and_high_water_marks_of_input_partitions() -> None:
    assert input_positions(FakeConsumer(), ["in"]) == {TP("in", 0): (5, 9), TP("in", 1): (0, 3)}


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (the worker's vision processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Stop (SIGSTOP) the processes, continue them on exit."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_whose_vision_hangs_exits_3_and_its_restart_finishes_the_input(settings: Settings,
                                                                               tmp_path: Path) -> None:
    s = worker_settings_for(settings, tmp_path)
    s = s.model_copy(update={"worker": s.worker.model_copy(update={"stall_timeout_s": 8.0})})
    config, log_path = tmp_path / "worker.yaml", tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = start_worker(s, config, log)
        try:
            assert wait_for_metric(proc, s.metrics.port, "citystream_worker_ready", 1, 90) == 1
            produce(s, plate_frames(0, 2))
            assert wait_for_metric(proc, s.metrics.port, "citystream_worker_frames_total", 2, 120) >= 2
            vision = _children(proc.pid)
            assert vision, "the worker has no vision process"
            with frozen(vision):  # vision hangs: frames wait in the input, nothing is processed
                produce(s, plate_frames(2, 6))
                deadline = time.monotonic() + 120
                while proc.poll() is None and b"worker stalled" not in log_path.read_bytes():
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.5)
            code = proc.wait(90)
        finally:
            if proc.poll() is None:
                stop_worker(proc)
        text = log_path.read_text()
        assert code == STALLED_EXIT, text[-3000:]
        assert "worker stalled" in text and "raw.frames" in text
        diagnostics = text[text.index("worker stall diagnostics"):]
        assert "agent_tracebacks" in diagnostics and "unreadable" not in diagnostics, diagnostics[:4000]

        proc = start_worker(s, config, log)  # the supervisor's restart: it reads from the committed offsets
        try:
            assert wait_for_metric(proc, s.metrics.port, "citystream_worker_ready", 1, 90) == 1
            deadline = time.monotonic() + 120
            while True:
                committed, ends = committed_and_ends(s, RAW_FRAMES)
                if all_committed(committed, ends):
                    break
                assert proc.poll() is None and time.monotonic() < deadline, (committed, ends,
                                                                             log_path.read_text()[-3000:])
                time.sleep(1)
        finally:
            assert stop_worker(proc) == 0, log_path.read_text()[-3000:]
