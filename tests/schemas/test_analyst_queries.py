"""Every query in docs/queries.md runs on a demo-like dataset and returns the rows an analyst expects."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from citystream import clickhouse
from citystream.schemas import topics
from citystream.schemas.events import DeadLetter, DeviceStatus, make_event_id
from citystream.settings import ClickHouseSettings
from citystream.sinks.batch import TableRows
from citystream.sinks.rows import ROUTES, to_row
from citystream.sinks.writer import INSERT_SETTINGS
from tests.sinks.factory import BANGKOK, T0, TENANT, alert, face, plate, reading, recent_start

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
RANGSIT, KHLONG_LUANG = "รังสิต", "คลองหลวง"


def doc_queries() -> list[tuple[str, str]]:
    """(title, sql) of every numbered query in docs/queries.md."""
    return [(title.strip(), sql.strip())
            for title, sql in re.findall(r"^### (.+?)\n.*?```sql\n(.*?)```", DOC.read_text(), re.S | re.M)]


def insert(client: Any, db: str, topic: str, events: list[BaseModel]) -> None:
    """Insert events as the sink does: the topic's route, one Arrow block."""
    route = ROUTES[topic]
    rows = TableRows.empty(route.table)
    for offset, event in enumerate(events):
        row = to_row(route, event.model_dump_json().encode())
        row.update(kafka_partition=0, kafka_offset=offset)
        rows.append(row, (topic, None, None, None))
    client.insert_arrow(rows.table, rows.to_arrow(int(time.time() * 1000)), database=db,
                        settings=dict(INSERT_SETTINGS))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def status(seq: int, state: str, minutes: float, **extra: Any) -> DeviceStatus:
    return DeviceStatus(event_id=make_event_id("gw-rangsit-01", "status", seq), tenant=TENANT,
                        gateway_id="gw-rangsit-01", device_id="gw-rangsit-01", seq=seq, captured_at=at(minutes),
                        state=state, **extra)


def demo_like(client: Any, db: str) -> None:
    """Three hours of a city: clean air in Rangsit, a haze episode in Khlong Luang, a canal rising."""
    readings = []
    for i in range(36):  # every 5 minutes
        readings.append(reading(i, 12.0 + i % 3, gateway="gw-rangsit-01", device="pm25-01", at=at(5 * i),
                                district=RANGSIT))
        readings.append(reading(i, 88.0 + i % 5, gateway="gw-kl-01", device="pm25-02", at=at(5 * i),
                                district=KHLONG_LUANG))
        readings.append(reading(100 + i, 95.0 + 2.0 * i, gateway="gw-kl-01", device="canal-level-01",
                                metric="water_level_cm", at=at(5 * i), district=KHLONG_LUANG))
        readings.append(reading(100 + i, 80.0, gateway="gw-rangsit-01", device="canal-level-02",
                                metric="water_level_cm", at=at(5 * i), district=RANGSIT))
    insert(client, db, topics.RAW_READINGS, readings)
    vehicles = "aabcadbbe"  # a, b repeat
    reads = [plate(i, v, camera=f"cam-{i % 2:02d}", at=at(20 * i), district=RANGSIT) for i, v in enumerate(vehicles)]
    reads[3] = reads[3].model_copy(update={"watchlist_hit": True})
    insert(client, db, topics.PLATE_READS, reads)
    insert(client, db, topics.FACE_MATCHES, [face(1), face(2)])
    insert(client, db, topics.ALERTS, [alert(1, district=KHLONG_LUANG, at=at(10)),
                                       alert(2, state="cleared", district=KHLONG_LUANG, at=at(170))])
    insert(client, db, topics.DEVICE_STATUS, [
        status(1, "heartbeat", 150, spool_bytes=4096), status(2, "gap", 100, gap_from_seq=40, gap_to_seq=44),
        status(3, "offline", 120)])
    insert(client, db, topics.DLQ, [
        DeadLetter.build(stage="bridge", reason="not_json", detail="not JSON", payload=b"\xff\xfe junk",
                         topic="city/nakhon-rangsit/gw-kl-01/sensor/pm25-02/reading", tenant=TENANT),
        DeadLetter.build(stage="bridge", reason="non_finite", detail="value: NaN", payload=b'{"value": NaN}',
                         topic="city/nakhon-rangsit/gw-kl-01/sensor/pm25-02/reading", tenant=TENANT)])


def test_the_document_has_at_least_eight_queries() -> None:
    assert len(doc_queries()) >= 8


def test_every_documented_query_returns_rows(analyst_store: ClickHouseSettings) -> None:
    results = {title: clickhouse.query_rows(analyst_store, sql) for title, sql in doc_queries()}
    assert {title for title, rows in results.items() if not rows} == set()

    by_title = {title.split(".")[0]: rows for title, rows in results.items()}
    bands = {(r["district"], r["thai_aqi_band"]) for r in by_title["1"]}
    assert (KHLONG_LUANG, "affects health") in bands and (RANGSIT, "very good") in bands
    assert [r["district"] for r in by_title["2"]] == [KHLONG_LUANG]
    rise = {r["gauge"]: r["rise_cm"] for r in by_title["3"]}
    assert rise["canal-level-01"] > 50 and rise["canal-level-02"] == 0
    assert sorted(r["reads"] for r in by_title["5"]) == [3, 3]  # vehicles a and b
    assert sorted(r["kind"] for r in by_title["6"]) == ["face", "face", "plate"]
    assert [(r["gateway_id"], r["gaps"], r["messages_missed"]) for r in by_title["7"]] == [("gw-rangsit-01", 1, 5)]
    assert {r["reason"]: r["records"] for r in by_title["8"]} == {"not_json": 1, "non_finite": 1}


@pytest.mark.unit
def test_the_three_hours_of_test_data_stay_in_one_bangkok_day_at_any_time_of_day() -> None:
    for hour in range(24):
        for minute in (0, 30, 59):
            now = datetime(2026, 11, 25, hour, minute, tzinfo=UTC)
            start = recent_start(now)
            last = start + timedelta(minutes=175)  # the last reading of demo_like
            assert start.astimezone(BANGKOK).date() == last.astimezone(BANGKOK).date(), (now, start)
            assert timedelta(hours=3) <= now - start < timedelta(hours=6), (now, start)
