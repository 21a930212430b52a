"""Console fixtures: settings with one user per role on the session stack, a migrated chDB database, a
city's worth of rows in it (a camera with an archived frame, plate reads, PM2.5 and canal readings), and
helpers that publish events to the real Kafka output topics as the worker does."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from PIL import Image
from pydantic import BaseModel

from citystream import clickhouse
from citystream.console.auth import hash_password
from citystream.processors.watchlists import watchlists
from citystream.schemas import topics
from citystream.schemas.events import (
    Alert,
    DeviceStatus,
    PlateRead,
    SensorReading,
    Severity,
    derived_event_id,
    make_event_id,
)
from citystream.schemas.migrate import migrate
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from citystream.settings.console import ConsoleSettings, ConsoleUser
from tests.schemas.test_analyst_queries import insert as insert_rows

TENANT = "nakhon-rangsit"
PASSWORDS = {"op": "op-pass-1", "analyst": "an-pass-1", "dpo": "dpo-pass-1", "admin": "admin-pass-1"}
ROLES = {"op": "operator", "analyst": "analyst", "dpo": "privacy_officer", "admin": "admin"}
CAMERA, GATEWAY, DISTRICT = "gw-rangsit-cam-01", "gw-rangsit", "รังสิต"
REGISTRATION, PROVINCE = "1กข 1234", "ปทุมธานี"


def console_users() -> ConsoleSettings:
    """One user per role."""
    return ConsoleSettings(users={login: ConsoleUser(role=ROLES[login], password_hash=hash_password(pw),  # type: ignore[arg-type]
                                                     name=f"{login} user")
                                  for login, pw in PASSWORDS.items()}, feed_backlog=100)


@pytest.fixture
def console_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with console users, a frames directory and a migrated database."""
    admin = clickhouse.connect(settings, database=False)
    migrate(admin, settings.clickhouse.database)
    sink = settings.sink.model_copy(update={"frames_dir": tmp_path / "frames"})
    return settings.model_copy(update={"console": console_users(), "sink": sink})


def insert(settings: Settings, topic: str, events: list[BaseModel]) -> None:
    """Insert events as the sink does (the analyst-query tests' helper) into the test's database."""
    insert_rows(clickhouse.connect(settings, database=False), settings.clickhouse.database, topic, events)


def jpeg(width: int = 320, height: int = 240) -> bytes:
    """A grey test frame."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(out, format="JPEG", quality=95)
    return out.getvalue()


def plate_read(seq: int, *, hit: bool, at: datetime, pseudonym: str = "ab" * 32) -> PlateRead:
    """A plate read on camera CAMERA from the frame with the given seq."""
    source = make_event_id(GATEWAY, "frame", seq)
    return PlateRead(event_id=derived_event_id(source, "plate", 0), tenant=TENANT, gateway_id=GATEWAY,
                     device_id=CAMERA, seq=seq, captured_at=at, district=DISTRICT, source_event_id=source,
                     plate_pseudonym=pseudonym, confidence=0.93, bbox=(100, 120, 80, 30), watchlist_hit=hit)


def plate_alert(read: PlateRead, entry_id: str) -> Alert:
    """The worker's plate watchlist alert for a read (as processors.alerts builds it)."""
    return Alert(event_id=derived_event_id(read.event_id, "alert/plate_watchlist", 0), tenant=read.tenant,
                 gateway_id=read.gateway_id, device_id=read.device_id, seq=read.seq, captured_at=read.captured_at,
                 district=read.district, alert_type="plate_watchlist", severity=Severity.CRITICAL,
                 message=f"ทะเบียนในบัญชีเฝ้าระวัง / watchlisted plate: stolen pickup (entry {entry_id}) at {DISTRICT}",
                 value=read.confidence, source_event_id=read.event_id)


def city(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """A camera with a heartbeat and one archived frame with a watchlisted plate; PM2.5 and a rising canal."""
    now = now or datetime.now(UTC)
    frame_id = make_event_id(GATEWAY, "frame", 1)
    read = plate_read(1, hit=True, at=now - timedelta(seconds=30))
    insert(settings, topics.PLATE_READS, [read])
    insert(settings, topics.DEVICE_STATUS, [DeviceStatus(
        event_id=make_event_id(GATEWAY, "status", 1), tenant=TENANT, gateway_id=GATEWAY, device_id=GATEWAY, seq=1,
        captured_at=now - timedelta(seconds=5), district=DISTRICT, state="heartbeat", fps=4.5)])
    ref = f"{TENANT}/{now.date().isoformat()}/{CAMERA}/{frame_id}.jpg"
    path = settings.sink.frames_dir / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg())
    client = clickhouse.connect(settings, database=False)
    client.command(f"""INSERT INTO `{settings.clickhouse.database}`.frame_index
        (event_id, schema_version, tenant, gateway_id, device_id, seq, captured_at, district, width, height,
         jpeg_bytes, motion_score, keyframe, detections, object_ref, sha256, ingested_at, kafka_partition, kafka_offset)
        VALUES ('{frame_id}', 1, '{TENANT}', '{GATEWAY}', '{CAMERA}', 1,
                toDateTime64('{read.captured_at:%Y-%m-%d %H:%M:%S}', 3, 'UTC'), '{DISTRICT}', 320, 240, 1000, 0.5,
                true, 1, '{ref}', '{"0" * 64}', now64(3), 0, 0)""")
    readings = []
    for i in range(30):  # the last 30 minutes: haze in Rangsit, clean air in Khlong Luang, a canal rising 3 cm/min
        at = now - timedelta(minutes=30 - i)
        for seq, (metric, device, district, value) in enumerate([
            ("pm25_ug_m3", "pm-rangsit", DISTRICT, 80.0 + i % 3), ("pm25_ug_m3", "pm-kl", "คลองหลวง", 10.0),
            ("water_level_cm", "canal-01", DISTRICT, 100.0 + 3 * i)]):
            readings.append(SensorReading(event_id=make_event_id("gw-sensors", "reading", i * 3 + seq), tenant=TENANT,
                                          gateway_id="gw-sensors", device_id=device, seq=i * 3 + seq, captured_at=at,
                                          district=district, metric=metric, value=value))
    insert(settings, topics.RAW_READINGS, readings)
    return {"frame_id": frame_id, "read": read, "path": path}


def publish(settings: Settings, base_topic: str, events: list[BaseModel]) -> None:
    """Produce events to a Kafka output topic as the worker does (keyed by device)."""
    producer = Producer({**settings.kafka.client_config(), "acks": "all"})
    for event in events:
        producer.produce(settings.kafka.topic(base_topic), key=str(getattr(event, "device_id", "")).encode(),
                         value=to_json(event))
    assert producer.flush(30) == 0


def watch_plate(settings: Settings) -> watchlists.WatchlistEntry:
    """Put REGISTRATION on the watchlist through the watchlist code (the compacted topic)."""
    now = datetime.now(UTC)
    entry = watchlists.WatchlistEntry(
        entry_id=watchlists.plate_entry_id(TENANT, REGISTRATION, PROVINCE), tenant=TENANT, kind="plate",
        label="stolen pickup", registration=REGISTRATION, province=PROVINCE, reason="reported stolen",
        legal_basis="police report 123/2569", expires_at=now + timedelta(days=7), created_at=now, created_by="test")
    watchlists.publish(settings, entry)
    return entry


def wait_for(predicate: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Poll until ``predicate()`` is truthy (a bound on waiting, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
