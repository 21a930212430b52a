"""Metric names the code exports, and the metric names a PromQL expression uses.

``exported_names()`` instantiates every stage's metric classes on a fresh ``CollectorRegistry`` and
lists the sample names Prometheus will scrape (``_total``, ``_bucket``…). The bridge, worker and sink
serve the default registry, which also carries prometheus-client's process/platform/GC collectors;
those are added too. ``promql_metric_names()`` is a small tokenizer, not a PromQL parser: it drops
strings, label matchers, ranges and label lists, then keeps identifiers not followed by ``(`` that
are not keywords. Syntax itself is checked by promtool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.registry import Collector

from citystream.ingest.bridge.metrics import BridgeMetrics
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.metrics import register_build_info
from citystream.processors.app import WorkerMetrics
from citystream.processors.notifiers import Dispatcher
from citystream.processors.watchdog import InputLag
from citystream.sinks.metrics import SinkMetrics

# Series Prometheus adds itself on every scrape.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                 "scrape_series_added"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "untyped": ("",),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
            "unless", "inf", "nan", "atan2"}
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def _sample_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def exported_names() -> set[str]:
    """Every sample name a citystream process can expose on /metrics, plus Prometheus's scrape series."""
    registry = CollectorRegistry()
    BridgeMetrics(registry)
    GatewayMetrics(registry)
    WorkerMetrics(registry)
    InputLag(registry)
    SinkMetrics(registry)
    Dispatcher([], registry)
    register_build_info(registry)
    default: Iterable[Collector] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
    for collector in default:  # served by bridge, worker and sink (prometheus_client.REGISTRY)
        registry.register(collector)
    return _sample_names(registry) | SCRAPE_SERIES


def promql_metric_names(expr: str) -> set[str]:
    """Metric names used by one PromQL expression (Grafana variables must be substituted first)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries
    text = LABEL_LISTS.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names
