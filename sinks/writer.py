"""Inserts a window into ClickHouse: write-ahead log, dedup tokens, retries, poison isolation.

Three kinds of failure, three paths (:func:`classify`):

- **Poison**: ClickHouse names the block's data as the cause (its error codes for values that do not
  fit a column, :data:`POISON_CODES`). The block is split in halves until the bad rows are alone; they
  come back to the caller for the DLQ, the rest are inserted. Sub-blocks get tokens derived from their
  position, so a replayed window splits and deduplicates the same way.
- **Outage**: the store cannot be reached or answers with any other error code (connection, timeout,
  too many parts, memory, an unknown table during a migration). The same block is retried with the
  same token, backing off exponentially up to ``sink.retry_max_s``, until it goes in or a stop is
  requested.
- **Stage error**: anything else (a ``TypeError`` building a block, a driver bug). Never the data's
  fault, so never a dead letter: retried :data:`STAGE_ATTEMPTS` times with backoff, then
  :class:`StageError` stops the sink without committing (Kafka re-delivers the window to a fixed sink).

Blocks of a route with a bulk path (:class:`~citystream.sinks.fast.BulkJson`: sensor readings) go to
the store as their JSON bytes in one Arrow file, checked and parsed by ClickHouse in one
``INSERT … SELECT`` with the table's token (part ``json``). If a record does not pass the contract
checks the statement fails before writing; one query then finds those records, they are handed back to
the caller's per-record path, and the rest is inserted with the same token.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as pa_ipc
from clickhouse_connect.driver.exceptions import OperationalError

from citystream.retry import Backoff
from citystream.schemas.migrate import SINK_WINDOWS
from citystream.sinks.batch import RawRows, Source, TableRows, Window
from citystream.sinks.fast import sql_string
from citystream.sinks.metrics import SinkMetrics
from citystream.sinks.rows import ROUTES, Row

log = logging.getLogger(__name__)
T = TypeVar("T")

# ClickHouse error codes caused by the data in the block (never fixed by retrying).
POISON_CODES = frozenset({6, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 395, 473})
_CODE = re.compile(r"Code: (\d+)")
FIRST_RETRY_S = 0.2
STAGE_ATTEMPTS = 4
INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}
BULK = {route.table: route.bulk for route in ROUTES.values() if route.bulk is not None}
_CAPTURED = r'"captured_at":"(?P<s>[^"]*)"'
Fallback = Callable[[Window, RawRows, list[int]], None]
"""Takes records of a raw block to the per-record path (rows or dead letters of the same window)."""


class Stopped(Exception):
    """A stop was requested while waiting to retry."""


class StageError(Exception):
    """A failure that is neither the data's nor the store's (a code or driver bug); the sink stops."""


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code an exception carries, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException) -> str:
    """``poison`` (ClickHouse names the data), ``outage`` (store unreachable or failing) or ``stage`` (a bug)."""
    code = error_code(exc)
    if code is not None:
        return "poison" if code in POISON_CODES else "outage"
    if isinstance(exc, (OSError, TimeoutError, OperationalError)):
        return "outage"
    return "stage"


def is_poison(exc: BaseException) -> bool:
    """Whether an insert error is caused by the block's data (named so by ClickHouse)."""
    return classify(exc) == "poison"


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
        """Call ``fn`` until it succeeds or fails with a poison error; back off between attempts.

        Outages are retried until a stop is requested (:class:`Stopped`); stage errors
        :data:`STAGE_ATTEMPTS` times, then :class:`StageError`.
        """
        backoff = Backoff(min(FIRST_RETRY_S, self.retry_max_s), self.retry_max_s)
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                kind = classify(exc)
                if kind == "poison":
                    raise
                attempt += 1
                if kind == "stage" and attempt >= STAGE_ATTEMPTS:
                    log.error("stage error, giving up", extra={"what": what, "table": table, "attempts": attempt,
                                                               "error": f"{type(exc).__name__}: {exc}"[:300]})
                    raise StageError(f"{what} into {table} failed {attempt} times with "
                                     f"{type(exc).__name__}: {exc}"[:500]) from exc
                self.metrics.retries.labels(table).inc()
                delay = backoff.next()
                log.warning("insert failed, retrying", extra={"what": what, "table": table, "attempt": attempt,
                                                              "kind": kind, "delay_s": round(delay, 2),
                                                              "error": f"{type(exc).__name__}: {exc}"[:300]})
                if self.stop.wait(delay):
                    raise Stopped(f"stop requested while retrying {what}") from exc

    def log_window(self, group_id: str, window: Window) -> str:
        """Write the window's offset ranges ahead of its inserts; returns the window id."""
        window_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"  # sorts by time: the newest is max()
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        values = ", ".join(f"({sql_string(group_id)}, {sql_string(window_id)}, {sql_string(t)}, {int(p)}, {int(a)}, "
                           f"{int(b)}, fromUnixTimestamp64Milli(toInt64({now_ms}), 'UTC'))"
                           for (t, p), (a, b) in sorted(window.ranges.items()))
        # One statement with literal values: the driver's row insert costs a temporary file and a settings round trip.
        sql = (f"INSERT INTO `{self.database}`.{SINK_WINDOWS} (group_id, window_id, topic, partition, first_offset, "
               f"last_offset, logged_at) VALUES {values}")
        self.retrying("window log", SINK_WINDOWS, lambda: self.client.command(sql))
        return window_id

    def produce_dead(self, producer: Any, dead: list[tuple[str, bytes, bytes | None]]) -> None:
        """Produce dead letters (topic, value, key) and wait for every delivery; retried like an outage."""
        if not dead:
            return
        failures: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        def produce_all() -> None:
            failures.clear()
            for topic, value, key in dead:
                producer.produce(topic, value=value, key=key, on_delivery=report)
            if producer.flush(30) > 0 or failures:
                raise ConnectionError(f"DLQ delivery failed: {failures[:3] or 'timeout'}")

        self.retrying("dlq produce", "dlq", produce_all)

    def insert_window(self, window: Window, ingested_at_ms: int, fallback: Fallback | None = None,
                      observe: bool = True) -> list[PoisonRow]:
        """Insert every table block of the window; returns rows refused as poison.

        Raw blocks go first: records the store does not pass are handed to ``fallback``, which adds them to
        the window's rows or dead letters, inserted or produced after. ``observe=False`` leaves the raw
        blocks' latency to the caller (:meth:`observe_latency`, e.g. on another thread).
        """
        for raw in [window.raw[t] for t in sorted(window.raw)]:
            if raw.rows:
                if fallback is None:
                    raise StageError(f"raw block of {raw.table} without a per-record path")
                self._insert_raw(window, raw, ingested_at_ms, fallback)
        if observe:
            self.observe_latency(window)
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
        except (Stopped, StageError):
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

    def prepare(self, window: Window) -> None:
        """Write the window's raw blocks to their Arrow files (before :meth:`insert_window`, any thread)."""
        for raw in window.raw.values():
            if raw.rows and raw.path is None:
                raw.block = raw.to_arrow()
                fd, raw.path = tempfile.mkstemp(prefix="citystream-sink-", suffix=".arrow")
                _write_arrow(fd, raw.block)

    def discard(self, window: Window) -> None:
        """Remove the Arrow files :meth:`prepare` wrote for a window that will not be inserted."""
        for raw in window.raw.values():
            if raw.path is not None:
                os.unlink(raw.path)
                raw.path = None

    def _insert_raw(self, window: Window, raw: RawRows, ingested_at_ms: int, fallback: Fallback) -> None:
        """Insert the block's records parsed by the store; records that do not pass go to ``fallback``.

        The common case is one statement. When the store refuses the block (a record does not pass, or a
        value it names), one query finds the records that do not pass; they take the per-record path and
        the rest is inserted again with the same token (the refused statement wrote nothing). The records
        stored stay in ``raw.block`` for :meth:`observe_latency`.
        """
        self.prepare(window)
        assert raw.path is not None and raw.block is not None
        block, path = raw.block, raw.path
        try:
            if not self._insert_json(window, raw.table, path, ingested_at_ms):
                bad = self._not_passing(raw.table, path)
                if bad:
                    log.info("records left to the per-record path", extra={"table": raw.table, "records": len(bad)})
                    fallback(window, raw, bad)
                    block = raw.block = block.filter(pc.invert(pc.is_in(block.column("n"), pa.array(bad, pa.uint32()))))
                    _write_arrow(os.open(path, os.O_WRONLY | os.O_TRUNC), block)
                if block.num_rows and (not bad or not self._insert_json(window, raw.table, path, ingested_at_ms)):
                    log.warning("bulk insert refused; records go row by row", extra={"table": raw.table})
                    fallback(window, raw, block.column("n").to_pylist())
                    raw.block = None
                    return
        finally:
            os.unlink(path)
            raw.path = None
        self.metrics.rows.labels(raw.table).inc(block.num_rows)
        self.metrics.batch_rows.labels(raw.table).observe(block.num_rows)

    def _insert_json(self, window: Window, table: str, path: str, ingested_at_ms: int) -> bool:
        """One INSERT … SELECT of the Arrow file at ``path``; False when ClickHouse refuses its data."""
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": window.token(table, "json")}
        sql = BULK[table].insert_sql(f"`{self.database}`.{table}", path, ingested_at_ms, settings)
        began = self.clock()
        try:
            self.retrying("insert", table, lambda: self.client.command(sql))
        except (Stopped, StageError):
            raise
        except Exception as exc:  # poison: named by ClickHouse
            log.info("bulk insert refused", extra={"table": table, "error": str(exc).split("\n")[0][:300]})
            return False
        self.metrics.insert_seconds.labels(table).observe(self.clock() - began)
        return True

    def _not_passing(self, table: str, path: str) -> list[int]:
        """Positions of the records in the Arrow file at ``path`` that do not pass the bulk checks."""
        answer = self.retrying("bulk check", table, lambda: self.client.raw_query(BULK[table].check_sql(path),
                                                                                  fmt="Arrow"))
        bad: list[int] = pa_ipc.open_file(pa.py_buffer(answer)).read_all().column("bad")[0].values.to_pylist()
        return bad

    def observe_latency(self, window: Window) -> None:
        """Capture-to-insert latency of every record stored from the window's raw blocks (their ``captured_at``)."""
        now_ms = int(time.time() * 1000)
        for raw in window.raw.values():
            if raw.block is None or raw.block.num_rows == 0:
                continue
            stamps = pc.struct_field(pc.extract_regex(pc.cast(raw.block.column("raw"), pa.string()), _CAPTURED), [0])
            captured = pc.divide(pc.cast(pc.cast(stamps, pa.timestamp("us", tz="UTC")), pa.int64()), 1000)
            self.metrics.e2e.observe_block(raw.table, pa.table({"captured_at": captured}), now_ms)
            raw.block = None


def _write_arrow(fd: int, table: pa.Table) -> None:
    """Write ``table`` as an Arrow IPC file to the open descriptor ``fd`` (closed after)."""
    with os.fdopen(fd, "wb") as out, pa_ipc.new_file(out, table.schema) as writer:
        writer.write_table(table)
