"""The fixed privacy operations on the store (audit append, plate erasure) and the route to run them.

Reads (privacy search, the audit log) take the read-only path (:func:`citystream.clickhouse.query_rows`).
Writes are a closed set of operations, :data:`OPS`, never SQL from the caller:

- ``audit``: append one audit entry to ``audit_log``;
- ``erase``: delete every record linked to the given ``(tenant, plate_pseudonym)`` pairs (see
  :func:`linked_where`) from ``dead_letters``, ``alerts``, ``frame_index`` and ``plate_reads``
  (``ALTER TABLE … DELETE`` with ``mutations_sync=2``: the rows are gone from disk when it returns), and
  rebuild the ``vehicles_1h`` hour buckets those reads were counted in from the reads that remain.
  Returns the records erased per table and the archived frames' references (the caller deletes the files).

:func:`call` routes an operation like the read path routes a query: on an embedded path another process
owns (the sink), ``POST {owner url}/privacy?database=DB`` with ``{"op", "payload"}`` as JSON and the
privacy token (:func:`citystream.clickhouse.privacy_token`, never the query token), answered by
:func:`run_op` inside the owner; otherwise it runs here, on a dedicated writable client (a server DSN,
the owner itself, or an embedded path nobody holds).

Limits: Kafka topics keep their records until their retention (``plate.reads`` 7 days); a rollup bucket
rebuilt while the sink inserts reads of the same camera and hour may count a read of that moment twice.
"""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from citystream.clickhouse import (
    StoreError,
    chdb_path,
    connect,
    opened_here,
    privacy_token,
    query_rows,
    read_owner,
)
from citystream.schemas import migrate as schema
from citystream.settings import ClickHouseSettings, Settings

AUDIT_TABLE = "audit_log"
AUDIT_COLUMNS = ("at", "actor", "action", "tenant", "subject", "reason", "legal_basis", "details")
VEHICLES_1H = "vehicles_1h"
OPS = ("audit", "erase")
ERASE_ORDER = (schema.DEAD_LETTERS, schema.ALERTS, schema.FRAME_INDEX, schema.PLATE_READS)
"""Dependent tables first: their links are found through plate_reads."""
MAX_PAIRS = 1000
MAX_FIELD = 4096
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[a-z0-9-]{1,64}$")
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # as clickhouse.database; it is quoted into the SQL
_MUTATION = {"mutations_sync": 2}
_lock = threading.Lock()
_writers: dict[str, Any] = {}
_last_at = datetime.min.replace(tzinfo=UTC)


class PrivacyOpError(StoreError):
    """A privacy operation was malformed (unknown op, bad pseudonym or tenant, missing field)."""


Pair = tuple[str, str]


def check_database(name: str) -> None:
    """Refuse a database name that is not a plain identifier (it is quoted into SQL); PrivacyOpError."""
    if not _DATABASE.match(name):
        raise PrivacyOpError(f"bad database name {name[:80]!r}")


def check_pairs(raw: Any) -> list[Pair]:
    """Validated ``(tenant, pseudonym)`` pairs (lower-case tenant names, 64 hex characters)."""
    if not isinstance(raw, (list, tuple)) or not 0 < len(raw) <= MAX_PAIRS:
        raise PrivacyOpError(f"pairs must be a list of 1..{MAX_PAIRS} [tenant, pseudonym] items")
    pairs: list[Pair] = []
    for item in raw:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise PrivacyOpError("each pair is [tenant, pseudonym]")
        tenant, alias = item
        if not _TENANT.match(tenant) or not _PSEUDONYM.match(alias):
            raise PrivacyOpError(f"bad pair: tenant must match {_TENANT.pattern}, pseudonym 64 hex characters")
        pairs.append((tenant, alias))
    return sorted(set(pairs))


