"""Test events for the sink and schema tests: valid contracts with deterministic ids, and Arrow blocks."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from pydantic import BaseModel

from citystream.schemas import topics
from citystream.schemas.events import (
    Alert,
    DeviceStatus,
    FaceMatch,
    PlateRead,
    SensorReading,
    derived_event_id,
    make_event_id,
)
from citystream.sinks.batch import TableRows
from citystream.sinks.rows import ROUTES, to_row

BANGKOK = timezone(timedelta(hours=7))


def recent_start(now: datetime, hours: int = 3) -> datetime:
    """The top of the hour ``hours`` before ``now``, moved earlier when the ``hours`` after it would
    cross midnight in Bangkok: analyst queries group by Bangkok day, so test data stays in one day."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    end = start + timedelta(hours=hours)
    if start.astimezone(BANGKOK).date() != end.astimezone(BANGKOK).date():
        midnight = end.astimezone(BANGKOK).replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight.astimezone(UTC) - timedelta(hours=hours)
    return start


# Recent (the default TTLs would expire older rows), at the top of an hour, so rollup buckets are predictable.
T0 = recent_start(datetime.now(UTC))
TENANT = "nakhon-rangsit"


def reading(seq: int, value: float = 10.0, *, gateway: str = "gw-1", device: str = "pm-01",
            metric: str = "pm25_ug_m3", at: datetime | None = None, district: str = "ธัญบุรี") -> SensorReading:
    """A sensor reading whose id follows from gateway and seq."""
    return SensorReading(event_id=make_event_id(gateway, "reading", seq), tenant=TENANT, gateway_id=gateway,
                         device_id=device, seq=seq, captured_at=at or T0 + timedelta(seconds=seq), district=district,
                         metric=metric, value=value)


def plate(seq: int, pseudonym_of: str, *, camera: str = "cam-01", at: datetime | None = None,
          district: str = "ธัญบุรี") -> PlateRead:
    """A plate read; vehicles with the same ``pseudonym_of`` share a pseudonym."""
    source = make_event_id("gw-cam", "frame", seq)
    pseudonym = (pseudonym_of.encode().hex() * 64)[:64]
    return PlateRead(event_id=derived_event_id(source, "plate", 0), tenant=TENANT, gateway_id="gw-cam",
                     device_id=camera, seq=seq, captured_at=at or T0 + timedelta(seconds=seq), district=district,
                     source_event_id=source,
                     plate_pseudonym=pseudonym, confidence=0.9, bbox=(1, 2, 30, 10))


def alert(seq: int, *, state: str = "raised", district: str = "ธัญบุรี", at: datetime | None = None) -> Alert:
    """A PM2.5 alert."""
    return Alert(event_id=make_event_id("gw-1", "alert", seq), tenant=TENANT, gateway_id="gw-1", device_id="pm-01",
                 seq=seq, captured_at=at or T0 + timedelta(seconds=seq), district=district, alert_type="pm25_band",
                 severity="warning", state=state, message="PM2.5 high", value=80.0,
                 threshold=75.0)


def status(seq: int) -> DeviceStatus:
    """A heartbeat."""
    return DeviceStatus(event_id=make_event_id("gw-1", "status", seq), tenant=TENANT, gateway_id="gw-1",
                        device_id="gw-1", seq=seq, captured_at=T0 + timedelta(seconds=seq),
                        state="heartbeat", queue_depth=3, fps=4.5)


def face(seq: int) -> FaceMatch:
    """A watchlist face match."""
    source = make_event_id("gw-cam", "frame", seq)
    return FaceMatch(event_id=derived_event_id(source, "face", 0), tenant=TENANT, gateway_id="gw-cam",
                     device_id="cam-01", seq=seq, captured_at=T0 + timedelta(seconds=seq), source_event_id=source,
                     watchlist_entry_id="wl-7", distance=0.31, bbox=(5, 5, 40, 40))


TOPIC_OF: dict[type[BaseModel], str] = {
    SensorReading: topics.RAW_READINGS, PlateRead: topics.PLATE_READS, Alert: topics.ALERTS,
    DeviceStatus: topics.DEVICE_STATUS, FaceMatch: topics.FACE_MATCHES,
}


def block(events: Iterable[BaseModel], ingested_at_ms: int | None = None) -> tuple[str, pa.Table]:
    """The target table and the Arrow insert block of events of one kind, as the sink builds it."""
    rows: TableRows | None = None
    for offset, event in enumerate(events):
        route = ROUTES[TOPIC_OF[type(event)]]
        row = to_row(route, event.model_dump_json().encode())
        row.update(kafka_partition=0, kafka_offset=offset)
        rows = rows or TableRows.empty(route.table)
        rows.append(row, (TOPIC_OF[type(event)], None, None, None))
    assert rows is not None, "no events"
    return rows.table, rows.to_arrow(ingested_at_ms if ingested_at_ms is not None else int(time.time() * 1000))
