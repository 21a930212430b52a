"""Every long-running process serves /metrics, /healthz (live) and /readyz (ready) on its metrics port."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client import CollectorRegistry, Gauge

from citystream.metrics import serve_metrics
from citystream.settings import MetricsSettings
from tests.conftest import free_port

pytestmark = pytest.mark.unit


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_and_readiness_follow_the_stage_gauges() -> None:
    registry = CollectorRegistry()
    ready = Gauge("citystream_worker_ready", "test", registry=registry)
    port = free_port()
    server = serve_metrics(MetricsSettings(host="127.0.0.1", port=port), registry)
    base = f"http://127.0.0.1:{port}"
    try:
        assert get(f"{base}/healthz") == (200, b"ok")
        code, body = get(f"{base}/readyz")
        assert code == 503 and orjson.loads(body) == {"ready": False, "gauges": {"citystream_worker_ready": 0.0}}
        ready.set(1)
        code, body = get(f"{base}/readyz")
        assert code == 200 and orjson.loads(body)["ready"] is True
        code, body = get(f"{base}/metrics")
        assert code == 200 and b"citystream_worker_ready 1.0" in body and b"citystream_build_info" in body
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
