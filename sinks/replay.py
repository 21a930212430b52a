"""Rebuilding the window a crashed sink logged but never committed.

Every window's offset ranges are written to ``_sink_windows`` before its inserts. When partitions are
assigned, the newest logged window of this consumer group is pending if, for each of its partitions,
the committed offset has not moved past the window's first offset. Then the sink replays exactly that window:
records of its partitions up to the logged last offset, nothing else (other partitions are paused,
records beyond the range are held back). The rebuilt window has the same ranges, hence the same dedup
tokens, and ClickHouse drops the repeated blocks. If the window cannot be rebuilt (partitions now
assigned elsewhere, records expired), the sink proceeds normally and the analyst views (FINAL on
event_id) hide the copies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from citystream.retry import Backoff
from citystream.schemas.migrate import SINK_WINDOWS
from citystream.sinks.batch import TopicPartition

log = logging.getLogger(__name__)
OFFSET_INVALID = -1001


def committed_offsets(consumer: Any, partitions: list[Any], stop: threading.Event,
                      attempts: int) -> list[Any] | None:
    """The group's committed offsets, asked a few times (a restarted broker answers late); None if not."""
    backoff = Backoff(2.0, 10.0)
    for attempt in range(1, attempts + 1):
        try:
            found: list[Any] = consumer.committed(partitions, timeout=10)
            return found
        except KafkaException as exc:
            log.warning("committed offsets lookup failed", extra={"attempt": attempt, "error": str(exc)})
            if stop.wait(backoff.next()):
                break
    return None


def pending_window(client: Any, database: str, group_id: str,
                   committed: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]] | None:
    """The newest logged window still uncommitted and fully assigned here, as ranges; else None."""
    rows = client.query(
        f"SELECT topic, partition, first_offset, last_offset FROM `{database}`.{SINK_WINDOWS} FINAL "
        f"WHERE group_id = {{g:String}} AND window_id = (SELECT max(window_id) "
        f"FROM `{database}`.{SINK_WINDOWS} WHERE group_id = {{g:String}})", parameters={"g": group_id}).result_rows
    if not rows:
        return None
    ranges = {(str(t), int(p)): (int(a), int(b)) for t, p, a, b in rows}
    for tp, (first, _last) in ranges.items():
        if tp not in committed:
            log.info("logged window not fully assigned here; not replayed", extra={"partition": f"{tp[0]}:{tp[1]}"})
            return None
        offset = committed[tp]
        if offset != OFFSET_INVALID and not 0 <= offset <= first:
            return None  # committed past the window's start: it was committed (or a newer one was)
    return ranges


@dataclass
class Replay:
    """A window being rebuilt: ranges, which partitions are complete, records held for later."""

    ranges: dict[TopicPartition, tuple[int, int]]
    deadline: float
    clock: Callable[[], float] = time.monotonic
    done: set[TopicPartition] = field(default_factory=set)
    held: list[Any] = field(default_factory=list)

    def admit(self, tp: TopicPartition, offset: int, message: Any) -> bool:
        """Whether a record belongs to the replayed window; records that do not are held back."""
        rng = self.ranges.get(tp)
        if rng is None or offset > rng[1]:
            self.held.append(message)
            return False
        if offset >= rng[1]:
            self.done.add(tp)
        return True

    def complete(self) -> bool:
        """Every partition of the window reached its logged last offset (or time ran out)."""
        if len(self.done) == len(self.ranges):
            return True
        if self.clock() >= self.deadline:
            log.warning("replay of logged window timed out; flushing what arrived",
                        extra={"missing": len(self.ranges) - len(self.done)})
            return True
        return False
