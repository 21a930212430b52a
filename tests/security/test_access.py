"""ClickHouse roles and tenant row policies: the grants of migration 0008 deny what they should on the engine.

Embedded chDB cannot run ``CREATE ROLE`` (its only access storage is its users.xml, read-only), so the
migration skips 0008 there. The engine does enforce grants and row policies of users defined in a
users.xml, so each role is checked as the engine's ``default`` user of a process opened with a users.xml
holding exactly that role's ``GRANT`` statements from 0008 (:func:`access_grants`) and, for a tenant
analyst, the ``USING`` filter of its row policies (:func:`tenant_policy_statements`). The views' definer
is a separate owner user, as on a server where the owner runs the migrations and analysts hold roles.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from citystream import clickhouse
from citystream.schemas import migrate as schema
from citystream.schemas.migrate import (
    ANALYST_ROLE,
    access_grants,
    analyst_views,
    load_migrations,
    migrate,
    tenant_policy_statements,
)
from citystream.settings import ClickHouseSettings
from tests.conftest import REPO

DB = "city"
OWNER = "citystream_owner"
USER = ("<password></password><networks><ip>::/0</ip></networks><profile>default</profile>"
        "<quota>default</quota>")
RUN = r'''
import json, sys
import clickhouse_connect
from citystream.schemas.migrate import migrate
config, path, ops = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = clickhouse_connect.get_client(interface="chdb", path=path, chdb_options={"config-file": config})
out = []
for op in ops:
    try:
        if op == "MIGRATE":
            out.append({"applied": migrate(client, "city")})
        elif op.startswith(("SELECT", "SHOW")):
            out.append({"rows": [[str(v) for v in row] for row in client.query(op).result_rows]})
        else:
            client.command(op, settings={"mutations_sync": 2} if " DELETE " in op else None)
            out.append({"ok": True})
    except Exception as exc:
        out.append({"error": str(exc).splitlines()[0][:400]})
print(json.dumps(out))
'''


def _users_xml(default: str) -> str:
    return (f"<clickhouse><profiles><default></default></profiles><users><default>{USER}{default}</default>"
            f"<{OWNER}>{USER}<access_management>1</access_management></{OWNER}></users>"
            "<quotas><default></default></quotas></clickhouse>")


def _role_xml(grants: list[str], filters: dict[str, str] | None = None) -> str:
    queries = "".join(f"<query>{g}</query>" for g in grants)
    tables = "".join(f"<{view}><filter>{expr}</filter></{view}>" for view, expr in (filters or {}).items())
    return f"<grants>{queries}</grants>" + (f"<databases><{DB}>{tables}</{DB}></databases>" if tables else "")


def _filters(tenant: str) -> dict[str, str]:
    """View -> USING expression of the tenant's row policies, as migrate would create them on a server."""
    found = {}
    for statement in tenant_policy_statements(DB, tenant):
        match = re.match(rf"CREATE ROW POLICY IF NOT EXISTS \S+ ON `{DB}`\.(\w+) FOR SELECT USING (.+) TO \S+$",
                         statement)
        if match:
            found[match.group(1)] = match.group(2).replace("'", "&apos;")
    return found


class Store:
    """One embedded store opened by separate processes, each as one role."""

    def __init__(self, base: Path) -> None:
        self.base, self.path = base, base / "data"
        grants = access_grants(DB)
        self.roles = {
            "owner": "<access_management>1</access_management>",
            "writer": _role_xml(grants["citystream_ingest_writer"]),
            "officer": _role_xml(grants["citystream_privacy_officer"]),
            "analyst_a": _role_xml(grants[ANALYST_ROLE], _filters("tenant-a")),
            "analyst_b": _role_xml(grants[ANALYST_ROLE], _filters("tenant-b")),
        }
        for role, xml in self.roles.items():
            (base / f"{role}-users.xml").write_text(_users_xml(xml))
            (base / f"{role}.xml").write_text(f"<clickhouse><user_directories><users_xml><path>{base}/{role}-users.xml"
                                              "</path></users_xml></user_directories></clickhouse>")

    def run(self, role: str, *ops: str) -> list[dict[str, Any]]:
        res = subprocess.run([sys.executable, "-c", RUN, str(self.base / f"{role}.xml"), str(self.path),
                              json.dumps(ops)], capture_output=True, text=True, timeout=300, cwd=REPO, check=True)
        out: list[dict[str, Any]] = json.loads(res.stdout.strip().splitlines()[-1])
        return out


