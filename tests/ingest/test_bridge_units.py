"""The bridge's ack rule without servers: a PUBACK only after Kafka confirmed the record (or its dead letter)."""

from __future__ import annotations

import select
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import KafkaError, Message
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry

from citystream.ingest.bridge import bridge as bridge_mod
from citystream.ingest.bridge.bridge import Bridge
from citystream.ingest.bridge.inflight import InflightWindow
from citystream.ingest.bridge.kafka import DeliveryCallback
from citystream.ingest.bridge.mqtt import BridgeClient, FastMessage
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
        """Deliver this record's report as confluent-kafka does from poll(): without the record's headers."""
        key = self.key.encode() if isinstance(self.key, str) else self.key
        self.callback(err, Message(topic=self.topic, value=self.value, key=key, headers=None))


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

    def ack_many(self, acks: list[tuple[int, int]]) -> None:
        self.acks.extend(acks)

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


def test_a_frame_produced_again_after_a_failed_delivery_keeps_its_headers(bridge: Bridge) -> None:
    """The frame's metadata travels only in its headers; a report does not carry them back (seen in a chaos run:
    frames re-produced after a Kafka restart arrived bare and were dead-lettered as bad_frame_meta)."""
    m = mf.frame(bridge.settings.mqtt.topic_root, 4)
    msg = mqtt.MQTTMessage(mid=11, topic=m.topic.encode())
    msg.payload, msg.qos = m.payload, 1
    msg.properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    msg.properties.UserProperty = list(m.props)
    bridge._on_message(bridge.mqtt, None, msg)
    [first] = out(bridge).records
    assert first.topic == bridge.topics["frame"] and dict(first.headers)["seq"] == "4"
    first.report(KafkaError(KafkaError._MSG_TIMED_OUT))
    second = out(bridge).records[1]
    assert second.headers == first.headers and second.value == first.value
    second.report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))  # permanent: dead-lettered with the frame's headers
    letter = DeadLetter.model_validate_json(out(bridge).records[2].value)
    assert letter.reason == "kafka_rejected" and letter.headers["seq"] == "4"


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


def _publish(topic: str, mid: int, payload: bytes, props: Properties | None = None, qos: int = 1) -> bytes:
    """The wire bytes of an MQTT v5 PUBLISH, packed by paho's own encoder."""
    raw = (props or Properties(PacketTypes.PUBLISH)).pack()  # type: ignore[no-untyped-call]
    body = struct.pack("!H", len(topic.encode())) + topic.encode() + (struct.pack("!H", mid) if qos else b"") + raw
    body += payload
    length = bytearray()
    n = len(body)
    while True:
        length.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return bytes([0x30 | qos << 1]) + bytes(length) + body


def _props(**values: Any) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def test_bridge_client_reads_publishes_as_paho_does() -> None:
    """Buffered reads and the fast PUBLISH decoding hand on_message what paho's own decoding would."""
    pairs = [("event_id", "e-1"), ("district", "บางเขน"), ("empty", "")]
    jpeg = b"\xff\xd8" + bytes(200_000) + b"\xff\xd9"
    packets = [("city/t/g/sensor/d/reading", 1, b'{"a": 1}', None, 1),
               ("city/t/g/camera/d/frame", 2, jpeg, _props(UserProperty=pairs), 1),
               ("city/t/g/sensor/d/reading", 3, b"x", _props(MessageExpiryInterval=60, UserProperty=pairs), 1),
               ("city/t/g/sensor/d/reading", 0, b"qos0", None, 0),
               ("city/t/g/sensor/d/reading", 5, b"nul", _props(UserProperty=[("k", "a\x00b")]), 1)]
    wire = b"".join(_publish(*p) for p in packets)
    client = BridgeClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    got: list[tuple[str, int, bytes, list[tuple[str, str]], bool]] = []

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        props = msg.user_properties if isinstance(msg, FastMessage) else msg.properties.UserProperty \
            if msg.properties is not None and hasattr(msg.properties, "UserProperty") else []
        got.append((msg.topic, msg.mid, msg.payload, props, isinstance(msg, FastMessage)))

    client.on_message = on_message
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    try:
        for i in range(0, len(wire), 7_000):  # arrives in pieces that split packets anywhere
            peer.sendall(wire[i:i + 7_000])
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (client.buffered() or select.select([ours], [], [], 0)[0]):
                rc = client.loop_read()
        assert [g[:4] for g in got] == [(t, m, p, (pr.UserProperty if pr is not None else []))
                                        for t, m, p, pr, _ in packets[:3]] + [(packets[3][0], 0, b"qos0", [])]
        assert [g[4] for g in got] == [True, True, False, False], "only user properties take the fast path"
        assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL, "a NUL in a user property is still paho's protocol error"
    finally:
        ours.close()
        peer.close()


def test_bridge_client_sends_due_pubacks_in_one_write() -> None:
    client = BridgeClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    ours, peer = socket.socketpair()
    client._sock = ours
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    try:
        client.ack_many([(1, 1), (300, 1), (65535, 1)])
        assert peer.recv(100) == b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in (1, 300, 65535))
    finally:
        ours.close()
        peer.close()


@pytest.mark.unit
def test_dead_letter_headers_keep_repeated_user_properties() -> None:
    from citystream.ingest.bridge.bridge import _all_properties

    props = [("tenant", "a"), ("seq", "1"), ("tenant", "b"), ("tenant", "c")]
    assert _all_properties(props) == {"tenant": "a", "seq": "1", "tenant[2]": "b", "tenant[3]": "c"}
