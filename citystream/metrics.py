"""Prometheus helpers: every process serves ``/metrics``; collectors take a registry."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from citystream.settings import MetricsSettings

log = logging.getLogger(__name__)


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry = REGISTRY) -> Any:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread; returns the server or None if disabled."""
    if settings.port == 0:
        return None
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    log.info("metrics endpoint up", extra={"url": f"http://{settings.host}:{settings.port}/metrics"})
    return server
