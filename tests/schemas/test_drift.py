"""Drift: the migrations' tables, the sink's Arrow blocks and the pydantic contracts describe the same columns.

Each table of the sink has one contract (``sinks.rows.TABLE_CONTRACTS``). After every migration is applied,
each table must hold exactly the Arrow block's columns with compatible types, and a column is Nullable
exactly when its contract field may be None. A disagreement fails with the table and the field named.
"""

from __future__ import annotations

import typing
from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel

from citystream import clickhouse
from citystream.schemas.events import SensorReading
from citystream.schemas.migrate import migrate
from citystream.settings import ClickHouseSettings
from citystream.sinks.rows import DERIVED, PROVENANCE, TABLE_CONTRACTS, arrow_schema, contract_drift

pytestmark = pytest.mark.integration

ARROW_OF = {"String": pa.string(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
            "Float32": pa.float32(), "Float64": pa.float64(), "Bool": pa.bool_(), "Array(Int32)": pa.list_(pa.int32()),
            "DateTime64(3, 'UTC')": pa.timestamp("ms", tz="UTC"), "Map(String, String)": pa.map_(pa.string(),
                                                                                                     pa.string())}


def _base(ch_type: str) -> tuple[str, bool]:
    """A ClickHouse type without LowCardinality/FixedString width, and whether it is Nullable."""
    nullable = ch_type.startswith("Nullable(")
    if nullable:
        ch_type = ch_type[len("Nullable("):-1]
    if ch_type.startswith("LowCardinality("):
        ch_type = ch_type[len("LowCardinality("):-1]
    if ch_type.startswith("FixedString("):
        ch_type = "String"
    return ch_type, nullable


def _optional(model: type[BaseModel], name: str) -> bool:
    return type(None) in typing.get_args(model.model_fields[name].annotation)


def ddl_drift(columns: dict[str, dict[str, str]]) -> list[str]:
    """How migrated tables (table -> column -> ClickHouse type) disagree with the Arrow blocks and the contracts."""
    problems = []
    for table, model in TABLE_CONTRACTS.items():
        have = columns.get(table, {})
        block = arrow_schema(table)
        problems += [f"{table}.{name}: in the sink's Arrow block, not in the migrated table" for name in block.names
                     if name not in have]
        problems += [f"{table}.{name}: in the migrated table, not in contract {model.__name__} nor the sink's block"
                     for name in have if name not in block.names]
        for name in (n for n in block.names if n in have):
            base, nullable = _base(have[name])
            wanted = block.field(name).type
            if wanted == pa.binary():
                wanted = pa.string()
            if ARROW_OF.get(base) != wanted:
                problems.append(f"{table}.{name}: migrated as {have[name]}, the sink sends {block.field(name).type}")
            if name in PROVENANCE or name in DERIVED.get(table, ()):
                continue
            if nullable != _optional(model, name):
                problems.append(f"{table}.{name}: migrated {'Nullable' if nullable else 'not Nullable'}, but "
                                f"{model.__name__}.{name} {'may' if _optional(model, name) else 'may not'} be None")
    return problems


@pytest.fixture
def migrated(chdb_dsn: str, unique: str) -> Any:
    """A client on this test's database with every migration applied."""
    settings = ClickHouseSettings(dsn=chdb_dsn, database=unique)
    migrate(clickhouse.connect(settings, database=False), unique)
    return clickhouse.connect(settings)


def table_columns(client: Any, database: str) -> dict[str, dict[str, str]]:
    """table -> column -> type, as ClickHouse reports them."""
    out: dict[str, dict[str, str]] = {}
    for table, name, ch_type in client.query("SELECT table, name, type FROM system.columns WHERE database = "
                                             "{d:String} ORDER BY table, position", parameters={"d": database}
                                             ).result_rows:
        out.setdefault(table, {})[name] = ch_type
    return out


def test_migrations_sink_blocks_and_contracts_agree(migrated: Any, unique: str) -> None:
    assert ddl_drift(table_columns(migrated, unique)) == []


def test_a_migration_that_disagrees_with_a_contract_is_named(migrated: Any, unique: str) -> None:
    migrated.command(f"ALTER TABLE `{unique}`.sensor_readings ADD COLUMN battery_mv UInt16")
    migrated.command(f"ALTER TABLE `{unique}`.alerts MODIFY COLUMN threshold Float64 DEFAULT 0")
    migrated.command(f"ALTER TABLE `{unique}`.face_matches MODIFY COLUMN distance Float64")
    migrated.command(f"ALTER TABLE `{unique}`.plate_reads DROP COLUMN watchlist_hit")
    assert ddl_drift(table_columns(migrated, unique)) == [
        "sensor_readings.battery_mv: in the migrated table, not in contract SensorReading nor the sink's block",
        "plate_reads.watchlist_hit: in the sink's Arrow block, not in the migrated table",
        "face_matches.distance: migrated as Float64, the sink sends float",
        "alerts.threshold: migrated not Nullable, but Alert.threshold may be None",
    ]


class Extended(SensorReading):
    """A contract with a field the sink has no column for."""

    battery_mv: int = 0


def test_a_contract_field_without_a_column_is_named() -> None:
    assert contract_drift("sensor_readings", SensorReading) == []
    assert contract_drift("sensor_readings", Extended) == [
        "sensor_readings.battery_mv: contract field Extended.battery_mv has no column"]