def linked_where(database: str, pairs: Sequence[Pair], resolved: bool = False) -> dict[str, str]:
    """Per table, the WHERE clause of the records linked to the plate pairs (validated literals only).

    ``resolved``: the reads' ids are bound as the parameters ``read_ids`` and ``frame_ids`` (the erasure
    resolves them first, so its mutations hold no subquery); otherwise subqueries on ``plate_reads``.
    """
    pairs = check_pairs(list(pairs))
    db = f"`{database}`"
    tuples = ", ".join(f"('{t}', '{p}')" for t, p in pairs)
    aliases = ", ".join(sorted({f"'{p}'" for _t, p in pairs}))
    reads = f"(tenant, plate_pseudonym) IN ({tuples})"
    read_ids = f"(SELECT event_id FROM {db}.{schema.PLATE_READS} WHERE {reads})"
    frame_ids = f"(SELECT source_event_id FROM {db}.{schema.PLATE_READS} WHERE {reads})"
    if resolved:
        read_ids, frame_ids = "{read_ids:Array(String)}", "{frame_ids:Array(String)}"
    return {
        schema.PLATE_READS: reads,
        schema.ALERTS: f"source_event_id IN {read_ids}",
        schema.FRAME_INDEX: f"event_id IN {frame_ids}",
        schema.DEAD_LETTERS: f"multiSearchAny(original_bytes, [{aliases}]) OR headers['event_id'] IN {frame_ids}",
        VEHICLES_1H: (f"(tenant, district, device_id, hour) IN (SELECT tenant, district, device_id, "
                      f"toStartOfHour(captured_at) FROM {db}.{schema.PLATE_READS} WHERE {reads})"),
    }


SEARCHED = (schema.PLATE_READS, schema.ALERTS, schema.FRAME_INDEX, schema.DEAD_LETTERS, VEHICLES_1H)
"""Tables a plate's records are searched in, in this order (analyst views: duplicates hidden)."""


def reading_tenants(settings: Settings) -> list[str]:
    """Tenants that have plate reads stored (each has its own pseudonym key, or the ``*`` one)."""
    db = f"`{settings.clickhouse.database}`"
    rows = query_rows(settings, f"SELECT DISTINCT tenant FROM {db}.{schema.PLATE_READS} ORDER BY tenant")
    return [str(r["tenant"]) for r in rows]


def search(settings: Settings, pairs: Sequence[Pair]) -> dict[str, list[dict[str, Any]]]:
    """Every stored record linked to the plate pairs, per table (read-only path)."""
    if not pairs:
        return {table: [] for table in SEARCHED}
    where = linked_where(settings.clickhouse.database, pairs)
    db = f"`{settings.clickhouse.database}`"
    return {table: query_rows(settings, f"SELECT * FROM {db}.{schema.view_of(table)} WHERE {where[table]} "
                                       f"ORDER BY {schema.TIME_COLUMNS[table]}")
            for table in SEARCHED}


def writer(ch: ClickHouseSettings) -> Any:
    """A cached writable client (no default database) on the configured store, used only for :data:`OPS`."""
    client = _writers.get(ch.dsn)
    if client is None:
        client = connect(ch, database=False)
        _writers[ch.dsn] = client
    return client


