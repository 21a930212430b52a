"""Durable per-gateway, per-stream ``seq`` counters.

Storage: a table in the gateway's SQLite state database (stdlib ``sqlite3``, WAL journal), the same
database and the same transaction as the disk spool (:mod:`citystream.ingest.gateway.spool`). A seq is
taken and its message stored in one commit, so after ``kill -9`` or a restart the counter continues
after the last message that was stored, and no stored message is lost: seq starts at 0 and grows by
1 with no holes. A hole appears only when a stored message is later dropped on purpose (spool full
with ``drop_oldest``, or a broker refusal), and that drop is counted.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS seq (
    gateway TEXT NOT NULL,
    stream TEXT NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (gateway, stream)
)
"""


class SeqStore:
    """Counters of one gateway in an open SQLite connection; callers hold the connection's lock."""

    def __init__(self, conn: sqlite3.Connection, gateway_id: str) -> None:
        self._conn = conn
        self._gateway = gateway_id
        conn.execute(SCHEMA)

    def take(self, stream: str) -> int:
        """Reserve the next seq of ``stream``; durable once the surrounding transaction commits."""
        row = self._conn.execute("SELECT next FROM seq WHERE gateway = ? AND stream = ?",
                                 (self._gateway, stream)).fetchone()
        value = int(row[0]) if row else 0
        self._conn.execute("INSERT INTO seq (gateway, stream, next) VALUES (?, ?, ?) "
                           "ON CONFLICT (gateway, stream) DO UPDATE SET next = excluded.next",
                           (self._gateway, stream, value + 1))
        return value

    def peek(self, stream: str) -> int:
        """The seq the next ``take`` of ``stream`` will return."""
        row = self._conn.execute("SELECT next FROM seq WHERE gateway = ? AND stream = ?",
                                 (self._gateway, stream)).fetchone()
        return int(row[0]) if row else 0