def _denied(result: dict[str, Any]) -> bool:
    return "ACCESS_DENIED" in result.get("error", "") or "Not enough privileges" in result.get("error", "")


def _insert(table: str, tenant: str, n: int) -> str:
    extra = {"plate_reads": ", plate_pseudonym", "frame_index": ""}.get(table, "")
    value = f", '{'p' * 64}'" if extra else ""
    return (f"INSERT INTO {DB}.{table} (event_id, tenant, device_id, captured_at{extra}) "
            f"SELECT concat('{tenant}-', toString(number)), '{tenant}', 'cam-01', now64(3){value} FROM numbers({n})")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A migrated store with rows of two tenants; the views' definer is the owner user."""
    st = Store(tmp_path_factory.mktemp("access"))
    views = [*schema.VIEWS.values(), *schema.ROLLUP_VIEWS]
    out = st.run("owner", "MIGRATE", "CREATE ROLE IF NOT EXISTS citystream_analyst",
                 *(_insert(t, tenant, n) for tenant, n in (("tenant-a", 3), ("tenant-b", 2))
                   for t in ("plate_reads", "sensor_readings", "frame_index", "dead_letters", "face_matches")),
                 f"INSERT INTO {DB}.audit_log (actor, action) VALUES ('somchai', 'privacy.search')",
                 *(f"ALTER TABLE {DB}.{v} MODIFY DEFINER = {OWNER} SQL SECURITY DEFINER" for v in views))
    applied = out[0]["applied"]
    assert "0007_view_security" in applied and "0008_access_roles" not in applied  # skipped: no access storage
    assert "no writeable access storage" in out[1]["error"]  # even a user with access_management cannot
    assert all("error" not in r for r in out[2:]), out
    return st


@pytest.mark.integration
def test_a_tenant_analyst_reads_its_tenants_views_only(store: Store) -> None:
    views = analyst_views(DB)
    assert "v_plate_reads" in views and "v_frame_index" not in views and "v_dead_letters" not in views
    ops = [f"SELECT DISTINCT tenant FROM {DB}.{v} ORDER BY tenant" for v in ("v_plate_reads", "v_sensor_readings",
                                                                              "v_vehicles_1h")]
    a, b = store.run("analyst_a", *ops), store.run("analyst_b", *ops)
    assert all(r == {"rows": [["tenant-a"]]} for r in a), a
    assert all(r == {"rows": [["tenant-b"]]} for r in b), b
    got = store.run("analyst_a", f"SELECT count() FROM {DB}.v_plate_reads WHERE tenant = 'tenant-b'",
                    f"SELECT count() FROM {DB}.v_plate_reads")
    assert got == [{"rows": [["0"]]}, {"rows": [["3"]]}]  # no row of tenant B, asked for or not
    officer = store.run("officer", f"SELECT count() FROM {DB}.v_plate_reads")
    assert officer == [{"rows": [["5"]]}]  # roles without a tenant policy see every tenant


@pytest.mark.integration
def test_an_analyst_cannot_read_raw_plates_frames_faces_dead_letters_or_the_audit_log(store: Store) -> None:
    tables = [*schema.TABLES, "vehicles_1h", "audit_log", "v_frame_index", "v_dead_letters", "v_face_matches",
              "_sink_windows"]
    results = store.run("analyst_a", *(f"SELECT count() FROM {DB}.{t}" for t in tables))
    assert all(_denied(r) for r in results), dict(zip(tables, results, strict=True))
    writes = store.run("analyst_a", _insert("plate_reads", "tenant-a", 1), f"DROP TABLE {DB}.plate_reads",
                       f"ALTER TABLE {DB}.plate_reads DELETE WHERE 1", "SELECT * FROM file('/etc/hostname')")
    assert all(_denied(r) for r in writes), writes


