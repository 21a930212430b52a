"""The bridge's ack rule without servers: a PUBACK only after Kafka confirmed the record (or its dead letter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import KafkaError, Message
from prometheus_client import CollectorRegistry

from citystream.ingest import bridge as bridge_mod
from citystream.ingest.bridge import Bridge
from citystream.ingest.bridge_kafka import DeliveryCallback
from citystream.ingest.inflight import InflightWindow
from citystream.schemas.events import DeadLetter
from citystream.settings import Settings
from tests.ingest import malformed as mf

pytestmark = pytest.mark.unit


@dataclass
class Produced:
    topic: str
    value: bytes
    key: Any
    headers: Any
    callback: DeliveryCallback

    def report(self, err: KafkaError | None = None) -> None:
        """Deliver this record's report as librdkafka would from poll()."""
        key = self.key.encode() if isinstance(self.key, str) else self.key
        self.callback(err, Message(topic=self.topic, value=self.value, key=key, headers=self.headers))


@dataclass
class FakeOut:
    """Stands in for KafkaOut: records produce calls; the test decides when and how each is reported."""

    records: list[Produced] = field(default_factory=list)

    def __init__(self, *args: Any) -> None:
        self.records = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, callback: DeliveryCallback,
                frame: bool = False) -> None:
        self.records.append(Produced(topic, value, key, headers, callback))

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def pending(self) -> int:
        return 0


class FakeMqtt:
    """Records the acks the bridge sends."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))

    def want_write(self) -> bool:
        return False


@pytest.fixture
def bridge(monkeypatch: pytest.MonkeyPatch) -> Bridge:
    monkeypatch.setattr(bridge_mod, "KafkaOut", FakeOut)
    b = Bridge(Settings(), CollectorRegistry())
    b.mqtt = FakeMqtt()  # type: ignore[assignment]
    return b


def deliver(b: Bridge, m: mf.Msg, mid: int) -> None:
    msg = mqtt.MQTTMessage(mid=mid, topic=m.topic.encode())
    msg.payload = m.payload
    msg.qos = 1
    b._on_message(b.mqtt, None, msg)


def out(b: Bridge) -> FakeOut:
    assert isinstance(b.out, FakeOut)
    return b.out


def acks(b: Bridge) -> list[tuple[int, int]]:
    b._flush_acks()
    assert isinstance(b.mqtt, FakeMqtt)
    return b.mqtt.acks


def test_ack_only_after_kafka_confirmed(bridge: Bridge) -> None:
    root = bridge.settings.mqtt.topic_root
    deliver(bridge, mf.reading(root, 0), mid=7)
    [rec] = out(bridge).records
    assert rec.topic == bridge.topics["reading"] and acks(bridge) == []
    rec.report(KafkaError(KafkaError._MSG_TIMED_OUT))  # retryable: produced again, still no ack
    assert acks(bridge) == [] and len(out(bridge).records) == 2 and bridge.window.count == 1
    out(bridge).records[1].report(None)
    assert acks(bridge) == [(7, 1)] and bridge.window.count == 0


def test_connection_lost_before_confirmation_means_no_ack_on_the_new_connection(bridge: Bridge) -> None:
    deliver(bridge, mf.reading(bridge.settings.mqtt.topic_root, 0), mid=3)
    bridge._on_disconnect(bridge.mqtt, None, mqtt.DisconnectFlags(False), mqtt.ReasonCode(mqtt.PacketTypes.DISCONNECT),
                          None)
    out(bridge).records[0].report(None)
    assert acks(bridge) == [] and bridge.window.count == 0  # the broker redelivers it: a duplicate, not a loss


def test_bad_input_is_acked_only_once_its_dead_letter_is_stored(bridge: Bridge) -> None:
    topic = mf.reading(bridge.settings.mqtt.topic_root, 0).topic
    deliver(bridge, mf.Msg(topic, b"not json"), mid=9)
    [rec] = out(bridge).records
    letter = DeadLetter.model_validate_json(rec.value)
    assert rec.topic == bridge.dlq_topic and letter.reason == "not_json" and letter.original_bytes == b"not json"
    assert acks(bridge) == []
    rec.report(None)
    assert acks(bridge) == [(9, 1)]


def test_record_kafka_rejects_for_good_goes_to_the_dlq(bridge: Bridge) -> None:
    deliver(bridge, mf.reading(bridge.settings.mqtt.topic_root, 0), mid=4)
    out(bridge).records[0].report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    dlq = out(bridge).records[1]
    assert dlq.topic == bridge.dlq_topic
    assert orjson.loads(dlq.value)["reason"] == "kafka_rejected" and acks(bridge) == []
    dlq.report(None)
    assert acks(bridge) == [(4, 1)]


def test_window_bounds_count_and_bytes() -> None:
    w = InflightWindow(max_messages=3, max_bytes=1000)
    big = w.open(1, 1, 5000)
    assert w.full(), "one message always fits into an empty window, then it is full by bytes"
    w.close(big)
    slots = [w.open(mid, 1, 10) for mid in (2, 3, 4)]
    assert w.full() and w.count == 3 and w.bytes == 30
    w.close(slots[1])
    w.close(slots[0])
    assert not w.full() and w.take_acks() == [(1, 1), (3, 1), (2, 1)]
    w.new_generation()
    assert w.close(slots[2]) is False and w.take_acks() == [] and w.count == 0
