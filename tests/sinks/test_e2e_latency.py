"""The sink's end-to-end latency histogram: capture at the gateway -> row inserted, observed per block."""

from __future__ import annotations

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from citystream.sinks.metrics import SinkMetrics

pytestmark = pytest.mark.unit


def test_block_latency_counts_every_row_in_its_bucket() -> None:
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    now = 1_800_000_000_000
    captured = pa.array([now - 50, now - 400, now - 3_000, now - 4_000_000], pa.timestamp("ms", tz="UTC"))
    metrics.e2e.observe_block("sensor_readings", pa.table({"captured_at": captured}), now)
    metrics.e2e.observe_block("sensor_readings", pa.table({"captured_at": captured[:1]}), now)
    metrics.e2e.observe_block("dead_letters", pa.table({"other": [1]}), now)  # no captured_at: ignored

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("citystream_sink_e2e_latency_seconds_bucket",
                                         {"table": "sensor_readings", "le": le})

    assert bucket("0.1") == 2 and bucket("0.5") == 3 and bucket("5.0") == 4 and bucket("1800.0") == 4
    assert bucket("+Inf") == 5
    assert registry.get_sample_value("citystream_sink_e2e_latency_seconds_count", {"table": "sensor_readings"}) == 5
    total = registry.get_sample_value("citystream_sink_e2e_latency_seconds_sum", {"table": "sensor_readings"})
    assert total == pytest.approx(0.05 * 2 + 0.4 + 3.0 + 4000.0)
    assert b'citystream_sink_e2e_latency_seconds_bucket{le="+Inf",table="sensor_readings"} 5.0' in \
        generate_latest(registry)