@pytest.mark.integration
def test_the_writer_appends_but_cannot_read_views_or_change_the_audit_log(store: Store) -> None:
    got = store.run("writer", _insert("plate_reads", "tenant-c", 1),
                    f"INSERT INTO {DB}.audit_log (actor, action) VALUES ('sink', 'x')",
                    f"SELECT count() FROM {DB}.v_plate_reads", f"SELECT count() FROM {DB}.audit_log",
                    f"ALTER TABLE {DB}.audit_log DELETE WHERE 1", f"TRUNCATE TABLE {DB}.audit_log",
                    f"DROP TABLE {DB}.plate_reads", "MIGRATE")
    assert got[0] == {"ok": True} and got[1] == {"ok": True}  # the rollup's materialized view ran too
    assert all(_denied(r) for r in got[2:6]), got
    assert _denied(got[6]), got
    assert got[7] == {"applied": []}, got  # the migration check at a sink's start needs no DDL grant
    officer = store.run("officer", f"SELECT count() FROM {DB}.vehicles_1h WHERE tenant = 'tenant-c'")
    assert officer == [{"rows": [["1"]]}]


@pytest.mark.integration
def test_the_privacy_officer_erases_and_audits_but_cannot_alter_the_audit_log(store: Store) -> None:
    got = store.run("officer", f"ALTER TABLE {DB}.plate_reads DELETE WHERE event_id = 'tenant-b-0'",
                    f"SELECT count() FROM {DB}.plate_reads WHERE tenant = 'tenant-b'",
                    f"INSERT INTO {DB}.audit_log (actor, action) VALUES ('malee', 'privacy.erase')",
                    f"ALTER TABLE {DB}.audit_log DELETE WHERE 1", f"ALTER TABLE {DB}.audit_log UPDATE actor = 'x' "
                    "WHERE 1", f"TRUNCATE TABLE {DB}.audit_log", f"DROP TABLE {DB}.audit_log",
                    f"ALTER TABLE {DB}.sensor_readings DELETE WHERE 1",
                    f"SELECT action FROM {DB}.audit_log ORDER BY action")
    assert got[0] == {"ok": True} and got[1] == {"rows": [["1"]]} and got[2] == {"ok": True}
    assert all(_denied(r) for r in got[3:8]), got
    assert [row[0] for row in got[8]["rows"]][:2] == ["privacy.erase", "privacy.search"]


@pytest.mark.integration
def test_the_server_statements_parse_and_chdb_skips_them_with_a_logged_reason(
        chdb_dsn: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    admin = clickhouse.connect(ClickHouseSettings(dsn=chdb_dsn), database=False)
    access = [m for m in load_migrations() if m.needs_access_management]
    assert [m.name for m in access] == ["0008_access_roles"]
    statements = [*access[0].statements(unique), *tenant_policy_statements(unique, "nakhon-rangsit")]
    assert len(statements) > 40
    for statement in statements:
        admin.command(f"EXPLAIN AST {statement}")  # ClickHouse's own parser accepts every statement
    with caplog.at_level(logging.WARNING, logger="citystream.schemas.migrate"):
        applied = migrate(admin, unique, tenants=["nakhon-rangsit"])
        assert migrate(admin, unique, tenants=["nakhon-rangsit"]) == []
    assert "0008_access_roles" not in applied and not any(a.startswith("access:") for a in applied)
    skipped = [r for r in caplog.records if r.getMessage().startswith("migration skipped")]
    assert len(skipped) == 2 and "ACCESS_DENIED" in skipped[0].__dict__["reason"]  # tried again at each run
    recorded = admin.query(f"SELECT name FROM `{unique}`._migrations").result_rows
    assert ("0008_access_roles",) not in recorded
    for view in [*schema.VIEWS.values(), *schema.ROLLUP_VIEWS]:
        create = str(admin.command(f"SHOW CREATE TABLE `{unique}`.{view}"))
        assert "SQL SECURITY DEFINER" in create, view
    with pytest.raises(schema.MigrationError):
        tenant_policy_statements(unique, "x' OR 1 --")
