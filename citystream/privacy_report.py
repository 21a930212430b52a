"""What citystream keeps how long: the retention settings next to what the store and Kafka actually have."""

from __future__ import annotations

import logging
from typing import Any

from citystream.clickhouse import StoreError, query_rows
from citystream.schemas import migrate as schema
from citystream.schemas.topics import TOPICS
from citystream.settings import Settings
from citystream.settings.retention import PURPOSES
from citystream.topics import wanted_topics

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


def _store_tables(settings: Settings) -> dict[str, dict[str, str]] | None:
    """``name -> {engine_full, create_table_query}`` of the database's tables, None when the store is unavailable."""
    db = settings.clickhouse.database.replace("'", "")
    try:
        rows = query_rows(settings, "SELECT name, engine_full, create_table_query FROM system.tables "
                                    f"WHERE database = '{db}'")
    except StoreError as exc:
        log.warning("store unavailable; retention from settings only", extra={"error": str(exc)[:300]})
        return None
    return {str(r["name"]): {"engine": str(r["engine_full"]), "create": str(r["create_table_query"])} for r in rows}


def _table_ttl(tables: dict[str, dict[str, str]] | None, table: str) -> str | None:
    if tables is None:
        return None
    engine = tables.get(table, {}).get("engine", "")
    return engine.split(" TTL ", 1)[1].split(" SETTINGS ")[0] if " TTL " in engine else ""


def retention_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per kind of data kept: what, where, days (0 = forever), purpose, and the store's TTL."""
    tables = _store_tables(settings)
    where = f"ClickHouse {settings.clickhouse.database}"
    rows: list[dict[str, Any]] = [
        {"what": table, "where": where, "days": days, "purpose": PURPOSES[table],
         "store_ttl": _table_ttl(tables, table)} for table, days in settings.retention.tables.items()]
    image_days = settings.retention.dead_letter_image_days
    image_ttl = None if tables is None else (
        schema.image_ttl(image_days) if schema.image_ttl(image_days) in
        tables.get(schema.DEAD_LETTERS, {}).get("create", "") else "")
    rows.append({"what": "dead_letters.original_bytes of camera frames", "where": where, "days": image_days,
                 "purpose": "a rejected frame's image, for diagnosis", "store_ttl": image_ttl})
    rows.append({"what": "archived frame files", "where": str(settings.sink.frames_dir),
                 "days": settings.retention.days(schema.FRAME_INDEX), "purpose": "evidence frames with detections "
                 "(day folders pruned by the sink with frame_index)", "store_ttl": None})
    for spec, topic in zip(TOPICS, wanted_topics(settings), strict=True):
        ms = int(topic.config.get("retention.ms", "-1"))
        days = 0 if ms < 0 else ms // DAY_MS if ms % DAY_MS == 0 else round(ms / DAY_MS, 3)
        rows.append({"what": topic.name, "where": "Kafka", "days": days, "purpose": spec.purpose, "store_ttl": None})
    return rows
