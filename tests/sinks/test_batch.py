"""Unit: a consumed batch kept column-wise tracks the same offset ranges as record by record (same tokens)."""

from __future__ import annotations

import random

import pytest

from citystream.sinks.batch import Window

pytestmark = pytest.mark.unit


def test_track_many_gives_the_ranges_and_size_of_tracking_one_by_one() -> None:
    rng = random.Random(7)
    one, many = Window(clock=lambda: 0.0), Window(clock=lambda: 0.0)
    next_offset = {p: rng.randrange(0, 1000) for p in range(4)}
    for _batch in range(5):
        partitions, offsets = [], []
        for _ in range(rng.randrange(1, 200)):  # partitions interleave, each in offset order
            p = rng.randrange(4)
            partitions.append(p)
            offsets.append(next_offset[p])
            next_offset[p] += rng.choice((1, 1, 2))
        for p, o in zip(partitions, offsets, strict=True):
            one.track("t", p, o, 10)
        many.track_many("t", partitions, offsets, 10 * len(offsets))
        assert many.ranges == one.ranges and many.size_bytes == one.size_bytes
    assert many.token("sensor_readings", "json") == one.token("sensor_readings", "json")
    assert many.commit_offsets() == one.commit_offsets()
