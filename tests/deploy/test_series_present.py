"""Counters that rules and dashboards use have a zero series from the start, not only after their first event.

A labelled counter with no series is invisible to ``rate()``: an alert such as "DLQ share above normal"
would evaluate to nothing on a healthy pipeline, and panels would show "No data" instead of 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from citystream.ingest.bridge.metrics import BridgeMetrics
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.processors.app import WorkerMetrics
from citystream.processors.notifiers import Dispatcher
from citystream.settings.worker import NotifierSettings
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.rows import ROUTES

pytestmark = pytest.mark.unit
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Series whose labels only exist at run time (partitions, cameras, alert rules): a zero series cannot be made.
RUN_TIME_LABELS = {"citystream_worker_faces", "citystream_worker_alerts", "citystream_worker_dropped_records"}


def test_every_counter_the_rules_and_dashboards_use_has_a_series_at_start() -> None:
    registry = CollectorRegistry()
    BridgeMetrics(registry)
    GatewayMetrics(registry)
    WorkerMetrics(registry)
    SinkMetrics(registry, tables=[route.table for route in ROUTES.values()])
    Dispatcher([NotifierSettings(type="webhook", url="http://127.0.0.1:9/hook")], registry)
    used = "\n".join(p.read_text() for p in [*DEPLOY.glob("prometheus/rules/*.yml"), *DEPLOY.glob("grafana/**/*.json")])
    empty = {f.name for f in registry.collect() if f.type == "counter" and not f.samples}
    assert "citystream_worker_dlq" not in empty and "citystream_sink_dlq" not in empty
    missing = sorted(name for name in empty - RUN_TIME_LABELS if name + "_total" in used)
    assert missing == [], f"counters used by rules/dashboards with no series until their first event: {missing}"
