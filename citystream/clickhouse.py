"""ClickHouse clients for both engines, and the read-only query route every reader uses.

Two engines, one client library (clickhouse-connect):

- ``http(s)://host:port`` — a ClickHouse server; every process connects to it directly.
- ``chdb://PATH`` — embedded chDB. A data directory can be opened by one process at a time, and a
  process can open only one path in its life. The process that owns it (normally ``citystream
  sink``) serves a read-only query endpoint and advertises it in ``PATH/citystream-owner.json``
  (``{"pid", "url", "started_at"}``), removed on clean exit. Readers route like this:

  1. this process already opened PATH (the sink itself, tests) → an in-process read-only client;
  2. the owner file names a live process → HTTP ``POST {url}/query?database=DB`` with the SQL as the
     body; the answer is an Arrow IPC stream (types survive the trip: DateTime64 stays a UTC datetime);
  3. nobody owns PATH → open it directly, read-only.

Read-only means a dedicated client (in chDB a per-query setting would stick to the session, so writers
and readers never share a client) with ``readonly=1`` on chDB — Arrow strings as bytes are set before it,
since no setting can change afterwards — and ``readonly=2`` (no writes or DDL, settings allowed) on a
server, where each request carries its settings; give server readers a read-only user as well.
Before any of that, :func:`check_readonly_sql` (:mod:`citystream.readonly_sql`) refuses everything but
one reading statement, and what reads or writes the host or the network (``INTO OUTFILE``, ``SETTINGS``,
``file()``, ``url()``, ``s3()``, ``remote()``, ``executable()`` and the other such functions): the
embedded engine writes ``INTO OUTFILE`` files and runs the scalar ``file()`` even with ``readonly=1``.

The owner's endpoint requires the bearer token it writes into the owner file (mode 0600), so only
the user that runs the sink (and root) can query through it. Its privileged ``/privacy`` route wants
another token: ``sink.privacy_token`` from settings, or (unset) one the sink makes per start and
writes to ``PATH/citystream-privacy-token`` (0600); the query token is refused there.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from citystream import readonly_sql
from citystream.settings import ClickHouseSettings, Settings

OWNER_FILE = "citystream-owner.json"
PRIVACY_TOKEN_FILE = "citystream-privacy-token"
READONLY_CHDB = {"output_format_arrow_string_as_string": 0, "readonly": 1}  # order matters: readonly last
READONLY_SERVER = {"readonly": 2}

_lock = threading.Lock()
_opened_path: Path | None = None
_readers: dict[tuple[str, str], Any] = {}


class StoreError(Exception):
    """The store could not be reached or the query failed; the message says why."""


class StoreBusy(StoreError):
    """The embedded data directory is owned by another process that serves no query endpoint."""


@dataclass(frozen=True)
class Owner:
    """The process that owns an embedded data directory and where it answers read-only queries."""

    pid: int
    url: str
    started_at: float
    token: str = ""


def chdb_path(dsn: str) -> Path | None:
    """The data directory of a ``chdb://PATH`` DSN (relative paths are relative to the cwd), else None."""
    if not dsn.startswith("chdb://"):
        return None
    return Path(dsn[len("chdb://"):]).expanduser().resolve()


def _settings_of(settings: ClickHouseSettings | Settings) -> ClickHouseSettings:
    return settings.clickhouse if isinstance(settings, Settings) else settings


def connect(settings: ClickHouseSettings | Settings, *, readonly: bool = False, database: bool = True) -> Any:
    """A clickhouse-connect client for the configured DSN (``database=False``: no default database)."""
    ch = _settings_of(settings)
    db = ch.database if database else None
    path = chdb_path(ch.dsn)
    opts: dict[str, Any] = dict(READONLY_SERVER if path is None else READONLY_CHDB) if readonly else {}
    if path is None:
        try:
            return clickhouse_connect.get_client(dsn=ch.dsn, username=ch.username, database=db,
                                                 password=ch.password.get_secret_value(), settings=opts)
        except Exception as exc:
            raise StoreError(f"cannot connect to {ch.dsn}: {exc}") from exc
    global _opened_path
    with _lock:
        if _opened_path is not None and _opened_path != path:
            raise StoreError(f"this process already opened chDB path {_opened_path}; one path per process")
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=str(path), database=db, settings=opts)
        except Exception as exc:
            if "Cannot lock file" in str(exc):
                raise StoreBusy(f"chDB path {path} is in use by another process") from exc
            raise StoreError(f"cannot open chDB path {path}: {exc}") from exc
        _opened_path = path
    return client


