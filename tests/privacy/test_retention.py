"""Retention by purpose: every table's TTL comes from settings, dead letters lose camera images, frames are private."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from citystream import clickhouse
from citystream.schemas import migrate as schema
from citystream.schemas.events import FrameMeta, make_event_id
from citystream.schemas.migrate import apply_image_retention, migrate
from citystream.settings import ClickHouseSettings, load_settings
from citystream.settings.retention import DEFAULT_TABLE_DAYS, PURPOSES, RetentionSettings
from citystream.sinks.frames import store_frame
from tests.conftest import citystream
from tests.sinks.factory import T0, TENANT


def ttl_of(admin: Any, db: str, table: str) -> str:
    """The table TTL expression as ClickHouse reports it ('' = none)."""
    full = str(admin.command(f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = '{table}'"))
    return full.split(" TTL ", 1)[1].split(" SETTINGS ")[0] if " TTL " in full else ""


@pytest.fixture
def admin(chdb_dsn: str) -> Any:
    """A writable client without a default database on the process's chDB path."""
    return clickhouse.connect(ClickHouseSettings(dsn=chdb_dsn), database=False)


@pytest.mark.unit
def test_every_table_with_a_time_column_has_a_default_and_a_purpose() -> None:
    assert set(DEFAULT_TABLE_DAYS) == set(schema.TIME_COLUMNS) == set(PURPOSES)
    rollups = {"sensor_1m", "sensor_1h", "vehicles_1h", "alerts_1d"}
    assert {*schema.TABLES, *rollups, "audit_log"} == set(DEFAULT_TABLE_DAYS)
    # rollups built from plate pseudonyms live no longer than the reads they count
    assert DEFAULT_TABLE_DAYS["vehicles_1h"] <= DEFAULT_TABLE_DAYS["plate_reads"]


@pytest.mark.unit
def test_settings_keep_defaults_for_tables_left_out_and_refuse_unknown_or_negative_ones(tmp_path: Path) -> None:
    settings = load_settings(None, {"retention.tables": {"vehicles_1h": 14}})
    assert settings.retention.days("vehicles_1h") == 14
    assert settings.retention.days("plate_reads") == DEFAULT_TABLE_DAYS["plate_reads"]
    for bad, message in (({"plates": 3}, "plates"), ({"alerts": -1}, "alerts")):
        with pytest.raises(ValueError, match=message):
            RetentionSettings(tables=bad)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RetentionSettings(dead_letter_image_days=0)


@pytest.mark.integration
def test_every_table_gets_the_ttl_its_settings_say_and_a_rerun_changes_nothing(admin: Any, unique: str) -> None:
    retention = RetentionSettings(tables={"vehicles_1h": 30, "sensor_1m": 0, "audit_log": 3650, "dead_letters": 14},
                                  dead_letter_image_days=2)
    applied = migrate(admin, unique, retention_days=retention.tables, image_days=retention.dead_letter_image_days)
    assert "ttl:dead_letters.original_bytes" in applied
    for table, column in schema.TIME_COLUMNS.items():
        days = retention.days(table)
        assert ttl_of(admin, unique, table) == (f"toDateTime({column}) + toIntervalDay({days})" if days else ""), table
    assert ttl_of(admin, unique, "alerts_1d") == "toDateTime(day) + toIntervalDay(1825)"
    assert migrate(admin, unique, retention_days=retention.tables, image_days=2) == []
    assert apply_image_retention(admin, unique, 1) == ["ttl:dead_letters.original_bytes"]
    assert apply_image_retention(admin, unique, 1) == []


