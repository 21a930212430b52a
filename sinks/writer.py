"""Inserts a window into ClickHouse: write-ahead log, dedup tokens, retries, poison isolation.

- Retryable errors (connection, timeout, too many parts, memory) retry the same block with the same
  token, backing off exponentially up to ``sink.retry_max_s``; a stop request ends the wait.
- Poison errors (the block's data does not fit a column) split the block in halves until the bad
  rows are alone; they come back to the caller for the DLQ, the rest are inserted. Sub-blocks get
  tokens derived from their position, so a replayed window splits and deduplicates the same way.
- Schema errors (unknown table/column/database) are not the data's fault: they retry like outages.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa

from citystream.schemas.migrate import SINK_WINDOWS
from citystream.sinks.batch import Source, TableRows, Window
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.rows import Row

log = logging.getLogger(__name__)
T = TypeVar("T")

# ClickHouse error codes caused by the data in the block (never fixed by retrying).
POISON_CODES = frozenset({6, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 395, 473})
_CODE = re.compile(r"Code: (\d+)")
FIRST_RETRY_S = 0.2
INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


class Stopped(Exception):
    """A stop was requested while waiting to retry."""


def is_poison(exc: BaseException) -> bool:
    """Whether an insert error is caused by the block's data."""
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)):
        return True
    match = _CODE.search(str(exc))
    return match is not None and int(match.group(1)) in POISON_CODES


@dataclass(frozen=True)
class PoisonRow:
    """A row ClickHouse refused, with the error, for the DLQ."""

    table: str
    row: Row
    source: Source
    detail: str


class Writer:
    """Inserts windows with retries on one client (the sink's writer)."""

    def __init__(self, client: Any, database: str, metrics: SinkMetrics, retry_max_s: float,
                 stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.database = database
        self.metrics = metrics
        self.retry_max_s = retry_max_s
        self.stop = stop
        self.clock = clock

    def retrying(self, what: str, table: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` until it succeeds or fails with a poison error; back off between attempts."""
        delay = min(FIRST_RETRY_S, self.retry_max_s)
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if is_poison(exc):
                    raise
                attempt += 1
                self.metrics.retries.labels(table).inc()
                log.warning("insert failed, retrying", extra={"what": what, "table": table, "attempt": attempt,
                                                              "delay_s": round(delay, 2), "error": str(exc)[:300]})
                if self.stop.wait(delay):
                    raise Stopped(f"stop requested while retrying {what}") from exc
                delay = min(delay * 2, self.retry_max_s)

    def log_window(self, group_id: str, window: Window) -> str:
        """Write the window's offset ranges ahead of its inserts; returns the window id."""
        window_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"  # sorts by time: the newest is max()
        now = datetime.now(UTC)
        rows = [[group_id, window_id, t, p, a, b, now] for (t, p), (a, b) in sorted(window.ranges.items())]
        names = ["group_id", "window_id", "topic", "partition", "first_offset", "last_offset", "logged_at"]
        self.retrying("window log", SINK_WINDOWS, lambda: self.client.insert(
            SINK_WINDOWS, rows, column_names=names, database=self.database))
        return window_id

    def insert_window(self, window: Window, ingested_at_ms: int) -> list[PoisonRow]:
        """Insert every table block of the window; returns rows refused as poison."""
        poison: list[PoisonRow] = []
        for _table, rows in sorted(window.tables.items()):
            if rows.rows:
                self._insert(window, rows, ingested_at_ms, 0, rows.rows, poison)
        return poison

    def _insert(self, window: Window, rows: TableRows, ingested_at_ms: int, start: int, stop: int,
                poison: list[PoisonRow]) -> None:
        part = "" if (start, stop) == (0, rows.rows) else f"{start}:{stop}"
        token = window.token(rows.table, part)

        def attempt() -> None:
            block = rows.to_arrow(ingested_at_ms, start, stop)
            began = self.clock()
            self.client.insert_arrow(rows.table, block, database=self.database,
                                     settings={**INSERT_SETTINGS, "insert_deduplication_token": token})
            self.metrics.insert_seconds.labels(rows.table).observe(self.clock() - began)
            self.metrics.e2e.observe_block(rows.table, block, int(time.time() * 1000))

        try:
            self.retrying("insert", rows.table, attempt)
        except Stopped:
            raise
        except Exception as exc:
            if stop - start == 1:
                log.warning("poison row refused by ClickHouse", extra={"table": rows.table, "error": str(exc)[:300]})
                poison.append(PoisonRow(rows.table, rows.row(start), rows.sources[start], str(exc).split("\n")[0]))
                return
            if (start, stop) == (0, rows.rows):
                rows.sort()  # partitions interleave differently in a rebuilt window: split the same rows the same way
            middle = (start + stop) // 2
            self._insert(window, rows, ingested_at_ms, start, middle, poison)
            self._insert(window, rows, ingested_at_ms, middle, stop, poison)
            return
        self.metrics.rows.labels(rows.table).inc(stop - start)
        self.metrics.batch_rows.labels(rows.table).observe(stop - start)
