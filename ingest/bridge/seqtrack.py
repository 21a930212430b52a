"""Sequence tracking per (tenant, gateway, stream): gaps, duplicates and late arrivals.

A gateway numbers each stream 0, 1, 2, ... (``seq``). The bridge remembers the next expected
number per (tenant, gateway, stream):

- ``seq == expected`` -> ``next``; the first message of a key -> ``first`` (no gap is assumed
  before it, so a bridge restart never reports a false gap).
- ``seq > expected`` -> ``gap`` covering ``expected .. seq-1`` (reported once, kept as an open range).
- ``seq < expected`` inside an open gap range -> ``late`` (the gap shrinks; e.g. a spool replay).
- ``seq < expected`` otherwise -> ``duplicate`` (gateway retry, MQTT redelivery after a reconnect).

State lives in memory only: bounded to ``max_keys`` keys (least recently seen evicted) and
``max_open_gaps`` open ranges per key (oldest forgotten). It is lost on restart, and it is exact only
when one bridge sees every message of a gateway stream: with several replicas on one shared
subscription each sees a share and would report false gaps, so replicas run with
``bridge.track_sequences=false`` (gap detection then belongs downstream).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["first", "next", "gap", "late", "duplicate"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers ``from_seq..to_seq`` (inclusive) of one gateway stream never arrived in order."""

    tenant: str
    gateway: str
    stream: str
    from_seq: int
    to_seq: int
    seen_seq: int

    @property
    def missing(self) -> int:
        """How many sequence numbers the gap covers."""
        return self.to_seq - self.from_seq + 1


@dataclass(slots=True)
class _State:
    expected: int
    open_gaps: list[list[int]] = field(default_factory=list)  # [from, to] inclusive, oldest first


class SeqTracker:
    """Remembers the next expected ``seq`` of each gateway stream (in memory, bounded)."""

    def __init__(self, max_keys: int = 100_000, max_open_gaps: int = 64) -> None:
        """Track at most ``max_keys`` gateway streams and ``max_open_gaps`` open gaps each."""
        self.max_keys = max_keys
        self.max_open_gaps = max_open_gaps
        self._state: OrderedDict[tuple[str, str, str], _State] = OrderedDict()

    def __len__(self) -> int:
        """Number of gateway streams tracked."""
        return len(self._state)

    def observe(self, tenant: str, gateway: str, stream: str, seq: int) -> tuple[Outcome, Gap | None]:
        """Record one sequence number; returns the outcome and, for ``gap``, the new gap."""
        key = (tenant, gateway, stream)
        state = self._state.get(key)
        if state is None:
            self._state[key] = _State(seq + 1)
            if len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return "first", None
        self._state.move_to_end(key)
        if seq == state.expected:
            state.expected = seq + 1
            return "next", None
        if seq > state.expected:
            gap = Gap(tenant, gateway, stream, state.expected, seq - 1, seq)
            state.open_gaps.append([state.expected, seq - 1])
            if len(state.open_gaps) > self.max_open_gaps:
                del state.open_gaps[0]
            state.expected = seq + 1
            return "gap", gap
        return ("late", None) if _fill(state.open_gaps, seq) else ("duplicate", None)


def _fill(open_gaps: list[list[int]], seq: int) -> bool:
    """Remove ``seq`` from the open gap ranges; False when it was in none (a duplicate)."""
    for i, (lo, hi) in enumerate(open_gaps):
        if lo <= seq <= hi:
            if lo == hi:
                del open_gaps[i]
            elif seq == lo:
                open_gaps[i][0] = seq + 1
            elif seq == hi:
                open_gaps[i][1] = seq - 1
            else:
                open_gaps[i:i + 1] = [[lo, seq - 1], [seq + 1, hi]]
            return True
    return False
