"""Prometheus helpers: every process serves ``/metrics``, ``/healthz`` and ``/readyz``; collectors take a registry.

Besides each stage's own collectors, every served registry carries ``citystream_build_info``
(value 1, labels ``version`` and ``python``) so dashboards and alerts can tell which release runs where.

``/healthz`` answers 200 while the process serves HTTP (liveness). ``/readyz`` answers 200 when every
readiness gauge the registry holds is at least 1 (``READY_GAUGES``: the worker has its partitions and
tables, the bridge its subscription, a gateway its broker connection, the sink its assignment), else
503 with the gauges that are not; the body is JSON ``{"ready": bool, "gauges": {name: value}}``.
"""

from __future__ import annotations

import logging
import platform
import threading
from http.server import ThreadingHTTPServer
from importlib import metadata
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest

from citystream.httpd import Handler
from citystream.settings import ConfigError, MetricsSettings

log = logging.getLogger(__name__)

BUILD_INFO = "citystream_build_info"
READY_GAUGES = ("citystream_worker_ready", "citystream_bridge_mqtt_subscribed", "citystream_gateway_connected",
                "citystream_sink_ready")


def package_version() -> str:
    """The installed citystream version, ``unknown`` when the package metadata is missing."""
    try:
        return metadata.version("citystream")
    except metadata.PackageNotFoundError:
        return "unknown"


def register_build_info(registry: CollectorRegistry) -> None:
    """Add ``citystream_build_info{version, python} 1`` to the registry (once; a second call does nothing)."""
    try:
        gauge = Gauge(BUILD_INFO, "citystream build: 1, labelled with the package version and Python version",
                      ["version", "python"], registry=registry)
    except ValueError:  # already registered on this registry
        return
    gauge.labels(package_version(), platform.python_version()).set(1)


def readiness(registry: CollectorRegistry) -> tuple[bool, dict[str, float]]:
    """Whether every readiness gauge in ``registry`` is at least 1, and their values."""
    gauges = {name: value for name in READY_GAUGES
              if (value := registry.get_sample_value(name)) is not None}
    return all(v >= 1 for v in gauges.values()), gauges


def _handler(registry: CollectorRegistry) -> type[Handler]:
    class MetricsHandler(Handler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self.reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self.reply(200, b"ok", "text/plain")
            elif path == "/readyz":
                ready, gauges = readiness(registry)
                self.reply(200 if ready else 503, orjson.dumps({"ready": ready, "gauges": gauges}),
                            "application/json")
            else:
                self.reply(404, b"not found: /metrics, /healthz, /readyz", "text/plain")

    return MetricsHandler


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread; returns the server or None if off."""
    register_build_info(registry)
    if settings.port == 0:
        return None
    try:
        server = ThreadingHTTPServer((settings.host, settings.port), _handler(registry))
    except OSError as exc:  # e.g. the port is taken: a configuration problem, exit 2 from the CLI
        raise ConfigError(f"metrics.port {settings.port}: cannot serve /metrics on {settings.host}: "
                          f"{exc.strerror or exc}") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics endpoint up", extra={"url": f"http://{settings.host}:{settings.port}/metrics"})
    return server
