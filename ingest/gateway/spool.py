"""Disk store-and-forward for one gateway: every message is stored here before it is published.

Storage: SQLite (stdlib ``sqlite3``) in WAL mode, one database file per gateway under
``gateway.state_dir``. ``put`` takes the stream's next ``seq`` (:mod:`citystream.ingest.gateway.seqstore`)
and stores the message in ONE transaction, so a message and its seq are durable together.

Delivery guarantee: at-least-once from capture to the broker. A row leaves the spool only when the
broker's PUBACK for it arrived (``ack``) or when it is dropped on purpose (``drop_oldest`` when the
spool is over ``max_bytes``, or a broker refusal) — each drop is counted by the caller's metrics and
logged. After ``kill -9`` or a restart every stored row is published again, in ``id`` (= capture)
order; rows the broker already had come again with the same ``event_id`` and are removed downstream.
With ``fsync: false`` (``synchronous=NORMAL``) a commit survives a process crash but the last
commits may be lost on power failure; ``fsync: true`` (``synchronous=FULL``) survives that too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from citystream.ingest.gateway.seqstore import SeqStore
from citystream.settings.gateway import SpoolSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    props BLOB NOT NULL,
    nbytes INTEGER NOT NULL
)
"""
ROW_OVERHEAD = 128


@dataclass(frozen=True)
class Outgoing:
    """A message ready to store: where it goes, its body and MQTT v5 user properties."""

    stream: str
    device_id: str
    topic: str
    payload: bytes
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes this message counts against the spool bound."""
        return len(self.payload) + len(self.topic) + sum(len(k) + len(v) for k, v in self.properties) + ROW_OVERHEAD


@dataclass(frozen=True)
class Spooled:
    """A stored message with its row id and seq."""

    id: int
    stream: str
    device_id: str
    seq: int
    topic: str
    payload: bytes
    properties: tuple[tuple[str, str], ...]
    nbytes: int


@dataclass(frozen=True)
class PutResult:
    """What ``put`` did: the seq stored (None if refused), how much it evicted, or why it refused."""

    seq: int | None
    evicted: int = 0
    evicted_bytes: int = 0
    refused: str | None = None
    blocked: bool = False


def open_state(path: Path, fsync: bool) -> sqlite3.Connection:
    """Open (creating) a gateway state database in WAL mode; autocommit, explicit transactions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    return conn


_SELECT = "SELECT id, stream, device, seq, topic, payload, props, nbytes FROM spool"


def _spooled(r: tuple[Any, ...]) -> Spooled:
    """A row of ``_SELECT`` as a Spooled message."""
    return Spooled(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), tuple(tuple(p) for p in orjson.loads(r[6])), r[7])


class Spool:
    """A bounded, ordered, crash-safe message store; thread-safe."""

    def __init__(self, path: Path, gateway_id: str, settings: SpoolSettings) -> None:
        self.path = path
        self.settings = settings
        self._conn = open_state(path, settings.fsync)
        self._conn.execute(SCHEMA)
        self.seqs = SeqStore(self._conn, gateway_id)
        self._cond = threading.Condition(threading.RLock())
        row = self._conn.execute(
            "SELECT COALESCE(SUM(nbytes), 0), COUNT(*), COALESCE(MAX(id), 0) FROM spool").fetchone()
        self._bytes, self._count = int(row[0]), int(row[1])
        self.last_id = int(row[2])

    @property
    def bytes(self) -> int:
        """Bytes stored now (payload + topic + properties + a fixed row overhead)."""
        return self._bytes

    @property
    def count(self) -> int:
        """Messages stored now."""
        return self._count

    def take_seq(self, stream: str) -> int:
        """Reserve a seq without storing a message (the last-will); durable on return."""
        with self._cond:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                seq: int = self.seqs.take(stream)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return seq

    def put(self, stream: str, build: Callable[[int], Outgoing], *, wait_s: float | None = None,
            stop: threading.Event | None = None) -> PutResult:
        """Store the message ``build(seq)`` with the stream's next seq, making room by the spool policy.

        ``drop_oldest`` deletes the oldest rows to make room (``evicted``); ``block`` waits for acks to
        free space, for at most ``wait_s`` seconds (None: until ``stop`` is set), then refuses with
        ``spool_full``. A message larger than the whole spool is refused with ``too_large``.
        """
        deadline = None if wait_s is None else time.monotonic() + wait_s
        blocked = False
        with self._cond:
            while True:
                seq = self.seqs.peek(stream)
                msg = build(seq)
                size = msg.nbytes
                if size > self.settings.max_bytes:
                    return PutResult(None, refused="too_large")
                if self._bytes + size <= self.settings.max_bytes or self.settings.policy == "drop_oldest":
                    break
                blocked = True
                remaining = 0.5 if deadline is None else deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    return PutResult(None, refused="spool_full", blocked=True)
                self._cond.wait(min(remaining, 0.5))
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                evicted, evicted_bytes = self._evict(self._bytes + size - self.settings.max_bytes)
                taken = self.seqs.take(stream)
                assert taken == seq
                cur = self._conn.execute(
                    "INSERT INTO spool (stream, device, seq, topic, payload, props, nbytes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (msg.stream, msg.device_id, seq, msg.topic, msg.payload, orjson.dumps(msg.properties), size))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self.last_id = int(cur.lastrowid or self.last_id)
            self._bytes += size - evicted_bytes
            self._count += 1 - evicted
            self._cond.notify_all()
            return PutResult(seq, evicted, evicted_bytes, blocked=blocked)

    def _evict(self, need: int) -> tuple[int, int]:
        """Delete the oldest rows until ``need`` bytes are free (inside the caller's transaction)."""
        count = freed = 0
        while need > freed:
            rows = self._conn.execute("SELECT id, nbytes FROM spool ORDER BY id LIMIT 64").fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for row_id, nbytes in rows:
                if freed >= need:
                    last = row_id - 1
                    break
                freed += nbytes
                count += 1
                last = row_id
            self._conn.execute("DELETE FROM spool WHERE id <= ?", (last,))
        return count, freed

    def after(self, cursor: int, limit: int) -> list[Spooled]:
        """Up to ``limit`` stored messages with id greater than ``cursor``, oldest first."""
        if limit <= 0:
            return []
        with self._cond:
            rows = self._conn.execute(f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)).fetchall()
        return [_spooled(r) for r in rows]

    def rows(self, ids: Iterable[int]) -> list[Spooled]:
        """The stored messages among ``ids`` (ones already deleted are skipped), oldest first."""
        wanted = sorted(set(ids))
        out: list[Spooled] = []
        with self._cond:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                out += [_spooled(r) for r in self._conn.execute(
                    f"{_SELECT} WHERE id IN ({marks}) ORDER BY id", chunk).fetchall()]
        return out

    def ack(self, ids: Iterable[int]) -> int:
        """Remove messages the broker acknowledged (or that are dropped); returns how many were still stored."""
        batch = list(ids)
        if not batch:
            return 0
        with self._cond:
            self._conn.execute("BEGIN IMMEDIATE")
            removed = freed = 0
            try:
                for start in range(0, len(batch), 500):
                    chunk = batch[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._conn.execute(f"DELETE FROM spool WHERE id IN ({marks}) RETURNING nbytes",
                                              chunk).fetchall()
                    removed += len(rows)
                    freed += sum(r[0] for r in rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._bytes -= freed
            self._count -= removed
            self._cond.notify_all()
            return removed

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._cond:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
