"""Sequence tracking: in order, gaps, late fills, duplicates, bounded state."""

from __future__ import annotations

import pytest

from citystream.ingest.bridge.seqtrack import Gap, SeqTracker

pytestmark = pytest.mark.unit


def outcomes(tracker: SeqTracker, seqs: list[int], stream: str = "reading") -> list[str]:
    return [tracker.observe("t", "gw", stream, s)[0] for s in seqs]


def test_in_order_stream_has_no_gaps() -> None:
    assert outcomes(SeqTracker(), [0, 1, 2, 3]) == ["first", "next", "next", "next"]


def test_first_message_after_start_is_not_a_gap() -> None:
    assert outcomes(SeqTracker(), [500, 501]) == ["first", "next"]


def test_gap_is_reported_once_with_its_range() -> None:
    tracker = SeqTracker()
    outcomes(tracker, [0, 1])
    outcome, gap = tracker.observe("t", "gw", "reading", 5)
    assert outcome == "gap"
    assert gap == Gap("t", "gw", "reading", 2, 4, 5) and gap.missing == 3
    assert outcomes(tracker, [6]) == ["next"]


def test_late_arrivals_fill_the_gap_then_count_as_duplicates() -> None:
    tracker = SeqTracker()
    outcomes(tracker, [0, 5])
    assert outcomes(tracker, [3, 1, 4, 2]) == ["late"] * 4
    assert outcomes(tracker, [3, 0, 5]) == ["duplicate"] * 3


def test_duplicates_without_gap() -> None:
    assert outcomes(SeqTracker(), [0, 1, 1, 0, 2]) == ["first", "next", "duplicate", "duplicate", "next"]


def test_streams_and_gateways_are_separate() -> None:
    tracker = SeqTracker()
    assert tracker.observe("t", "gw", "reading", 0)[0] == "first"
    assert tracker.observe("t", "gw", "frame", 7)[0] == "first"
    assert tracker.observe("t", "gw2", "reading", 3)[0] == "first"
    assert tracker.observe("t", "gw", "reading", 1)[0] == "next"


def test_state_is_bounded() -> None:
    tracker = SeqTracker(max_keys=3, max_open_gaps=2)
    for gw in range(10):
        tracker.observe("t", f"gw{gw}", "reading", 0)
    assert len(tracker) == 3
    assert tracker.observe("t", "gw0", "reading", 1)[0] == "first"  # evicted, starts afresh
    outcomes(tracker, [0, 2, 4, 6])  # three gaps on gw: {1}, {3}, {5}; only the last two stay open
    assert outcomes(tracker, [1, 3, 5]) == ["duplicate", "late", "late"]
