"""The erase operation on the engine in this process: only the plate's rows go, rollups are recounted, repeatable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citystream import clickhouse
from citystream.privacy import delete_frames
from citystream.privacy_store import PrivacyOpError, call, check_pairs, linked_where, search
from citystream.schemas.migrate import migrate
from citystream.settings import ClickHouseSettings, Settings
from citystream.sinks.writer import INSERT_SETTINGS
from tests.sinks.factory import TENANT, block, plate

OURS = plate(1, "a").plate_pseudonym
THEIRS = plate(2, "b").plate_pseudonym


@pytest.fixture
def store(chdb_dsn: str, unique: str) -> Settings:
    """A migrated database with two reads of our car and one of another, in one camera-hour."""
    settings = Settings(clickhouse=ClickHouseSettings(dsn=chdb_dsn, database=unique))
    admin = clickhouse.connect(settings, database=False)
    migrate(admin, unique)
    table, arrow = block([plate(1, "a"), plate(3, "a"), plate(2, "b")])
    admin.insert_arrow(table, arrow, database=unique, settings=dict(INSERT_SETTINGS))
    return settings


def vehicles(settings: Settings) -> list[dict[str, Any]]:
    """The vehicles_1h rollup as analysts see it."""
    db = settings.clickhouse.database
    return clickhouse.query_rows(settings, f"SELECT reads, vehicles FROM `{db}`.v_vehicles_1h")


@pytest.mark.integration
def test_erase_takes_only_the_plates_rows_recounts_the_rollup_and_can_be_repeated(store: Settings) -> None:
    assert vehicles(store) == [{"reads": 3, "vehicles": 2}]
    first = call(store, "erase", {"pairs": [[TENANT, OURS]]})
    assert first["counts"] == {"dead_letters": 0, "alerts": 0, "frame_index": 0, "plate_reads": 2, "vehicles_1h": 1}
    assert vehicles(store) == [{"reads": 1, "vehicles": 1}]
    assert [r["plate_pseudonym"] for r in search(store, [(TENANT, THEIRS)])["plate_reads"]] == [THEIRS]
    assert all(rows == [] for rows in search(store, [(TENANT, OURS)]).values())
    again = call(store, "erase", {"pairs": [[TENANT, OURS]]})
    assert set(again["counts"].values()) == {0} and again["frame_refs"] == []
    # the same pseudonym under another tenant is another car: nothing of this tenant is touched
    assert call(store, "erase", {"pairs": [["other-city", THEIRS]]})["counts"]["plate_reads"] == 0
    assert vehicles(store) == [{"reads": 1, "vehicles": 1}]


@pytest.mark.unit
@pytest.mark.parametrize("pairs", [
    [], None, "x", [[TENANT]], [[TENANT, "A" * 64]], [[TENANT, OURS[:-1] + "'"]], [["Bad Tenant", OURS]],
    [["x') OR 1=1 --", OURS]], [[TENANT, OURS]] * 1001,
])
def test_malformed_pairs_are_refused_before_any_sql(pairs: Any) -> None:
    with pytest.raises(PrivacyOpError):
        check_pairs(pairs)
    with pytest.raises(PrivacyOpError):
        linked_where("db", pairs or [])


@pytest.mark.unit
def test_frame_files_are_deleted_only_inside_the_archive_and_missing_ones_are_reported(tmp_path: Path) -> None:
    root, outside = tmp_path / "frames", tmp_path / "keep.jpg"
    (root / TENANT / "2026-12-01" / "cam-01").mkdir(parents=True)
    kept = root / TENANT / "2026-12-01" / "cam-01" / "b.jpg"
    for path in (root / TENANT / "2026-12-01" / "cam-01" / "a.jpg", kept, outside):
        path.write_bytes(b"\xff\xd8")
    day = f"{TENANT}/2026-12-01/cam-01"
    deleted, missing = delete_frames(root, [f"{day}/a.jpg", f"{day}/gone.jpg", "../keep.jpg", str(outside), "."])
    assert (deleted, missing) == (1, [f"{day}/gone.jpg"])
    assert kept.exists() and outside.exists() and root.is_dir()
