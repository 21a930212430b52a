"""A batch window: rows per target table plus the Kafka offset ranges they came from.

The window is the unit of delivery: its rows are inserted table by table, then its DLQ records are
produced, then its offsets are committed. Each table's insert carries a dedup token derived from the
table name and the window's topic/partition/offset ranges, so re-inserting the same window (after a
crash between insert and commit) is dropped by ClickHouse.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from citystream.sinks.rows import Row, arrow_schema

TopicPartition = tuple[str, int]
Source = tuple[str, bytes | None, bytes | None, Any]
"""Where a row came from: (topic, key, value, raw Kafka headers) — the DLQ needs the original bytes."""


@dataclass
class TableRows:
    """Columns of one table's pending rows.

    Rows come as dicts (:meth:`append`) or as value tuples in column order (:meth:`append_values`, the
    fast path); tuples wait in ``pending`` and are moved into ``columns`` column-wise before any read.
    """

    table: str
    schema: pa.Schema
    columns: dict[str, list[Any]]
    sources: list[Source] = field(default_factory=list)
    rows: int = 0
    pending: list[tuple[Any, ...]] = field(default_factory=list)

    @classmethod
    def empty(cls, table: str) -> TableRows:
        """No rows yet."""
        schema = arrow_schema(table)
        return cls(table, schema, {name: [] for name in schema.names if name != "ingested_at"})

    def append(self, row: Row, source: Source) -> None:
        """Add one row (all columns but ingested_at) and where it came from."""
        self._settle()
        for name, values in self.columns.items():
            values.append(row[name])
        self.sources.append(source)
        self.rows += 1

    def append_values(self, values: tuple[Any, ...], source: Source) -> None:
        """Add one row as its values in column order (all columns but ingested_at) and where it came from."""
        self.pending.append(values)
        self.sources.append(source)
        self.rows += 1

    def _settle(self) -> None:
        """Move pending value tuples into the columns."""
        if not self.pending:
            return
        width = len(self.columns)
        if any(len(values) != width for values in self.pending):
            raise ValueError(f"{self.table}: a row does not have one value for each of the {width} columns")
        for index, values in enumerate(self.columns.values()):
            values.extend(map(itemgetter(index), self.pending))
        self.pending = []

    def sort(self) -> None:
        """Order rows by (topic, partition, offset): a rebuilt window then splits into the same sub-blocks."""
        self._settle()
        order = sorted(range(self.rows), key=lambda i: (self.sources[i][0], self.columns["kafka_partition"][i],
                                                        self.columns["kafka_offset"][i]))
        if order == list(range(self.rows)):
            return
        for name, values in self.columns.items():
            self.columns[name] = [values[i] for i in order]
        self.sources = [self.sources[i] for i in order]

    def to_arrow(self, ingested_at_ms: int, start: int = 0, stop: int | None = None) -> pa.Table:
        """Rows ``start:stop`` as an Arrow table, ``ingested_at`` stamped on every row."""
        self._settle()
        stop = self.rows if stop is None else stop
        whole = (start, stop) == (0, self.rows)
        arrays = []
        for fld in self.schema:
            if fld.name == "ingested_at":
                arrays.append(pa.array([ingested_at_ms] * (stop - start), type=pa.int64()).cast(fld.type))
            else:
                values = self.columns[fld.name]
                arrays.append(pa.array(values if whole else values[start:stop], type=fld.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def row(self, index: int) -> Row:
        """One pending row as a dict."""
        self._settle()
        return {name: values[index] for name, values in self.columns.items()}


@dataclass
class RawRows:
    """Records of one table kept as their JSON bytes, for the store to check and parse in bulk.

    ``messages`` are the Kafka records themselves (their key and headers are read only when one needs
    the per-record path or the DLQ).
    """

    table: str
    values: list[bytes] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    block: pa.Table | None = None  # as written to ``path`` for the store, then as stored
    path: str | None = None

    @property
    def rows(self) -> int:
        """How many records."""
        return len(self.values)

    def to_arrow(self) -> pa.Table:
        """The records as ``raw`` (binary), ``n`` (position), ``kafka_partition`` and ``kafka_offset``."""
        return pa.table({"raw": pa.array(self.values, pa.binary()), "n": pa.array(range(self.rows), pa.uint32()),
                         "kafka_partition": pa.array(self.partitions, pa.uint16()),
                         "kafka_offset": pa.array(self.offsets, pa.uint64())})

    def source(self, index: int) -> Source:
        """Where record ``index`` came from."""
        msg = self.messages[index]
        return (msg.topic(), msg.key(), self.values[index], msg.headers())


@dataclass
class Window:
    """Rows per table, dead letters and offset ranges since the last commit."""

    clock: Callable[[], float] = time.monotonic
    tables: dict[str, TableRows] = field(default_factory=dict)
    raw: dict[str, RawRows] = field(default_factory=dict)
    ranges: dict[TopicPartition, list[int]] = field(default_factory=dict)
    dead: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    size_bytes: int = 0
    rows: int = 0
    opened_at: float | None = None

    def track(self, topic: str, partition: int, offset: int, size: int) -> None:
        """Record that a record at ``offset`` is part of this window."""
        if self.opened_at is None:
            self.opened_at = self.clock()
        rng = self.ranges.get((topic, partition))
        if rng is None:
            self.ranges[(topic, partition)] = [offset, offset]
        else:
            rng[1] = max(rng[1], offset)
        self.size_bytes += size

    def track_many(self, topic: str, partitions: list[int], offsets: list[int], size: int) -> None:
        """Record that records of ``topic`` at these partitions/offsets (each partition in order) are in the window."""
        if self.opened_at is None:
            self.opened_at = self.clock()
        parts = np.asarray(partitions)
        offs = np.asarray(offsets, dtype=np.int64)
        for partition in np.unique(parts).tolist():
            mine = offs[parts == partition]
            first, last = int(mine[0]), int(mine.max())
            rng = self.ranges.get((topic, partition))
            if rng is None:
                self.ranges[(topic, partition)] = [first, last]
            else:
                rng[1] = max(rng[1], last)
        self.size_bytes += size

    def add(self, table: str, row: Row, source: Source) -> None:
        """Add a row for ``table``."""
        rows = self.tables.get(table)
        if rows is None:
            rows = self.tables[table] = TableRows.empty(table)
        rows.append(row, source)
        self.rows += 1

    def add_values(self, table: str, values: tuple[Any, ...], source: Source) -> None:
        """Add a row for ``table`` as its values in column order (Kafka partition and offset last)."""
        rows = self.tables.get(table)
        if rows is None:
            rows = self.tables[table] = TableRows.empty(table)
        rows.append_values(values, source)
        self.rows += 1

    def add_raw(self, table: str, value: bytes, partition: int, offset: int, message: Any) -> None:
        """Add a record for ``table`` as its JSON bytes, to be checked and parsed by the store."""
        self.add_raw_many(table, [value], [partition], [offset], [message])

    def add_raw_many(self, table: str, values: list[bytes], partitions: list[int], offsets: list[int],
                     messages: list[Any]) -> None:
        """Add records for ``table`` as their JSON bytes (the lists are parallel)."""
        raw = self.raw.get(table)
        if raw is None:
            raw = self.raw[table] = RawRows(table)
        raw.values.extend(values)
        raw.partitions.extend(partitions)
        raw.offsets.extend(offsets)
        raw.messages.extend(messages)
        self.rows += len(values)

    def add_dead(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue a dead letter (JSON value) for the DLQ topic."""
        self.dead.append((topic, value, key))

    def is_empty(self) -> bool:
        """No records tracked since the last commit."""
        return not self.ranges

    def is_full(self, max_rows: int, max_bytes: int, max_age_s: float) -> bool:
        """Whether a size or age limit is reached."""
        if self.opened_at is None:
            return False
        return self.rows >= max_rows or self.size_bytes >= max_bytes or self.clock() - self.opened_at >= max_age_s

    def ranges_key(self) -> str:
        """Canonical text of the offset ranges (topic:partition:first-last, sorted)."""
        return ";".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))

    def token(self, table: str, part: str = "") -> str:
        """Dedup token of one table's block in this window (``part`` names a sub-block after a split)."""
        return hashlib.sha256(f"{table}|{self.ranges_key()}|{part}".encode()).hexdigest()

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """The next offset to read per partition (what to commit)."""
        return {tp: last + 1 for tp, (_first, last) in self.ranges.items()}