def call(settings: Settings | ClickHouseSettings, op: str, payload: dict[str, Any],
         timeout: float = 300.0) -> dict[str, Any]:
    """Run one privacy operation wherever the store is (owning sink, server, or the path itself)."""
    ch = settings.clickhouse if isinstance(settings, Settings) else settings
    path = chdb_path(ch.dsn)
    if path is not None and not opened_here(ch):
        owner = read_owner(path)
        if owner is not None:
            url = f"{owner.url}/privacy?{urllib.parse.urlencode({'database': ch.database})}"
            request = urllib.request.Request(url, data=orjson.dumps({"op": op, "payload": payload}), method="POST",
                                             headers={"Authorization": f"Bearer {privacy_token(settings)}",
                                                      "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    answer: dict[str, Any] = orjson.loads(resp.read())
                    return answer
            except urllib.error.HTTPError as exc:
                raise StoreError(exc.read().decode(errors="replace") or str(exc)) from exc
            except OSError as exc:
                raise StoreError(f"privacy endpoint {owner.url} of pid {owner.pid} unreachable: {exc}") from exc
        if not path.is_dir():
            raise StoreError(f"no embedded store at {path} (run 'citystream migrate' or start the sink)")
    return run_op(writer(ch), ch.database, op, payload)


def run_op(client: Any, database: str, op: str, payload: Any) -> dict[str, Any]:
    """Run one operation of :data:`OPS` on a writable client; malformed requests raise PrivacyOpError."""
    if op not in OPS:
        raise PrivacyOpError(f"unknown privacy operation {op!r}; known: {', '.join(OPS)}")
    check_database(database)
    if not isinstance(payload, dict):
        raise PrivacyOpError("payload must be a JSON object")
    with _lock:
        try:
            if op == "audit":
                return _append_audit(client, database, payload.get("entry"))
            return _erase(client, database, check_pairs(payload.get("pairs")))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"privacy {op} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


def _append_audit(client: Any, database: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise PrivacyOpError("audit: 'entry' must be an object")
    texts = [entry.get(name, "") for name in AUDIT_COLUMNS[1:-1]]
    if not all(isinstance(t, str) and len(t) <= MAX_FIELD for t in texts) or not texts[0] or not texts[1]:
        raise PrivacyOpError(f"audit: actor and action required; text fields at most {MAX_FIELD} characters")
    details = entry.get("details") or {}
    if not isinstance(details, dict):
        raise PrivacyOpError("audit: 'details' must be an object")
    global _last_at
    at = max(datetime.now(UTC), _last_at + timedelta(milliseconds=1))  # this process's entries keep their order
    _last_at = at
    row = [at, *texts, orjson.dumps(details, default=str).decode()]
    client.insert(AUDIT_TABLE, [row], column_names=list(AUDIT_COLUMNS), database=database)
    return {"at": at.isoformat()}


def _erase(client: Any, database: str, pairs: list[Pair]) -> dict[str, Any]:
    db = f"`{database}`"
    reads = client.query(
        f"SELECT DISTINCT event_id, source_event_id, tenant, district, device_id, toStartOfHour(captured_at) "
        f"FROM {db}.{schema.PLATE_READS} WHERE {linked_where(database, pairs)[schema.PLATE_READS]}").result_rows
    ids = {"read_ids": sorted({str(r[0]) for r in reads}), "frame_ids": sorted({str(r[1]) for r in reads})}
    where = linked_where(database, pairs, resolved=True)
    refs = [str(r[0]) for r in client.query(
        f"SELECT DISTINCT object_ref FROM {db}.{schema.FRAME_INDEX} WHERE {where[schema.FRAME_INDEX]}",
        parameters=ids).result_rows]
    counts: dict[str, int] = {}
    for table in ERASE_ORDER:
        n = client.query(f"SELECT uniqExact(event_id) FROM {db}.{table} WHERE {where[table]}",
                         parameters=ids).result_rows[0][0]
        counts[table] = int(n)
        if n:
            client.command(f"ALTER TABLE {db}.{table} DELETE WHERE {where[table]}", parameters=ids,
                           settings=_MUTATION)
    counts[VEHICLES_1H] = _rebuild_vehicles(client, database, sorted({tuple(r[2:]) for r in reads}))
    return {"counts": counts, "frame_refs": sorted(refs)}


def _rebuild_vehicles(client: Any, database: str, buckets: Sequence[Sequence[Any]]) -> int:
    """Recount the ``vehicles_1h`` buckets from the reads left in ``plate_reads``; returns the bucket count."""
    if not buckets:
        return 0
    db = f"`{database}`"
    keys = {"keys": [(str(t), str(d), str(c), h) for t, d, c, h in buckets]}
    in_keys = "(tenant, district, device_id, {col}) IN {{keys:Array(Tuple(String, String, String, DateTime('UTC')))}}"
    client.command(f"ALTER TABLE {db}.{VEHICLES_1H} DELETE WHERE {in_keys.format(col='hour')}",
                   parameters=keys, settings=_MUTATION)
    client.command(
        f"INSERT INTO {db}.{VEHICLES_1H} (tenant, district, device_id, hour, reads, vehicles_state) "
        f"SELECT tenant, district, device_id, toStartOfHour(captured_at) AS hour, count(), uniqState(plate_pseudonym) "
        f"FROM {db}.{schema.PLATE_READS} FINAL WHERE {in_keys.format(col='toStartOfHour(captured_at)')} "
        f"GROUP BY tenant, district, device_id, hour", parameters=keys, settings={"insert_deduplicate": 0})
    return len(buckets)