@pytest.mark.integration
def test_a_dead_letter_keeps_a_camera_image_no_longer_than_its_image_retention(admin: Any, unique: str) -> None:
    migrate(admin, unique, retention_days=RetentionSettings().tables, image_days=1)
    now = datetime.now(UTC)
    rows = [  # event_id, first seen, original topic, bytes
        ("old-worker-frame", now - timedelta(days=3), "x.raw.frames", b"\xff\xd8\xff\xe0 jpeg"),
        ("old-bridge-frame", now - timedelta(days=3), f"city/{TENANT}/gw-1/camera/cam-01/frame", b"not even a jpeg"),
        ("old-jpeg-elsewhere", now - timedelta(days=3), "city/x/y/z", b"\xff\xd8\xff\xdb jpeg"),
        ("old-reading", now - timedelta(days=3), "x.raw.readings", b'{"kind": "sensor_reading"}'),
        ("new-worker-frame", now, "x.raw.frames", b"\xff\xd8\xff\xe0 jpeg"),
    ]
    admin.insert("dead_letters", [[e, TENANT, "worker", "bad", t, b, at, at, now] for e, at, t, b in rows],
                 column_names=["event_id", "tenant", "stage", "reason", "original_topic", "original_bytes",
                               "captured_at", "first_seen_at", "ingested_at"], database=unique)
    admin.command(f"OPTIMIZE TABLE `{unique}`.dead_letters FINAL")
    kept = dict(admin.query(f"SELECT event_id, original_bytes FROM `{unique}`.dead_letters",
                            settings={"output_format_arrow_string_as_string": 0}).result_rows)
    assert set(kept) == {e for e, *_ in rows}  # the records stay (dead_letters keeps 30 days) ...
    assert {e for e, b in kept.items() if b} == {"old-reading", "new-worker-frame"}  # ... old images do not


@pytest.mark.unit
def test_archived_frames_are_private_files_in_private_folders(tmp_path: Path) -> None:
    root = tmp_path / "frames"
    (root / TENANT).mkdir(parents=True, mode=0o755)  # an archive written before: folders were 0755
    (root / TENANT).chmod(0o755)
    meta = FrameMeta(event_id=make_event_id("gw-cam", "frame", 1), tenant=TENANT, gateway_id="gw-cam",
                     device_id="cam-01", seq=1, captured_at=T0, width=640, height=480, jpeg_bytes=4, motion_score=0.1)
    ref, _digest = store_frame(root, meta, b"\xff\xd8\xff\xd9")
    stored = root / ref
    assert stored.read_bytes() == b"\xff\xd8\xff\xd9"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    folder = stored.parent
    while folder != tmp_path:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        folder = folder.parent
    assert not list(root.rglob("*.tmp"))


@pytest.mark.integration
def test_privacy_retention_prints_the_settings_next_to_the_stores_ttls(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clickhouse: {{dsn: 'chdb://{tmp_path / 'store'}', database: city}}\n"
                   "retention: {tables: {vehicles_1h: 14, audit_log: 3650}, dead_letter_image_days: 2}\n"
                   f"sink: {{frames_dir: '{tmp_path / 'frames'}'}}\n"
                   "kafka: {topics: {raw.frames: {retention_ms: 43200000}}}\n")
    before = {r["what"]: r for r in json.loads(citystream("privacy", "retention", "--json", config=cfg).stdout)}
    assert before["vehicles_1h"]["days"] == 14 and before["vehicles_1h"]["store_ttl"] is None  # no store yet
    citystream("migrate", config=cfg)
    rows = json.loads(citystream("privacy", "retention", "--json", config=cfg).stdout)
    got = {r["what"]: r for r in rows}
    assert set(DEFAULT_TABLE_DAYS) < set(got)
    assert got["vehicles_1h"]["days"] == 14
    assert got["vehicles_1h"]["store_ttl"] == "toDateTime(hour) + toIntervalDay(14)"
    assert got["audit_log"]["store_ttl"] == "toDateTime(at) + toIntervalDay(3650)"
    assert got["plate_reads"]["days"] == 90 and got["plate_reads"]["purpose"] == PURPOSES["plate_reads"]
    image = got["dead_letters.original_bytes of camera frames"]
    assert image["days"] == 2 and image["store_ttl"] == schema.image_ttl(2)
    assert got["archived frame files"] == {"what": "archived frame files", "where": str(tmp_path / "frames"),
                                           "days": 30, "purpose": got["archived frame files"]["purpose"],
                                           "store_ttl": None}
    assert got["raw.frames"]["where"] == "Kafka" and got["raw.frames"]["days"] == 0.5
    text = citystream("privacy", "retention", config=cfg).stdout
    assert "vehicles_1h\tClickHouse city\t14 d" in text and "(store: toDateTime(hour) + toIntervalDay(14))" in text
