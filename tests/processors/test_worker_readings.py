"""The readings agent in a unit WorkerContext: windows, alerts with hysteresis, dead letters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from citystream.schemas.wire import to_json
from tests.processors.worker_helpers import pm25_series, put_all, sent, unit_context


@pytest.mark.unit
def test_readings_agent_windows_alerts_and_dead_letters(tmp_path: Path) -> None:
    ctx = unit_context(tmp_path)
    series = pm25_series()
    items = [(b"pm-1", to_json(r), []) for r in series[:12]]
    items.insert(3, (b"pm-1", b"\xff\xfe", []))
    items.insert(5, (b"pm-1", to_json(series[0].model_copy(update={"value": -3.0})), []))
    items += [(b"pm-1", to_json(r), []) for r in series[12:]]
    asyncio.run(put_all(ctx, "readings", items, lambda: len(sent(ctx, "alerts")) == 2 and len(sent(ctx, "dlq")) == 2))
    assert [(a["alert_type"], a["state"]) for a in sent(ctx, "alerts")] == [("pm25_high", "raised"),
                                                                            ("pm25_high", "cleared")]
    assert [d["reason"] for d in sent(ctx, "dlq")] == ["invalid_reading", "out_of_range"]
    assert ctx.metrics.windows._value.get() >= 9

