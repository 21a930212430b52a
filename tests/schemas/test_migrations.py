"""ClickHouse migrations on embedded chDB: order, bookkeeping, idempotence, retention, rollups, dedup views."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from citystream import clickhouse
from citystream.schemas import migrate as schema
from citystream.schemas.migrate import (
    MIGRATIONS_DIR,
    MigrationError,
    apply_retention,
    cluster_sql,
    distributed_sql,
    load_migrations,
    migrate,
)
from citystream.settings import ClickHouseSettings
from citystream.sinks.writer import INSERT_SETTINGS
from tests.conftest import citystream
from tests.sinks.factory import T0, alert, block, plate, reading

ALL = [m.name for m in load_migrations() if not m.needs_access_management]  # chDB skips roles: tests/security


@pytest.fixture
def ch(chdb_dsn: str, unique: str) -> ClickHouseSettings:
    """This test's database on the process's chDB path."""
    return ClickHouseSettings(dsn=chdb_dsn, database=unique)


@pytest.fixture
def admin(ch: ClickHouseSettings) -> Any:
    """A writable client without a default database."""
    return clickhouse.connect(ch, database=False)


def rows(admin: Any, db: str, sql: str) -> list[dict[str, Any]]:
    """Query results as dicts, ``{db}`` replaced."""
    result = admin.query(sql.replace("{db}", f"`{db}`"))
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def insert(admin: Any, db: str, events: list[Any], token: str | None = None) -> None:
    """Insert events as the sink does (Arrow block, optional dedup token)."""
    table, arrow = block(events)
    settings: dict[str, Any] = dict(INSERT_SETTINGS)
    if token:
        settings["insert_deduplication_token"] = token
    admin.insert_arrow(table, arrow, database=db, settings=settings)


@pytest.mark.integration
def test_fresh_database_gets_every_migration_in_order_and_rerun_is_a_noop(admin: Any, unique: str) -> None:
    assert ALL == sorted(ALL) and len(ALL) >= 3
    applied = migrate(admin, unique)
    assert applied == ALL
    recorded = rows(admin, unique, "SELECT version, name FROM {db}._migrations FINAL ORDER BY version")
    assert [r["name"] for r in recorded] == ALL
    assert [r["version"] for r in recorded] == [int(n[:4]) for n in ALL]
    names = {r["name"] for r in rows(admin, unique, f"SELECT name FROM system.tables WHERE database = '{unique}'")}
    expected = {*schema.TABLES, *schema.VIEWS.values(), *schema.ROLLUP_VIEWS, schema.SINK_WINDOWS}
    assert expected <= names
    assert migrate(admin, unique) == []
    assert len(rows(admin, unique, "SELECT * FROM {db}._migrations")) == len(ALL)


@pytest.mark.integration
def test_populated_database_takes_new_migrations_and_keeps_old_rows(admin: Any, unique: str, tmp_path: Path) -> None:
    first = tmp_path / "migrations"
    first.mkdir()
    for file in sorted(MIGRATIONS_DIR.glob("*.sql"))[:2]:
        shutil.copy(file, first)
    assert migrate(admin, unique, first) == ALL[:2]
    insert(admin, unique, [reading(i, float(i)) for i in range(5)])
    for file in sorted(MIGRATIONS_DIR.glob("*.sql"))[2:]:
        shutil.copy(file, first)
    (first / "0099_sensor_note.sql").write_text(
        "-- a new column; views expand * when created, so the analyst view is re-created with it\n"
        "ALTER TABLE {db}.sensor_readings ADD COLUMN IF NOT EXISTS note String DEFAULT 'n/a';\n"
        "CREATE OR REPLACE VIEW {db}.v_sensor_readings AS SELECT * FROM {db}.sensor_readings FINAL;\n")
    assert migrate(admin, unique, first) == [*ALL[2:], "0099_sensor_note"]
    for source in ("sensor_readings", "v_sensor_readings"):
        old = rows(admin, unique, f"SELECT seq, value, note FROM {{db}}.{source} ORDER BY seq")
        assert [(r["seq"], r["value"], r["note"]) for r in old] == [(i, float(i), "n/a") for i in range(5)]
    assert migrate(admin, unique, first) == []


@pytest.mark.integration
def test_editing_an_applied_migration_is_refused(admin: Any, unique: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    migrate(admin, unique, directory)
    edited = directory / f"{ALL[1]}.sql"
    edited.write_text(edited.read_text() + "\n-- changed\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(admin, unique, directory)


@pytest.mark.unit
def test_malformed_or_duplicate_file_names_are_errors(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)
    (tmp_path / "1_bad.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="two migrations with version 1"):
        load_migrations(tmp_path)


def ttl_of(admin: Any, db: str, table: str) -> str:
    """The TTL part of a table's engine definition ('' when none)."""
    full = str(admin.command(f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = '{table}'"))
    return full.split(" TTL ", 1)[1].split(" SETTINGS ")[0] if " TTL " in full else ""


@pytest.mark.integration
def test_retention_is_configurable_per_table_and_expires_old_rows(admin: Any, unique: str) -> None:
    applied = migrate(admin, unique, retention_days={"plate_reads": 7, "sensor_readings": 0, "alerts": 400})
    assert {"ttl:plate_reads", "ttl:alerts"} <= set(applied) and "ttl:sensor_readings" not in applied
    assert ttl_of(admin, unique, "plate_reads") == "toDateTime(captured_at) + toIntervalDay(7)"
    assert ttl_of(admin, unique, "alerts") == "toDateTime(captured_at) + toIntervalDay(400)"
    assert ttl_of(admin, unique, "sensor_readings") == ""
    assert apply_retention(admin, unique, {"plate_reads": 7, "alerts": 400, "sensor_readings": 0}) == []
    assert apply_retention(admin, unique, {"plate_reads": 30, "alerts": 0}) == ["ttl:alerts", "ttl:plate_reads"]
    assert ttl_of(admin, unique, "plate_reads").endswith("toIntervalDay(30)")
    assert ttl_of(admin, unique, "alerts") == ""
    with pytest.raises(MigrationError, match="unknown table"):
        apply_retention(admin, unique, {"plates": 1})

    now = datetime.now(UTC)
    insert(admin, unique, [plate(1, "a", at=now - timedelta(days=45)), plate(2, "b", at=now - timedelta(days=2))])
    insert(admin, unique, [reading(1, at=now - timedelta(days=45)), reading(2, at=now - timedelta(days=2))])
    admin.command(f"OPTIMIZE TABLE `{unique}`.plate_reads FINAL")
    admin.command(f"OPTIMIZE TABLE `{unique}`.sensor_readings FINAL")
    assert [r["seq"] for r in rows(admin, unique, "SELECT seq FROM {db}.plate_reads ORDER BY seq")] == [2]
    assert [r["seq"] for r in rows(admin, unique, "SELECT seq FROM {db}.sensor_readings ORDER BY seq")] == [1, 2]


@pytest.mark.integration
def test_sensor_rollups_give_min_avg_max_count_per_minute_and_hour(admin: Any, unique: str) -> None:
    migrate(admin, unique)
    minute = timedelta(minutes=1)
    events = [reading(1, 10.0, at=T0 + timedelta(seconds=5)), reading(2, 20.0, at=T0 + timedelta(seconds=25)),
              reading(3, 30.0, at=T0 + timedelta(seconds=55)), reading(4, 40.0, at=T0 + minute),
              reading(5, 7.0, device="pm-02", gateway="gw-2", at=T0 + 2 * minute),
              reading(6, 99.0, at=T0 + timedelta(hours=1))]
    insert(admin, unique, events[:3])
    insert(admin, unique, events[3:])
    per_minute = rows(admin, unique, "SELECT device_id, minute, min_value, avg_value, max_value, readings "
                                     "FROM {db}.v_sensor_1m ORDER BY device_id, minute")
    naive = T0.replace(tzinfo=None)
    assert [tuple(r.values()) for r in per_minute] == [
        ("pm-01", naive, 10.0, 20.0, 30.0, 3), ("pm-01", naive + minute, 40.0, 40.0, 40.0, 1),
        ("pm-01", naive + timedelta(hours=1), 99.0, 99.0, 99.0, 1), ("pm-02", naive + 2 * minute, 7.0, 7.0, 7.0, 1)]
    per_hour = rows(admin, unique, "SELECT device_id, hour, min_value, avg_value, max_value, readings "
                                   "FROM {db}.v_sensor_1h ORDER BY device_id, hour")
    assert [tuple(r.values()) for r in per_hour] == [
        ("pm-01", naive, 10.0, 25.0, 40.0, 4), ("pm-01", naive + timedelta(hours=1), 99.0, 99.0, 99.0, 1),
        ("pm-02", naive, 7.0, 7.0, 7.0, 1)]


@pytest.mark.integration
def test_vehicle_and_alert_rollups(admin: Any, unique: str) -> None:
    migrate(admin, unique)
    hour = timedelta(hours=1)
    insert(admin, unique, [plate(1, "a"), plate(2, "a"), plate(3, "b"), plate(4, "c"),
                           plate(5, "a", camera="cam-02"), plate(6, "b", at=T0 + hour + timedelta(minutes=3))])
    vehicles = rows(admin, unique, "SELECT device_id, hour, reads, vehicles FROM {db}.v_vehicles_1h "
                                   "ORDER BY device_id, hour")
    naive = T0.replace(tzinfo=None)
    assert [tuple(r.values()) for r in vehicles] == [
        ("cam-01", naive, 4, 3), ("cam-01", naive + hour, 1, 1), ("cam-02", naive, 1, 1)]
    insert(admin, unique, [alert(1), alert(2), alert(3, state="cleared"), alert(4, district="ลำลูกกา"),
                           alert(5, at=T0 + timedelta(days=1))])
    daily = rows(admin, unique, "SELECT district, day, raised FROM {db}.v_alerts_1d ORDER BY day, district")
    assert [tuple(r.values()) for r in daily] == [
        ("ธัญบุรี", T0.date(), 2), ("ลำลูกกา", T0.date(), 1), ("ธัญบุรี", (T0 + timedelta(days=1)).date(), 1)]


@pytest.mark.integration
def test_same_batch_twice_gives_one_row_per_event_id(admin: Any, unique: str) -> None:
    migrate(admin, unique)
    events = [reading(i, float(i)) for i in range(20)]
    insert(admin, unique, events, token="window-1")
    insert(admin, unique, events, token="window-1")  # a replayed window: dropped by its token, rollups included
    count = "SELECT count() AS n, uniqExact(event_id) AS ids FROM {db}.%s"
    assert rows(admin, unique, count % "sensor_readings") == [{"n": 20, "ids": 20}]
    assert rows(admin, unique, "SELECT sum(readings) AS n FROM {db}.v_sensor_1m") == [{"n": 20}]
    insert(admin, unique, events, token="window-2")  # the same events in another batch (e.g. a bridge retry)
    assert rows(admin, unique, count % "sensor_readings") == [{"n": 40, "ids": 20}]
    assert rows(admin, unique, count % "v_sensor_readings") == [{"n": 20, "ids": 20}]
    plates = [plate(i, "a") for i in range(5)]
    insert(admin, unique, plates)
    insert(admin, unique, plates)
    assert rows(admin, unique, count % "v_plate_reads") == [{"n": 5, "ids": 5}]


@pytest.mark.integration
def test_cluster_variant_is_replicated_on_cluster_distributed_and_parses(admin: Any) -> None:
    statements = [s for m in load_migrations() for s in cluster_sql(m, "city", "main")]
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    assert tables and all(" ON CLUSTER `main`" in s for s in tables)
    assert all("ENGINE = Replicated" in s for s in tables)
    assert any("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', "
               "ingested_at)" in s for s in tables)
    alters = [s for s in statements if s.startswith("ALTER TABLE")]
    assert alters and all(" ON CLUSTER `main`" in s for s in alters)
    distributed = distributed_sql("city", "main")
    assert len(distributed) == len(schema.TABLES)
    assert all("cityHash64(event_id)" in s for s in distributed)
    for statement in [*statements, *distributed]:
        admin.command(f"EXPLAIN AST {statement}")  # ClickHouse's own parser accepts every statement


@pytest.mark.unit
def test_migrate_cli_prints_the_cluster_variant_without_a_store(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clickhouse:\n  dsn: chdb://{tmp_path / 'none'}\n  database: city\n")
    res = citystream("migrate", "--cluster-sql", "main", config=cfg)
    assert "ReplicatedAggregatingMergeTree" in res.stdout and "ENGINE = Distributed(`main`" in res.stdout
    assert res.stdout.count("ON CLUSTER `main`") >= len(schema.TABLES) * 2
    assert not (tmp_path / "none").exists()


@pytest.mark.integration
def test_migrate_cli_applies_then_reports_up_to_date(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clickhouse:\n  database: city\n")
    dsn = f"chdb://{tmp_path / 'store'}"
    first = citystream("migrate", "--dsn", dsn, "--json", config=cfg)
    assert json.loads(first.stdout)["applied"][:len(ALL)] == ALL
    again = citystream("migrate", "--dsn", dsn, config=cfg)
    assert again.stdout.strip() == "city: up to date"
    bad = citystream("migrate", "--dsn", "ftp://x", config=cfg, check=False)
    assert bad.returncode == 2 and "clickhouse.dsn" in bad.stderr


@pytest.mark.unit
def test_retention_for_an_unknown_table_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("retention:\n  tables: {plates: 3}\n")
    res = citystream("migrate", config=cfg, check=False)
    assert res.returncode == 2 and "retention.tables" in res.stderr and "plates" in res.stderr
