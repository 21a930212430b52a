"""The local stack on real servers: status contract, auth, topics, data surviving down/up."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from confluent_kafka import Consumer, Producer

from citystream.schemas.topics import RAW_READINGS, TOPICS
from citystream.settings import load_settings
from citystream.stack.kafka import admin
from tests.conftest import REPO, citystream, free_port

pytestmark = pytest.mark.integration


def _connect_rc(port: int, username: str | None, password: str | None) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    result: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", port)
    for _ in range(50):
        client.loop(0.1)
        if result:
            break
    client.disconnect()
    return result[0] if result else -1


def test_status_json_contract_and_topics(stack_home: Path) -> None:
    doc = orjson.loads(citystream("stack", "status", "--json", config=stack_home).stdout)
    assert {"host", "port"} <= set(doc["mqtt"]) and doc["mqtt"]["running"]
    assert "bootstrap" in doc["kafka"] and doc["kafka"]["running"]
    assert doc["clickhouse"]["dsn"].startswith("chdb://")
    s = load_settings(stack_home)
    md = admin(s).list_topics(timeout=10)
    for spec in TOPICS:
        assert len(md.topics[spec.name].partitions) == spec.partitions


def test_mosquitto_requires_a_password(stack_home: Path) -> None:
    s = load_settings(stack_home)
    assert _connect_rc(s.mqtt.port, None, None) != 0
    assert _connect_rc(s.mqtt.port, "bridge", "wrong") != 0
    assert _connect_rc(s.mqtt.port, s.mqtt.username, s.mqtt.password.get_secret_value()) == 0


def test_down_keeps_data_and_up_is_idempotent(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(tmp_path / "home"), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "384m"}}))
    try:
        citystream("stack", "up", config=base, timeout=180)
        first = orjson.loads(citystream("stack", "status", "--json", config=base).stdout)
        again = orjson.loads(citystream("stack", "up", "--json", config=base, timeout=180).stdout)
        assert again["kafka"]["pid"] == first["kafka"]["pid"], "second up must reuse the running broker"
        s = load_settings(tmp_path / "home" / "citystream.yaml")
        marker = uuid.uuid4().hex.encode()
        producer = Producer(s.kafka.client_config())
        producer.produce(RAW_READINGS, key=b"k", value=marker)
        assert producer.flush(30) == 0
        citystream("stack", "down", config=base)
        assert not orjson.loads(citystream("stack", "status", "--json", config=base).stdout)["kafka"]["running"]
        citystream("stack", "up", config=base, timeout=180)
        consumer = Consumer({**s.kafka.client_config(), "group.id": "t", "auto.offset.reset": "earliest"})
        consumer.subscribe([RAW_READINGS])
        seen = []
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.append(msg.value())
                break
        consumer.close()
        assert seen == [marker]
    finally:
        citystream("stack", "down", config=base, check=False)
