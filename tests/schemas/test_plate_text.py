"""No plate text in the analytics tables or alerts (issue 16): migration 0005 on a database that had it,
the contract without it, and the sink reading a record written before the change."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from citystream import clickhouse
from citystream.schemas.events import PlateRead
from citystream.schemas.migrate import MIGRATIONS_DIR, load_migrations, migrate
from citystream.schemas.topics import PLATE_READS
from citystream.settings import ClickHouseSettings
from citystream.sinks.rows import ROUTES, arrow_schema, to_row
from tests.sinks.factory import alert, block, plate

REGISTRATION, PROVINCE = "1กข 1234", "ปทุมธานี"
PLATE_ALERT = f"ทะเบียนในบัญชีเฝ้าระวัง / watchlisted plate {REGISTRATION} {PROVINCE} — stolen pickup at ธัญบุรี (cam-01)"


@pytest.fixture
def admin(chdb_dsn: str, unique: str) -> Any:
    return clickhouse.connect(ClickHouseSettings(dsn=chdb_dsn, database=unique), database=False)


def _string_cells(admin: Any, db: str) -> list[str]:
    """Every String-typed value of every table and view of a database."""
    cols = admin.query(f"SELECT table, name FROM system.columns WHERE database = '{db}' AND "
                       "type LIKE '%String%' AND table NOT LIKE '.inner%'").result_rows
    cells: list[str] = []
    for table, name in cols:
        cells += [str(v) for (v,) in admin.query(f"SELECT toString(`{name}`) FROM `{db}`.`{table}`").result_rows]
    return cells


@pytest.mark.integration
def test_migration_0005_removes_stored_plate_text_and_keeps_the_analyst_objects(
        admin: Any, unique: str, tmp_path: Path) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for file in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(file.name[:4]) < 5:
            shutil.copy(file, before)
    migrate(admin, unique, before)
    db = f"`{unique}`"
    # rows as the sink wrote them before 0005: plate text in plate_reads and in a watchlist alert
    for seq, who in ((1, "a"), (2, "a"), (3, "b")):
        p = plate(seq, who)
        admin.command(f"INSERT INTO {db}.plate_reads (event_id, tenant, device_id, seq, captured_at, district, "
                      f"source_event_id, registration, province, plate_pseudonym, confidence, bbox) VALUES "
                      f"('{p.event_id}', '{p.tenant}', '{p.device_id}', {seq}, '{p.captured_at:%Y-%m-%d %H:%M:%S}', "
                      f"'{p.district}', '{p.source_event_id}', '{REGISTRATION}', '{PROVINCE}', "
                      f"'{p.plate_pseudonym}', 0.9, [1, 2, 3, 4])")
    a = alert(9)
    admin.command(f"INSERT INTO {db}.alerts (event_id, tenant, device_id, seq, captured_at, alert_type, severity, "
                  f"state, message) VALUES ('{a.event_id}', '{a.tenant}', 'cam-01', 9, "
                  f"'{a.captured_at:%Y-%m-%d %H:%M:%S}', 'plate_watchlist', 'critical', 'raised', '{PLATE_ALERT}')")
    assert any(REGISTRATION in c for c in _string_cells(admin, unique))

    later = [m.name for m in load_migrations() if m.version >= 5 and not m.needs_access_management]  # chDB: no roles
    assert migrate(admin, unique) == later
    admin.command(f"OPTIMIZE TABLE {db}.alerts FINAL")  # let the message mutation finish before reading
    cells = _string_cells(admin, unique)
    assert cells and not [c for c in cells if "1234" in c or "1กข" in c or PROVINCE in c], "plate text left"
    for source in ("plate_reads", "v_plate_reads"):
        cols = {name for (name,) in admin.query(f"SELECT name FROM system.columns WHERE database = '{unique}' "
                                                f"AND table = '{source}'").result_rows}
        assert not {"registration", "province"} & cols and "plate_pseudonym" in cols, source
    assert admin.query(f"SELECT count() FROM {db}.v_plate_reads").result_rows == [(3,)]
    assert admin.query(f"SELECT sum(reads), uniqMerge(vehicles_state) FROM {db}.vehicles_1h").result_rows == [(3, 2)]
    [(message,)] = admin.query(f"SELECT message FROM {db}.v_alerts").result_rows
    assert "removed by migration 0005" in message
    # the sink's blocks fit the migrated table, and the rollup keeps counting pseudonyms
    table, arrow = block([plate(4, "c"), plate(5, "a")])
    assert arrow.schema.names == arrow_schema(table).names
    admin.insert_arrow(table, arrow, database=unique)
    assert admin.query(f"SELECT uniqMerge(vehicles_state) FROM {db}.vehicles_1h").result_rows == [(3,)]


@pytest.mark.unit
def test_the_contract_and_the_row_carry_only_the_pseudonym() -> None:
    assert not {"registration", "province"} & set(PlateRead.model_fields)
    assert not {"registration", "province"} & set(arrow_schema("plate_reads").names)


@pytest.mark.unit
def test_a_record_written_before_the_change_is_stored_without_its_plate_text() -> None:
    new = plate(1, "a").model_dump(mode="json")
    old = orjson.dumps({**new, "registration": REGISTRATION, "province": PROVINCE})
    row = to_row(ROUTES[PLATE_READS], old)
    assert row == to_row(ROUTES[PLATE_READS], orjson.dumps(new))
    assert REGISTRATION not in str(row) and PROVINCE not in str(row)