def opened_here(settings: ClickHouseSettings | Settings) -> bool:
    """Whether this process has the configured embedded path open."""
    return _opened_path is not None and _opened_path == chdb_path(_settings_of(settings).dsn)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: Path) -> Owner | None:
    """The live owner advertised in ``path``, or None (no file, unreadable, or the process is gone)."""
    try:
        doc = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
        owner = Owner(pid=int(doc["pid"]), url=str(doc["url"]), started_at=float(doc["started_at"]),
                      token=str(doc.get("token", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.pid == os.getpid() or not _pid_alive(owner.pid):
        return None
    return owner


@contextmanager
def advertise(settings: ClickHouseSettings | Settings, url: str, token: str = "") -> Iterator[None]:
    """Advertise this process (its query URL and token) as the owner of the embedded path (no-op for servers)."""
    path = chdb_path(_settings_of(settings).dsn)
    if path is None:
        yield
        return
    file = path / OWNER_FILE
    tmp = file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps({"pid": os.getpid(), "url": url, "started_at": time.time(), "token": token}))
    tmp.replace(file)
    try:
        yield
    finally:
        file.unlink(missing_ok=True)


def new_token() -> str:
    """A random bearer token for the query endpoint."""
    return secrets.token_urlsafe(24)


def write_privacy_token(path: Path, token: str) -> Path:
    """Write the sink's generated ``/privacy`` token next to the embedded store (mode 0600); returns the file."""
    file = path / PRIVACY_TOKEN_FILE
    tmp = file.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token)
    tmp.replace(file)
    return file


def privacy_token(settings: ClickHouseSettings | Settings) -> str:
    """The token for the owner's ``/privacy`` route: ``sink.privacy_token``, else the owner's generated one."""
    if isinstance(settings, Settings) and settings.sink.privacy_token.get_secret_value():
        return settings.sink.privacy_token.get_secret_value()
    path = chdb_path(_settings_of(settings).dsn)
    try:
        return "" if path is None else (path / PRIVACY_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def reader(settings: ClickHouseSettings | Settings) -> Any:
    """A cached read-only client on the configured store and database."""
    ch = _settings_of(settings)
    key = (ch.dsn, ch.database)
    client = _readers.get(key)
    if client is None:
        client = connect(ch, readonly=True)
        _readers[key] = client
    return client


def _remote_arrow(owner: Owner, database: str, sql: str, timeout: float) -> pa.Table:
    url = f"{owner.url}/query?{urllib.parse.urlencode({'database': database})}"
    request = urllib.request.Request(url, data=sql.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {owner.token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise StoreError(exc.read().decode(errors="replace") or str(exc)) from exc
    except OSError as exc:
        raise StoreError(f"query endpoint {owner.url} of pid {owner.pid} unreachable: {exc}") from exc
    table: pa.Table = pa_ipc.open_stream(body).read_all()
    return table


def _text_type(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with every binary part (ClickHouse String/FixedString) turned into text."""
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_fixed_size_binary(dtype):
        return pa.string()
    if pa.types.is_map(dtype):
        item = dtype.item_field
        return pa.map_(_text_type(dtype.key_type), pa.field(item.name, _text_type(item.type), item.nullable))
    if pa.types.is_list(dtype):
        value = dtype.value_field
        return pa.list_(pa.field(value.name, _text_type(value.type), value.nullable))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _text_type(f.type), f.nullable) for f in dtype])
    return dtype


def as_text(table: pa.Table) -> pa.Table:
    """String columns as text where every value is UTF-8; columns holding other bytes stay binary."""
    columns = []
    for column in table.columns:
        target = _text_type(column.type)
        if target != column.type:
            try:
                source = column.cast(pa.binary()) if pa.types.is_fixed_size_binary(column.type) else column
                column = source.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # e.g. original_bytes of a dead letter: stays bytes
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def check_readonly_sql(sql: str) -> None:
    """Refuse SQL that could read or write the host or the network, change settings, or run twice (StoreError).

    The rules are :func:`citystream.readonly_sql.check_readonly_sql`'s.
    """
    try:
        readonly_sql.check_readonly_sql(sql)
    except readonly_sql.RefusedSql as exc:
        raise StoreError(str(exc)) from exc


def run_readonly(client: Any, sql: str) -> pa.Table:
    """Run SQL on a read-only client as an Arrow table; SQL errors and refused SQL become StoreError.

    Strings are fetched as bytes and turned into text per column only when valid UTF-8, so raw bytes
    (a dead letter's original payload) come back intact instead of failing the whole query.
    """
    check_readonly_sql(sql)
    try:
        table: pa.Table = client.query_arrow(sql, use_strings=False)
    except Exception as exc:
        raise StoreError(str(exc).split("\n")[0]) from exc
    return as_text(table)


def query_arrow(settings: ClickHouseSettings | Settings, sql: str, timeout: float = 60.0) -> pa.Table:
    """Run read-only SQL wherever the store is (server, own process, owning sink, or the path itself)."""
    ch = _settings_of(settings)
    path = chdb_path(ch.dsn)
    if path is not None and not opened_here(ch):
        owner = read_owner(path)
        if owner is not None:
            return _remote_arrow(owner, ch.database, sql, timeout)
        if not path.is_dir():
            raise StoreError(f"no embedded store at {path} (run 'citystream migrate' or start the sink)")
    return run_readonly(reader(ch), sql)


def query_rows(settings: ClickHouseSettings | Settings, sql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Run read-only SQL and return the rows as dicts (same route as ``citystream query``)."""
    rows: list[dict[str, Any]] = query_arrow(settings, sql, timeout).to_pylist(maps_as_pydicts="lossy")
    return rows
