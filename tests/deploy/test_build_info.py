"""citystream_build_info: one series per served registry, labelled with the installed version."""

from __future__ import annotations

from importlib import metadata

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from citystream.metrics import package_version, register_build_info, serve_metrics
from citystream.settings import MetricsSettings

pytestmark = pytest.mark.unit


def test_serving_a_registry_adds_build_info_with_the_package_version() -> None:
    registry = CollectorRegistry()
    serve_metrics(MetricsSettings(port=0), registry)
    register_build_info(registry)  # a second registration is a no-op, not a ValueError
    version = metadata.version("citystream")
    assert package_version() == version
    value = registry.get_sample_value("citystream_build_info", {"version": version,
                                                                "python": __import__("platform").python_version()})
    assert value == 1
    assert generate_latest(registry).decode().count("citystream_build_info{") == 1
