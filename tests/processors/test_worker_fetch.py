"""The worker's fetch settings against head-of-line blocking: small per-partition fetches.

A frame larger than ``worker.max_partition_fetch_bytes`` must still be read whole (the broker returns a
partition's first record batch whatever its size). How much the setting shortens an alert's wait behind
a frame backlog is measured by the bench (``alert_p99_s_frame_backlog``), not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from citystream.schemas.topics import ALERTS, DLQ, PLATE_READS, RAW_FRAMES, RAW_READINGS
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from tests.processors.worker_helpers import (
    Outputs,
    all_committed,
    committed_and_ends,
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


@pytest.mark.integration
def test_frames_larger_than_the_partition_fetch_limit_are_read_whole(settings: Settings, tmp_path: Path) -> None:
    doc = worker_settings_for(settings, tmp_path).model_dump()
    doc["worker"]["max_partition_fetch_bytes"] = 1024  # every frame is ~50 times larger
    s = Settings(**doc)
    frames = plate_frames(1, 6)
    assert min(len(value) for _, _, value, _ in frames) > 20 * 1024
    series = pm25_series()
    produce(s, frames + [(RAW_READINGS, r.device_id.encode(), to_json(r), []) for r in series])
    outputs = Outputs(s)
    with (tmp_path / "worker.log").open("wb") as log:
        proc = start_worker(s, tmp_path / "worker.yaml", log)
        try:
            seen = wait_for_metric(proc, s.metrics.port, FRAMES, len(frames), 240)
            read = wait_for_metric(proc, s.metrics.port, READINGS, len(series), 60)
        finally:
            code = stop_worker(proc)
    try:
        assert (seen, read, code) == (len(frames), len(series), 0), (tmp_path / "worker.log").read_text()[-3000:]
        outputs.read_to_end()
        sources = {doc["source_event_id"] for _, doc, _ in outputs.records[PLATE_READS]}
        assert len(sources) == len(frames) and not outputs.records[DLQ]
        assert [doc["state"] for _, doc, _ in outputs.records[ALERTS]] == ["raised", "cleared"]
        for base in (RAW_FRAMES, RAW_READINGS):
            committed, ends = committed_and_ends(s, base)
            assert all_committed(committed, ends), (base, committed, ends)
    finally:
        outputs.close()

