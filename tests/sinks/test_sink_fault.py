"""Fault: the sink is SIGKILLed after an insert and before the commit; the restart stores every event once.

The crash point is the test harness's :class:`tests.sinks.crashing_sink.CrashingSink` (the real sink, which
SIGKILLs itself right after inserting its Nth window, before producing dead letters and committing offsets).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from citystream.settings import Settings
from tests.sinks.crashing_sink import CRASH_MESSAGE
from tests.sinks.factory import alert, plate, reading
from tests.sinks.procs import SinkProcess, committed_and_ends, produce, sink_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def totals(sink: SinkProcess) -> dict[str, int]:
    """Raw rows, distinct ids, analyst-view rows and rollup counts."""
    sql = ("SELECT (SELECT count() FROM sensor_readings) AS raw, (SELECT uniqExact(event_id) FROM sensor_readings) "
           "AS ids, (SELECT count() FROM v_sensor_readings) AS view, (SELECT sum(readings) FROM v_sensor_1m) AS m1, "
           "(SELECT sum(readings) FROM v_sensor_1h) AS h1, (SELECT count() FROM v_plate_reads) AS plates, "
           "(SELECT count() FROM plate_reads) AS raw_plates, (SELECT sum(reads) FROM v_vehicles_1h) AS vehicles, "
           "(SELECT count() FROM v_alerts) AS alerts")
    return {k: int(v) for k, v in sink.rows(sql)[0].items()}


def test_kill_after_insert_before_commit_then_restart_stores_each_event_once(settings: Settings,
                                                                             tmp_path: Path) -> None:
    events = [*[reading(i, float(i % 50), device=f"pm-{i % 5:02d}") for i in range(500)],
              *[plate(i, "abcd"[i % 4], camera=f"cam-{i % 2:02d}") for i in range(40)], *[alert(i) for i in range(6)]]
    produce(settings, events)
    crashing = sink_settings(settings, tmp_path, batch_rows=100, batch_age_s=1.0)
    config = tmp_path / "crash.yaml"
    first = SinkProcess(crashing, config, ["-m", "tests.sinks.crashing_sink", str(config), "1"])
    first.start()
    assert first.wait() == -signal.SIGKILL
    assert CRASH_MESSAGE in first.logs()

    committed, ends = committed_and_ends(settings)
    assert all(offset < 0 for offset in committed.values()), "nothing may be committed before the crash"
    before = totals(first)  # the owner is dead: the path is opened directly
    assert 0 < before["raw"] + before["raw_plates"] < 546, "the crash must come after an insert of a first window"

    second = SinkProcess(crashing.model_copy(update={"sink": crashing.sink.model_copy(
        update={"batch_rows": 100_000})}), tmp_path / "restart.yaml").start()
    try:
        def complete() -> bool:
            seen = totals(second)
            return (seen["view"], seen["plates"], seen["alerts"]) == (500, 40, 6)

        def all_committed() -> bool:
            committed, ends = committed_and_ends(settings)
            return committed == ends

        wait_for("every event in the analyst views", complete)
        wait_for("all offsets committed", all_committed)
        assert second.terminate() == 0
    finally:
        second.kill()
    after = totals(second)
    # The restart uses other batch limits, yet it rebuilt exactly the logged window, so the blocks carried the
    # same dedup tokens: not even the raw tables or the rollups hold a copy.
    assert after == {"raw": 500, "ids": 500, "view": 500, "m1": 500, "h1": 500, "plates": 40, "raw_plates": 40,
                     "vehicles": 40, "alerts": 6}
    assert "replaying the logged, uncommitted window" in second.logs()
