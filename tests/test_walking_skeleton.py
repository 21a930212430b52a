"""Walking skeleton: a reading goes MQTT -> bridge -> Kafka -> sink -> ClickHouse -> ``citystream query``.

Real Mosquitto and Kafka (the session stack), the bridge and the sink as real processes, the sink
owning a chDB path of its own. Then ``citystream demo --json`` on the same stack: its verdict contract.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citystream.demo import Pipeline, probe_bridge
from citystream.ingest.provision import provision
from citystream.schemas.events import Metric, SensorReading, make_event_id
from citystream.schemas.topics import mqtt_topic
from citystream.schemas.wire import to_json
from citystream.settings import Settings
from tests.conftest import citystream, write_settings

pytestmark = pytest.mark.e2e


def _own_store(settings: Settings, tmp_path: Path) -> Path:
    """Settings file for stage processes, with a chDB path the sink subprocess owns."""
    own = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
        update={"dsn": f"chdb://{tmp_path / 'clickhouse'}"})})
    return write_settings(own, tmp_path / "citystream.yaml")


def _publish(settings: Settings, reading: SensorReading) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{reading.gateway_id}-test", protocol=mqtt.MQTTv5)
    cred = provision(settings, reading.tenant, reading.gateway_id, rotate=True)  # the gateway's own login
    client.username_pw_set(cred["username"], cred["password"])
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        topic = mqtt_topic(settings.mqtt.topic_root, reading.tenant, reading.gateway_id, "sensor", reading.device_id,
                           "reading")
        client.publish(topic, to_json(reading), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _query(config: Path, sql: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(citystream("query", "--json", sql, config=config).stdout)
    return rows


def test_one_reading_reaches_citystream_query(settings: Settings, tmp_path: Path) -> None:
    config = _own_store(settings, tmp_path)
    reading = SensorReading(event_id=make_event_id("gw-skeleton", "reading", 7), tenant=settings.gateway.tenant,
                            gateway_id="gw-skeleton", device_id="pm25-01", seq=7,
                            captured_at=datetime.now(UTC), metric=Metric.PM25, value=37.5)
    sql = ("SELECT event_id, device_id, metric, value, captured_at FROM v_sensor_readings "
           "WHERE gateway_id = 'gw-skeleton'")
    pipeline = Pipeline()
    try:
        pipeline.start("sink", config, tmp_path)
        pipeline.start("bridge", config, tmp_path)
        probe_bridge(settings, pipeline, 90)  # the bridge's subscription is live: MQTT -> Kafka works
        _publish(settings, reading)
        deadline = time.monotonic() + 90
        rows: list[dict[str, object]] = []
        while not rows and time.monotonic() < deadline:
            pipeline.check_alive()
            if (tmp_path / "clickhouse" / "citystream-owner.json").exists():
                rows = _query(config, sql)
            time.sleep(0.5)
    finally:
        codes = pipeline.stop()
    assert codes == {"sink": 0, "bridge": 0}
    assert len(rows) == 1, rows
    row = rows[0]
    assert datetime.fromisoformat(str(row.pop("captured_at"))) == reading.captured_at
    assert row == {"event_id": reading.event_id, "device_id": "pm25-01", "metric": "pm25_ug_m3", "value": 37.5}
    # With the sink stopped, the query opens the embedded store itself: the row outlives the processes.
    assert [r["event_id"] for r in _query(config, sql)] == [reading.event_id]


@pytest.mark.slow
def test_demo_verdict_contract_with_every_stage(settings: Settings, tmp_path: Path) -> None:
    config = _own_store(settings, tmp_path)
    res = citystream("demo", "--duration", "8", "--gateways", "1", "--cameras", "1", "--sensors", "2", "--rate", "4",
                     "--json", config=config, check=False, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    verdict = json.loads(res.stdout.strip().splitlines()[-1])
    assert verdict["published"] > 0
    assert verdict["stored"] == verdict["published"]
    assert (verdict["lost"], verdict["duplicates"], verdict["dlq"]) == (0, 0, 0)
    assert 0 < verdict["e2e_latency_p50_s"] <= verdict["e2e_latency_p99_s"]
    # the worker read the simulator's rendered Thai plates (raw readings are lz4 on Kafka, frames are not)
    assert verdict["frames_published"] > 0 and verdict["plate_reads"] > 0
    assert verdict["stage_exit_codes"] == {"sink": 0, "bridge": 0, "worker": 0}
