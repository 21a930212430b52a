"""The bridge on the real stack (in-process): readings, frames, statuses, gaps and the DLQ corpus."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry

from citystream.ingest.bridge.bridge import Bridge
from citystream.ingest.bridge.validate import RECEIVED_HEADER
from citystream.schemas.events import DeadLetter, DeviceStatus
from citystream.schemas.topics import DEVICE_STATUS, DLQ, RAW_FRAMES, RAW_READINGS
from citystream.settings import Settings
from tests.ingest import malformed as mf

pytestmark = pytest.mark.integration


class Running:
    """A bridge serving in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.bridge = Bridge(settings, self.registry)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # Mosquitto keeps messages only for existing subscriptions: publish after the SUBACK, not after a sleep.
        if not self.bridge.subscribed.wait(30):
            self.stop()
            raise AssertionError("bridge did not subscribe within 30 s")
        assert self.metric("citystream_bridge_mqtt_subscribed") == 1

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def stop(self) -> None:
        self.bridge.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "bridge did not stop"
        assert self.error is None, self.error


@pytest.fixture
def bridge(settings: Settings) -> Iterator[Running]:
    settings.bridge.max_frame_bytes = 64 * 1024
    running = Running(settings)
    yield running
    running.stop()


def headers_of(record: object) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (record.headers() or [])}  # type: ignore[attr-defined]


def test_readings_frames_and_status_arrive_with_key_and_headers(settings: Settings, bridge: Running) -> None:
    root = settings.mqtt.topic_root
    readings = [mf.reading(root, seq, device=f"pm-{seq % 3}") for seq in range(30)]
    frames = [mf.frame(root, seq) for seq in range(5)]
    gw = mf.gateway_client(settings)
    try:
        mf.publish_all(gw, [*readings, *frames, mf.status(root, 0)])
    finally:
        gw.disconnect()
    got = mf.consume(settings, settings.kafka.topic(RAW_READINGS), len(readings))
    assert mf.event_ids(got) == {m.event_id for m in readings}
    for rec in got:
        assert rec.key().decode() == orjson.loads(rec.value())["device_id"]
        assert RECEIVED_HEADER in headers_of(rec)
    frame_recs = mf.consume(settings, settings.kafka.topic(RAW_FRAMES), len(frames))
    assert {headers_of(r)["event_id"] for r in frame_recs} == {m.event_id for m in frames}
    for rec in frame_recs:
        assert rec.key() == b"cam-1" and rec.value() == frames[0].payload
        assert headers_of(rec)["jpeg_bytes"] == str(len(frames[0].payload))
    statuses = mf.consume(settings, settings.kafka.topic(DEVICE_STATUS), 1)
    assert DeviceStatus.model_validate_json(statuses[0].value()).state == "heartbeat"
    assert bridge.metric("citystream_bridge_produced_total", stream="reading") == len(readings)


def test_gap_becomes_device_status_and_duplicates_are_counted(settings: Settings, bridge: Running) -> None:
    root = settings.mqtt.topic_root
    msgs = [mf.reading(root, s) for s in (0, 1, 2, 6, 7, 7)]
    gw = mf.gateway_client(settings)
    try:
        mf.publish_all(gw, msgs)
    finally:
        gw.disconnect()
    gaps = [DeviceStatus.model_validate_json(r.value())
            for r in mf.consume(settings, settings.kafka.topic(DEVICE_STATUS), 1)]
    assert [(g.state, g.gateway_id, g.gap_from_seq, g.gap_to_seq) for g in gaps] == [("gap", mf.GATEWAY, 3, 5)]
    assert len(mf.consume(settings, settings.kafka.topic(RAW_READINGS), 6)) == 6  # duplicates pass (dedup downstream)
    assert bridge.metric("citystream_bridge_seq_missing_total", stream="reading") == 3
    assert bridge.metric("citystream_bridge_seq_duplicates_total", stream="reading") == 1


def test_malformed_corpus_goes_to_dlq_with_reasons_and_bridge_keeps_serving(settings: Settings,
                                                                           bridge: Running) -> None:
    root = settings.mqtt.topic_root
    corpus = mf.corpus(root, max_reading=settings.bridge.max_reading_bytes, max_frame=settings.bridge.max_frame_bytes)
    assert len(corpus) >= 200
    valid = [mf.reading(root, seq) for seq in range(40)]
    mixed = [*corpus]
    for i, m in enumerate(valid):  # valid readings interleaved with the bad ones
        mixed.insert(i * (len(corpus) // len(valid) + 1), m)
    gw = mf.gateway_client(settings)
    try:
        mf.publish_all(gw, mixed)
    finally:
        gw.disconnect()
    letters = [DeadLetter.model_validate_json(r.value())
               for r in mf.consume(settings, settings.kafka.topic(DLQ), len(corpus), timeout_s=90)]
    assert len(letters) == len(corpus)
    # every message arrives as a dead letter of its own reason, topic and original bytes
    expected = Counter((m.reason, m.topic, m.payload[:settings.bridge.dlq_max_original_bytes]) for m in corpus)
    assert Counter((d.reason, d.original_topic, d.original_bytes) for d in letters) == expected
    assert all(d.stage == "bridge" and d.detail for d in letters)
    with_props = [d for d in letters if d.reason == "bad_frame_meta" and d.headers]
    assert with_props and all("tenant" in d.headers for d in with_props)
    got = mf.consume(settings, settings.kafka.topic(RAW_READINGS), len(valid))
    assert mf.event_ids(got) == {m.event_id for m in valid}
    for reason in set(m.reason for m in corpus):
        assert bridge.metric("citystream_bridge_dlq_total", reason=str(reason)) > 0
    assert bridge.thread.is_alive()


def test_topics_outside_the_map_become_dead_letters_not_broker_drops(settings: Settings, bridge: Running) -> None:
    """The broker acks what the dev login publishes anywhere under the root; the bridge must see all of it."""
    root = settings.mqtt.topic_root
    good = mf.reading(root, 0)
    odd = [mf.Msg(f"{good.topic}/extra", good.payload, reason="unknown_topic"),
           mf.Msg(f"{root}/{mf.TENANT}/{mf.GATEWAY}/sensor/reading", good.payload, reason="unknown_topic"),
           mf.Msg(f"{root}/loose", b"{}", reason="unknown_topic"),
           mf.Msg(f"{root}/_bridge/ready", b"{}", reason="unknown_topic")]  # QoS 1: not an announcement
    gw = mf.gateway_client(settings)
    try:
        mf.publish_all(gw, [*odd, good])
    finally:
        gw.disconnect()
    letters = [DeadLetter.model_validate_json(r.value())
               for r in mf.consume(settings, settings.kafka.topic(DLQ), len(odd), timeout_s=60, settle_s=3)]
    assert sorted((d.original_topic, d.reason) for d in letters) == sorted((m.topic, "unknown_topic") for m in odd)
    assert mf.event_ids(mf.consume(settings, settings.kafka.topic(RAW_READINGS), 1)) == {good.event_id}
