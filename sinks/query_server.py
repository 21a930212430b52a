"""The sink's read-only query endpoint for an embedded (chDB) store it owns.

``POST /query?database=DB`` with SQL as the body and ``Authorization: Bearer TOKEN`` → ``200`` and an
Arrow IPC stream, ``400`` and the ClickHouse error text (or the reason the SQL was refused), ``401``
without the token. ``GET /health`` → ``ok``. Every query passes
:func:`citystream.clickhouse.check_readonly_sql` (no files, URLs, remote tables, settings) and runs on a
dedicated client with ``readonly=1``; writes, DDL and setting changes are refused by ClickHouse itself.
It listens on loopback by default (``sink.query_host``/``sink.query_port``; port 0 picks a free one)
and is advertised, with its token, by :func:`citystream.clickhouse.advertise` in an owner file only
the sink's user can read.

``POST /privacy?database=DB`` with ``{"op", "payload"}`` as JSON and the privacy token runs one of the
fixed privacy operations (:data:`citystream.privacy_store.OPS`: append an audit entry, erase a plate's
records) on a dedicated writable client, and answers ``200`` with the result as JSON, ``400`` with the
reason. It never runs SQL from the request: the embedded store has one owner, so audit and erasure
writes must go through it. The privacy token is not the query token (a reader holding the owner file's
token gets ``401`` there): ``sink.privacy_token`` when configured, else a random one made at start and
written to ``<chdb path>/citystream-privacy-token`` (0600) for the privacy commands, removed at stop.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from citystream.clickhouse import (
    PRIVACY_TOKEN_FILE,
    StoreError,
    chdb_path,
    new_token,
    reader,
    run_readonly,
    write_privacy_token,
)
from citystream.httpd import Handler
from citystream.privacy_store import check_database, run_op, writer
from citystream.settings import ClickHouseSettings

log = logging.getLogger(__name__)
MAX_SQL_BYTES = 1024 * 1024
ROUTES = ("/query", "/privacy")


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


class QueryServer:
    """Serves read-only SQL on the owned store in a daemon thread."""

    def __init__(self, ch: ClickHouseSettings, host: str, port: int, token: str | None = None,
                 privacy_token: str | None = None) -> None:
        self.ch = ch
        self.token = token or new_token()
        self.privacy_token = privacy_token or new_token()
        if hmac.compare_digest(self.token.encode(), self.privacy_token.encode()):
            raise ValueError("the /privacy token must differ from the /query token")
        path = chdb_path(ch.dsn)
        self._privacy_token_file = path / PRIVACY_TOKEN_FILE if path is not None and not privacy_token else None
        server = self

        class QueryHandler(Handler):

            def do_GET(self) -> None:
                if urlparse(self.path).path == "/health":
                    self.reply(200, b"ok", "text/plain")
                else:
                    self.reply(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                url = urlparse(self.path)
                given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
                wanted = server.privacy_token if url.path == "/privacy" else server.token
                if not hmac.compare_digest(given.encode(), wanted.encode()):
                    self.reply(401, b"/privacy wants the privacy token (sink.privacy_token)" if url.path == "/privacy"
                               else b"a bearer token is required (the sink's owner file has it)", "text/plain")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if url.path not in ROUTES or not 0 < length <= MAX_SQL_BYTES:
                    self.reply(400, b"POST /query with SQL or /privacy with JSON in the body (at most 1 MiB)",
                               "text/plain")
                    return
                body = self.rfile.read(length)
                database = parse_qs(url.query).get("database", [server.ch.database])[0]
                try:
                    check_database(database)
                except StoreError as exc:
                    self.reply(400, str(exc).encode(), "text/plain; charset=utf-8")
                    return
                if url.path == "/query":
                    self.answer(lambda: _arrow_bytes(server.run(body.decode(errors="replace"), database)),
                                "application/vnd.apache.arrow.stream")
                else:
                    self.answer(lambda: orjson.dumps(server.privacy(body, database)), "application/json")

            def answer(self, produce: Callable[[], bytes], ctype: str) -> None:
                try:
                    data = produce()
                except StoreError as exc:
                    self.reply(400, str(exc).encode(), "text/plain; charset=utf-8")
                    return
                except Exception as exc:  # never drop the connection without an answer
                    log.exception("query endpoint failed")
                    self.reply(500, f"request failed: {exc}".encode(), "text/plain; charset=utf-8")
                    return
                self.reply(200, data, ctype)

        self.httpd = ThreadingHTTPServer((host, port), QueryHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="query-endpoint", daemon=True)

    @property
    def url(self) -> str:
        """Base URL readers use."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def run(self, sql: str, database: str) -> pa.Table:
        """One read-only query on ``database``."""
        ch = self.ch.model_copy(update={"database": database})
        return run_readonly(reader(ch), sql)

    def privacy(self, body: bytes, database: str) -> dict[str, Any]:
        """One fixed privacy operation (``{"op", "payload"}``) on ``database``."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"privacy: the body is not JSON: {exc}") from exc
        if not isinstance(request, dict):
            raise StoreError('privacy: the body must be {"op": ..., "payload": {...}}')
        result: dict[str, Any] = run_op(writer(self.ch), database, str(request.get("op")), request.get("payload"))
        log.info("privacy operation", extra={"op": request.get("op"), "database": database})
        return result

    def start(self) -> QueryServer:
        """Start serving (and write a generated privacy token for the privacy commands); returns self."""
        if self._privacy_token_file is not None:
            write_privacy_token(self._privacy_token_file.parent, self.privacy_token)
        self.thread.start()
        log.info("query endpoint up", extra={"url": self.url})
        return self

    def stop(self) -> None:
        """Stop serving; remove a generated privacy token."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._privacy_token_file is not None:
            self._privacy_token_file.unlink(missing_ok=True)
