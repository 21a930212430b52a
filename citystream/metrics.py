"""Prometheus helpers: every process serves ``/metrics``; collectors take a registry.

Besides each stage's own collectors, every served registry carries ``citystream_build_info``
(value 1, labels ``version`` and ``python``) so dashboards and alerts can tell which release runs where.
"""

from __future__ import annotations

import logging
import platform
from importlib import metadata
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server

from citystream.settings import MetricsSettings

log = logging.getLogger(__name__)

BUILD_INFO = "citystream_build_info"


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


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry = REGISTRY) -> Any:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread; returns the server or None if disabled."""
    register_build_info(registry)
    if settings.port == 0:
        return None
    server, _thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    log.info("metrics endpoint up", extra={"url": f"http://{settings.host}:{settings.port}/metrics"})
    return server
