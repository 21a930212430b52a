"""``citystream worker`` restarted while frames and readings wait in its input topics: nothing is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from citystream.schemas.topics import RAW_FRAMES, RAW_READINGS
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from tests.processors.worker_helpers import (
    Record,
    all_committed,
    committed_and_ends,
    metric_or_none,
    plate_frames,
    pm25_series,
    produce,
    start_worker,
    stop_worker,
    wait_for_metric,
    worker_settings_for,
)

FRAMES = "citystream_worker_frames_total"
READINGS = "citystream_worker_readings_total"
DROPPED = "citystream_worker_dropped_records_total"


def backlog(first_seq: int, frames: int) -> list[Record]:
    """``frames`` plate frames over four cameras (several partitions) and a PM2.5 series (table changelog)."""
    records = plate_frames(first_seq, frames)
    for reading in pm25_series():
        moved = reading.model_copy(update={"seq": reading.seq + 1000 * first_seq})
        records.append((RAW_READINGS, b"pm-1", to_json(moved), []))
    return records


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_restarted_with_a_backlog_processes_all_of_it(settings: Settings, tmp_path: Path) -> None:
    s = worker_settings_for(settings, tmp_path)
    first, second = backlog(0, 4), backlog(100, 12)
    readings = len(pm25_series())
    config, log_path = tmp_path / "worker.yaml", tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = start_worker(s, config, log)
        try:
            wait_for_metric(proc, s.metrics.port, "citystream_worker_ready", 1, 90)
            produce(s, first)  # the first run fills the sensor table's changelog: the restart recovers it
            seen = wait_for_metric(proc, s.metrics.port, FRAMES, 4, 120)
            assert seen >= 4 and wait_for_metric(proc, s.metrics.port, READINGS, readings, 60) >= readings, (
                log_path.read_text()[-3000:])
        finally:
            assert stop_worker(proc) == 0, log_path.read_text()[-3000:]

        produce(s, second)  # waits in the input topics while no worker runs
        proc = start_worker(s, config, log)
        try:
            frames = wait_for_metric(proc, s.metrics.port, FRAMES, 12, 180)
            read = wait_for_metric(proc, s.metrics.port, READINGS, readings, 60)
            dropped = metric_or_none(s.metrics.port, DROPPED)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert frames >= 12 and read >= readings, (frames, read, dropped, log_path.read_text()[-3000:])
        finally:
            code = stop_worker(proc)
    assert code == 0, log_path.read_text()[-3000:]
    # every record of the backlog was acknowledged: the group committed up to the end of both input topics
    for base in (RAW_FRAMES, RAW_READINGS):
        committed, ends = committed_and_ends(s, base)
        assert all_committed(committed, ends), (base, dropped, committed, ends)
