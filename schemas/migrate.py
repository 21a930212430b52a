"""ClickHouse schema: table and view names, and the numbered migrations that create them.

Migrations are ``schemas/migrations/NNNN_name.sql`` files, applied in number order into
``clickhouse.database`` (``{db}`` in the SQL is replaced by it). Each applied file is recorded in
``{db}._migrations`` with its checksum; a re-run applies nothing. Every statement is idempotent
(``IF NOT EXISTS``), so a run interrupted half-way is finished by the next one. A recorded file
whose content changed is reported as an error: add a new file instead of editing an applied one.
A migration that adds a column to a table must also ``CREATE OR REPLACE VIEW`` its ``v_*`` view:
ClickHouse expands ``SELECT *`` when a view is created.

Access control (issue 16): ``0007`` makes every ``v_*`` view ``SQL SECURITY DEFINER`` (on both engines),
so a role with SELECT on a view needs no grant on its table. A file whose header says ``requires: access
management`` (``0008_access_roles.sql``: the ingest writer, analyst and privacy officer roles and their
grants) runs only where the migrating user may manage access: when its first statement is refused as such
(embedded chDB has no writable access storage and its user no ``access_management``; a server user
without it gets ``ACCESS_DENIED``) the file is skipped with a logged warning, not recorded, and tried
again at the next run. With ``tenants`` (``citystream migrate`` passes the tenants the settings know),
each tenant then gets a role ``citystream_analyst_<tenant>`` holding the analyst role and a row policy on
every analyst view (``tenant = '<tenant>'``): :func:`tenant_policy_statements`. The grants live in that
one file; :func:`access_grants` reads them back (the tests render them into an embedded users.xml to
show the denials on the engine).

After the files, the retention (TTL) of each table is set from ``retention.tables`` (0 = keep
forever): raw tables on ``captured_at``, rollups on their bucket, ``audit_log`` on ``at``. A dead letter
holding a camera frame (JPEG bytes, or from ``raw.frames`` or an MQTT ``camera/…/frame`` topic) loses
its ``original_bytes`` after ``retention.dead_letter_image_days`` (a column TTL; the record stays with
the table's TTL). Each is altered only when it differs from what the table already has, and without
rewriting existing parts at once (``materialize_ttl_after_modify=0``: merges apply it).

Cluster variant (``citystream migrate --cluster-sql NAME`` prints it): :func:`cluster_sql` rewrites
the same files for a ClickHouse cluster (``ON CLUSTER``, ``Replicated*MergeTree`` with the usual
``{shard}``/``{replica}`` macros), and :func:`distributed_sql` adds a ``<table>_all`` ``Distributed``
table per raw table, sharded by ``cityHash64(event_id)`` so every copy of an event lands on the same
shard, where ReplacingMergeTree and ``FINAL`` can collapse it. The sink writes to ``<table>_all``
(or to local tables per shard); ``insert_deduplication_token`` then uses the replicated dedup window.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATIONS_TABLE = "_migrations"

SENSOR_READINGS = "sensor_readings"
PLATE_READS = "plate_reads"
FACE_MATCHES = "face_matches"
ALERTS = "alerts"
DEVICE_STATUS = "device_status"
FRAME_INDEX = "frame_index"
DEAD_LETTERS = "dead_letters"
SINK_WINDOWS = "_sink_windows"

TABLES: tuple[str, ...] = (SENSOR_READINGS, PLATE_READS, FACE_MATCHES, ALERTS, DEVICE_STATUS, FRAME_INDEX, DEAD_LETTERS)
ROLLUP_VIEWS: tuple[str, ...] = ("v_sensor_1m", "v_sensor_1h", "v_vehicles_1h", "v_alerts_1d")
AUDIT_LOG = "audit_log"
TIME_COLUMNS: dict[str, str] = {**{table: "captured_at" for table in TABLES}, "sensor_1m": "minute",
                                "sensor_1h": "hour", "vehicles_1h": "hour", "alerts_1d": "day", AUDIT_LOG: "at"}
"""Every table with a retention, and the column its TTL counts from."""
_FRAME_IMAGE = ("startsWith(original_bytes, unhex('FFD8FF')) OR endsWith(original_topic, 'raw.frames') OR "
                "match(original_topic, '/camera/[^/]+/frame$')")


def view_of(table: str) -> str:
    """The analyst view (duplicates hidden) of a raw table."""
    return f"v_{table}"


VIEWS: dict[str, str] = {table: view_of(table) for table in TABLES}

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
ACCESS_MARKER = "requires: access management"
ANALYST_ROLE = "citystream_analyst"
_ACCESS_REFUSED = ("ACCESS_DENIED", "ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND", "no writeable access storage",
                   "ACCESS_STORAGE_READONLY")
_GRANT = re.compile(r"^GRANT (.+) ON (\S+) TO (\w+)$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def needs_access_management(self) -> bool:
        """Whether the file creates roles or grants (skipped where the engine or user cannot manage access)."""
        return ACCESS_MARKER in self.sql.split("\n", 1)[0]

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``{db}`` replaced, comments and blanks dropped."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip().replace("{db}", f"`{database}`") for s in text.split(";") if s.strip()]


class MigrationError(Exception):
    """A migration file is malformed or an applied one was edited."""


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; duplicate or malformed names are errors."""
    found: dict[int, Migration] = {}
    for file in sorted(directory.glob("*.sql")):
        match = _NAME.match(file.name)
        if not match:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {file.name}")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {found[version].name}, {file.name}")
        found[version] = Migration(version, file.stem, file.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _applied(client: Any, database: str) -> dict[int, str]:
    exists = client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                          parameters={"db": database, "t": MIGRATIONS_TABLE}).result_rows[0][0]
    if exists:  # no CREATE: a sink running as the ingest writer (0008) has no grant for it
        rows = client.query(f"SELECT version, checksum FROM `{database}`.{MIGRATIONS_TABLE} FINAL").result_rows
        return {int(v): str(c) for v, c in rows}
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{database}`.{MIGRATIONS_TABLE} (version UInt32, name String, checksum String,"
        " applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version")
    rows = client.query(f"SELECT version, checksum FROM `{database}`.{MIGRATIONS_TABLE} FINAL").result_rows
    return {int(v): str(c) for v, c in rows}


def migrate(client: Any, database: str, directory: Path = MIGRATIONS_DIR,
            retention_days: Mapping[str, int] | None = None, image_days: int | None = None,
            tenants: Sequence[str] = ()) -> list[str]:
    """Apply pending migrations (and retention, tenant policies); returns the names applied now (empty = nothing).

    A file that needs access management is skipped (logged, not recorded) where it is refused as such.
    """
    applied = _applied(client, database)
    done: list[str] = []
    access = False
    for mig in load_migrations(directory):
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(f"migration {mig.name} was edited after it was applied; add a new file")
            access |= mig.needs_access_management
            continue
        if mig.needs_access_management:
            refused = _run_access(client, mig.statements(database))
            if refused:
                log.warning("migration skipped: this engine or user cannot manage access (roles, grants, row "
                            "policies); run it as a user with access_management on a ClickHouse server",
                            extra={"database": database, "migration": mig.name, "reason": refused})
                continue
            access = True
        else:
            for statement in mig.statements(database):
                client.command(statement)
        client.insert(MIGRATIONS_TABLE, [[mig.version, mig.name, mig.checksum, datetime.now(UTC)]],
                      column_names=["version", "name", "checksum", "applied_at"], database=database)
        log.info("migration applied", extra={"database": database, "migration": mig.name})
        done.append(mig.name)
    if tenants and access:
        done.extend(apply_tenant_policies(client, database, tenants))
    if retention_days:
        done.extend(apply_retention(client, database, retention_days))
    if image_days is not None:
        done.extend(apply_image_retention(client, database, image_days))
    return done


def _refusal(exc: Exception) -> str | None:
    """The first line of an error that says the user or engine cannot manage access, else None."""
    text = str(exc)
    return text.splitlines()[0][:300] if any(mark in text for mark in _ACCESS_REFUSED) else None


def _run_access(client: Any, statements: Sequence[str]) -> str | None:
    """Run access statements; the refusal reason when the first is refused as access management, else None."""
    for i, statement in enumerate(statements):
        try:
            client.command(statement)
        except Exception as exc:
            reason = _refusal(exc)
            if i == 0 and reason is not None:
                return reason
            raise
    return None


def access_grants(database: str, directory: Path = MIGRATIONS_DIR) -> dict[str, list[str]]:
    """Role -> its ``GRANT <privileges> ON <object>`` statements (without ``TO``), from the access migrations."""
    grants: dict[str, list[str]] = {}
    for mig in load_migrations(directory):
        if mig.needs_access_management:
            for statement in mig.statements(database):
                match = _GRANT.match(statement)
                if match:
                    grants.setdefault(match.group(3), []).append(f"GRANT {match.group(1)} ON {match.group(2)}")
    return grants


def analyst_views(database: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The views granted to the analyst role (each gets a per-tenant row policy)."""
    return [grant.rsplit(" ON ", 1)[1].split(".", 1)[1]
            for grant in access_grants(database, directory).get(ANALYST_ROLE, [])]


def tenant_role(tenant: str) -> str:
    """The analyst role of one tenant (its row policies name it)."""
    return f"{ANALYST_ROLE}_{tenant.replace('-', '_')}"


def tenant_policy_statements(database: str, tenant: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """A tenant's analyst role (holding the analyst role) and its row policy on every analyst view."""
    if not re.fullmatch(r"[a-z0-9-]+", tenant):
        raise MigrationError(f"tenant {tenant!r}: must match [a-z0-9-]+")
    role = tenant_role(tenant)
    out = [f"CREATE ROLE IF NOT EXISTS {role}", f"GRANT {ANALYST_ROLE} TO {role}"]
    out += [f"CREATE ROW POLICY IF NOT EXISTS {role} ON `{database}`.{view} FOR SELECT USING tenant = '{tenant}' "
            f"TO {role}" for view in analyst_views(database, directory)]
    return out


def apply_tenant_policies(client: Any, database: str, tenants: Sequence[str]) -> list[str]:
    """Create each tenant's analyst role and row policies (idempotent); returns ``access:<tenant>`` for new ones."""
    have = {str(r[0]) for r in client.query(
        "SELECT short_name FROM system.row_policies WHERE database = {db:String}",
        parameters={"db": database}).result_rows}
    made: list[str] = []
    for tenant in sorted(set(tenants)):
        if tenant_role(tenant) in have:
            continue
        refused = _run_access(client, tenant_policy_statements(database, tenant))
        if refused:
            log.warning("tenant row policies skipped: this user cannot manage access",
                        extra={"database": database, "tenant": tenant, "reason": refused})
            return made
        log.info("tenant analyst role and row policies made", extra={"database": database, "tenant": tenant})
        made.append(f"access:{tenant}")
    return made


def _ttl_clause(table: str, days: int) -> str:
    return f"toDateTime({TIME_COLUMNS[table]}) + toIntervalDay({days})"


def apply_retention(client: Any, database: str, retention_days: Mapping[str, int]) -> list[str]:
    """Set each table's TTL to its configured days (0 removes it); returns ``ttl:<table>`` for tables changed."""
    changed: list[str] = []
    for table, days in sorted(retention_days.items()):
        if table not in TIME_COLUMNS:
            raise MigrationError(f"retention for unknown table {table!r}; tables: {', '.join(TIME_COLUMNS)}")
        current = client.command(
            f"SELECT engine_full FROM system.tables WHERE database = '{database}' AND name = '{table}'")
        has_ttl = " TTL " in str(current)
        wanted = _ttl_clause(table, days) if days > 0 else None
        if wanted is not None and wanted in str(current):
            continue
        if wanted is None and not has_ttl:
            continue
        if wanted is None:
            client.command(f"ALTER TABLE `{database}`.{table} REMOVE TTL")
        else:
            client.command(f"ALTER TABLE `{database}`.{table} MODIFY TTL {wanted}",
                           settings={"materialize_ttl_after_modify": 0})
        log.info("retention set", extra={"database": database, "table": table, "days": days})
        changed.append(f"ttl:{table}")
    return changed


def image_ttl(days: int) -> str:
    """The column TTL of ``dead_letters.original_bytes``: camera frames after ``days``, other input never."""
    return (f"if({_FRAME_IMAGE}, toDateTime(captured_at) + toIntervalDay({days}), "
            "toDateTime(4294967295, 'UTC'))")


def apply_image_retention(client: Any, database: str, days: int) -> list[str]:
    """Set the TTL of the camera images dead letters hold; returns ``ttl:dead_letters.original_bytes`` if changed."""
    if days < 1:
        raise MigrationError("dead letter images: days must be >= 1")
    wanted = image_ttl(days)
    current = str(client.command(
        f"SELECT create_table_query FROM system.tables WHERE database = '{database}' AND name = '{DEAD_LETTERS}'"))
    if wanted.replace("'", "\\'") in current or wanted in current:
        return []
    client.command(f"ALTER TABLE `{database}`.{DEAD_LETTERS} MODIFY COLUMN original_bytes String CODEC(ZSTD(3)) "
                   f"TTL {wanted}", settings={"materialize_ttl_after_modify": 0})
    log.info("dead letter image retention set", extra={"database": database, "days": days})
    return [f"ttl:{DEAD_LETTERS}.original_bytes"]


_ENGINE = re.compile(r"ENGINE\s*=\s*(Replacing|Aggregating)?MergeTree(\(([^)]*)\))?")


def cluster_sql(migration: Migration, database: str, cluster: str) -> list[str]:
    """The statements of one migration for a cluster: ``ON CLUSTER`` and ``Replicated*MergeTree``."""
    out: list[str] = []
    for statement in migration.statements(database):
        statement = re.sub(r"^(CREATE (?:MATERIALIZED )?(?:TABLE|VIEW) IF NOT EXISTS \S+|ALTER TABLE \S+|"
                           r"CREATE ROLE IF NOT EXISTS \S+|GRANT)", rf"\1 ON CLUSTER `{cluster}`", statement)

        def replicated(m: re.Match[str]) -> str:
            args = ["'/clickhouse/tables/{shard}/{database}/{table}'", "'{replica}'"]
            if m.group(3):
                args.append(m.group(3))
            return f"ENGINE = Replicated{m.group(1) or ''}MergeTree({', '.join(args)})"

        out.append(_ENGINE.sub(replicated, statement))
    return out


def distributed_sql(database: str, cluster: str) -> list[str]:
    """``Distributed`` tables ``<table>_all`` over the replicated raw tables, sharded by event_id."""
    return [f"CREATE TABLE IF NOT EXISTS `{database}`.{table}_all ON CLUSTER `{cluster}` AS `{database}`.{table} "
            f"ENGINE = Distributed(`{cluster}`, `{database}`, {table}, cityHash64(event_id))" for table in TABLES]
