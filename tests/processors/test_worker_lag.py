"""The worker's consumer lag gauge, fed by the watchdog's reading of committed offsets and high-water marks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from citystream.processors.watchdog import InputLag, StallWatch

pytestmark = pytest.mark.unit
NAME = "citystream_worker_consumer_lag_messages"


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


def lag_of(registry: CollectorRegistry, topic: str, partition: int) -> float | None:
    return registry.get_sample_value(NAME, {"topic": topic, "partition": str(partition)})


def test_lag_per_input_partition_and_revoked_partitions_are_dropped() -> None:
    registry = CollectorRegistry()
    watch = StallWatch(30, lambda: 0.0, lag=InputLag(registry))
    watch.stalled({TP("raw.readings", 0): (5, 12), TP("raw.readings", 1): (0, 4), TP("raw.frames", 2): (3, 3)})
    assert [lag_of(registry, "raw.readings", 0), lag_of(registry, "raw.readings", 1),
            lag_of(registry, "raw.frames", 2)] == [7, 4, 0]
    watch.reset()  # a rebalance: the gauge keeps its last values until the next check
    assert lag_of(registry, "raw.readings", 0) == 7
    watch.stalled({TP("raw.readings", 0): (12, 15)})  # partitions 1 and frames/2 were revoked
    assert [lag_of(registry, "raw.readings", 0), lag_of(registry, "raw.readings", 1),
            lag_of(registry, "raw.frames", 2)] == [3, None, None]


def test_one_gauge_per_registry() -> None:
    registry = CollectorRegistry()
    assert InputLag.on(registry) is InputLag.on(registry)
    assert InputLag.on(CollectorRegistry()) is not InputLag.on(registry)
