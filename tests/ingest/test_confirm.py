"""Confirmations the bridge sends back to gateways: compact ranges, tolerant parsing, identity of dead letters."""

from __future__ import annotations

import orjson
import pytest

from citystream.ingest.confirm import Confirmations, ranges, seqs_of

pytestmark = pytest.mark.unit


def test_ranges_merge_runs_and_ignore_order_and_repeats() -> None:
    assert ranges([5, 1, 2, 3, 3, 9, 10]) == [[1, 3], [5, 5], [9, 10]]
    assert ranges([]) == []


@pytest.mark.parametrize(("runs", "seqs"), [
    ([[1, 3], [7, 7]], [1, 2, 3, 7]),
    ([[3, 1]], []), ([[-1, 2]], []), ([[1.0, 2]], []), ([[True, 2]], []), ("x", []), ([[1, 2, 3]], []),
    ([[0, 10**12]], []),  # absurdly long runs are ignored, not expanded
])
def test_seqs_of_reads_only_well_formed_runs(runs: object, seqs: list[int]) -> None:
    assert seqs_of(runs) == seqs


def test_drain_groups_per_gateway_and_forgets() -> None:
    c = Confirmations("city")
    for seq in (0, 1, 2, 5):
        c.add("t1", "gw-a", "reading", seq)
    c.add("t1", "gw-a", "frame", 4)
    c.add("t2", "gw-b", "status", 9)
    out = dict(c.drain())
    assert orjson.loads(out["city/_bridge/confirm/t1/gw-a"]) == {"reading": [[0, 2], [5, 5]], "frame": [[4, 4]]}
    assert orjson.loads(out["city/_bridge/confirm/t2/gw-b"]) == {"status": [[9, 9]]}
    assert c.drain() == [] and len(c) == 0


def test_identity_of_rejected_messages() -> None:
    c = Confirmations("city")
    topic = "city/t1/gw-a/sensor/pm-1/reading"
    assert c.identify(topic, b'{"seq": 7, "value": "x"}', []) == ("t1", "gw-a", "reading", 7)
    assert c.identify("city/t1/gw-a/camera/cam-1/frame", b"\xff\xd8", [("seq", "12")]) == ("t1", "gw-a", "frame", 12)
    assert c.identify(topic, b"not json", []) is None
    assert c.identify(topic, b'{"seq": "7"}', []) is None
    assert c.identify(topic, b'{"seq": -1}', []) is None
    assert c.identify("city/t1/gw-a/camera/cam-1/frame", b"", [("seq", "1"), ("seq", "2")]) is None
    assert c.identify("other/t1/gw-a/sensor/pm-1/reading", b'{"seq": 7}', []) is None
