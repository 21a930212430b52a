"""The gateway against the real Mosquitto: QoS 1, frame user properties, heartbeat, last-will, ACL denial.

Also home of the small MQTT subscriber the other gateway tests use to see what reached the broker.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from citystream.ingest.gateway.gateway import AuthRefused, Gateway
from citystream.ingest.gateway.publisher import GatewayMetrics
from citystream.ingest.provision import provision
from citystream.schemas.events import FrameMeta
from citystream.schemas.topics import bridge_confirm_topic, bridge_ready_topic
from citystream.schemas.wire import frame_meta_from_pairs
from citystream.settings import Settings, load_settings


@dataclass(frozen=True)
class Received:
    """One message as the subscriber got it."""

    topic: str
    payload: bytes
    properties: tuple[tuple[str, str], ...]
    qos: int

    @property
    def stream(self) -> str:
        return self.topic.rsplit("/", 1)[1]

    @property
    def device(self) -> str:
        return self.topic.split("/")[-2]

    def doc(self) -> dict[str, Any]:
        """The event: JSON body, or FrameMeta from the user properties of a frame."""
        if self.stream == "frame":
            return frame_meta_from_pairs(self.properties).model_dump(mode="json")
        loaded: dict[str, Any] = orjson.loads(self.payload)
        return loaded


class Subscriber:
    """A QoS 1 MQTT v5 subscriber logged in as the bridge; ``persistent`` keeps its session across restarts.

    Like the bridge, it announces on ``{root}/_bridge/ready`` while its subscription is in place on
    the current connection (gateways publish only after such an announcement) and confirms every
    message it received (gateways delete a row only when confirmed); ``announce=False`` plays a
    subscriber that does neither.
    """

    def __init__(self, settings: Settings, topic_filter: str, persistent: bool = False,
                 announce: bool = True, withhold: set[tuple[str, int]] | None = None) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._closed = threading.Event()
        self.topic_filter = topic_filter
        self.ready_topic = bridge_ready_topic(settings.mqtt.topic_root)
        self.root = settings.mqtt.topic_root
        self.announce = announce
        self.withhold = set(withhold or ())  # (stream, seq) whose first confirmation is "lost"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(settings.mqtt.username, settings.mqtt.password.get_secret_value())
        client.reconnect_delay_set(0.1, 1)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_disconnect = lambda *args: self._subscribed.clear()
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=not persistent, properties=props)
        client.loop_start()
        self.client = client
        assert self._subscribed.wait(10), "subscription not acknowledged"
        if announce:
            threading.Thread(target=self._announce, daemon=True).start()

    def _announce(self) -> None:
        while not self._closed.wait(0.3):
            if self._subscribed.is_set():
                self.client.publish(self.ready_topic, b"{}", qos=0)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(f"{self.root}/_bridge/"):
            return
        pairs = tuple(getattr(msg.properties, "UserProperty", None) or ())
        received = Received(msg.topic, bytes(msg.payload), pairs, msg.qos)
        with self._lock:
            self.messages.append(received)
        if self.announce:
            self._confirm(received)

    def _confirm(self, msg: Received) -> None:
        parts = msg.topic.split("/")
        try:
            seq = int(msg.doc()["seq"])
        except Exception:  # not a gateway message: nothing to confirm
            return
        if (msg.stream, seq) in self.withhold:
            self.withhold.discard((msg.stream, seq))
            return
        if len(parts) == 6:
            topic = bridge_confirm_topic(self.root, parts[1], parts[2])
            self.client.publish(topic, orjson.dumps({msg.stream: [[seq, seq]]}), qos=0)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def count(self, stream: str) -> int:
        return sum(1 for m in self.received() if m.stream == stream)

    def wait_for(self, what: str, cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() >= deadline:
                seqs = {int(m.doc()["seq"]) for m in self.received() if m.stream == "reading"}
                missing = sorted(set(range(max(seqs, default=-1) + 1)) - seqs)
                pytest.fail(f"timed out waiting for {what}; received {len(self.received())} messages, "
                            f"{len(seqs)} reading seqs up to {max(seqs, default=None)}, missing {missing[:20]}")
            time.sleep(0.1)

    def close(self) -> None:
        self._closed.set()
        self.client.loop_stop()
        self.client.disconnect()


def seqs_by_device(messages: list[Received], stream: str) -> dict[str, list[int]]:
    """Seqs per device of one stream, in arrival order."""
    out: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        if m.stream == stream:
            out[m.device].append(int(m.doc()["seq"]))
    return dict(out)


def assert_complete_and_ordered(messages: list[Received], stream: str) -> int:
    """Every seq of the gateway stream from 0 arrived, each device's first copies in increasing order."""
    per_device = seqs_by_device(messages, stream)
    first_seen: list[int] = []
    for device, seqs in per_device.items():
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts), f"{stream} of {device} out of order"
        first_seen += firsts
    start = min(first_seen, default=0)
    assert sorted(first_seen) == list(range(start, start + len(first_seen))), f"{stream}: seqs missing or duplicated"
    return len(first_seen)


def stack_settings(stack_home: Path, root: str, tmp_path: Path, **gateway: Any) -> Settings:
    """The session stack's settings with this test's topic root, state directory and gateway fields."""
    overrides: dict[str, Any] = {"mqtt.topic_root": root, "gateway.state_dir": str(tmp_path / "state"),
                                 "metrics.port": 0}
    overrides.update({f"gateway.{k}": v for k, v in gateway.items()})
    return load_settings(stack_home, overrides)


def provisioned(settings: Settings) -> Settings:
    """The settings with a provisioned identity for their gateway: its own device streams only, like a junction box."""
    cred = provision(settings, settings.gateway.tenant, settings.gateway.gateway_id, rotate=True)
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(
        update={"username": cred["username"], "password": SecretStr(cred["password"])})})


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.integration
def test_readings_frames_and_statuses_arrive_with_qos1_metadata_and_last_will(
        stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-pub", heartbeat_s=0.5, cameras=[
        {"type": "simulated", "device_id": "cam-1", "width": 320, "height": 180, "fps": 5, "scenes": 2,
         "face_every": 2, "district": "รังสิต"}], sensors=[
        {"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05},
        {"device_id": "wl-1", "metric": "water_level_cm", "interval_s": 0.1}])
    settings = provisioned(settings)
    sub = Subscriber(settings, f"{unique}/#")
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, settings.gateway, GatewayMetrics(registry))
    try:
        gw.start(connect_timeout_s=10)
        sub.wait_for("frames and readings", lambda: sub.count("frame") >= 5 and sub.count("reading") >= 30)
        gw.stop()
        sub.wait_for("the last will", lambda: any(m.doc().get("state") == "offline" for m in sub.received()
                                                  if m.stream == "status"), timeout_s=20)
    finally:
        gw.stop_event.set()
        sub.close()
    msgs = sub.received()
    assert {m.qos for m in msgs} == {1}
    readings = assert_complete_and_ordered(msgs, "reading")
    frames = assert_complete_and_ordered(msgs, "frame")
    # the last-will's seq is reserved when the session begins, so it comes last with the lowest seq
    will = [m for m in msgs if m.stream == "status" and m.doc()["state"] == "offline"]
    assert len(will) == 1 and will[0] is msgs[-1] and will[0].doc()["seq"] == 0
    assert assert_complete_and_ordered([m for m in msgs if m not in will], "status") >= 3
    assert will[0].doc()["detail"] == "last will"
    assert metric(registry, "citystream_gateway_published_total", stream="reading") == readings
    assert metric(registry, "citystream_gateway_published_total", stream="frame") == frames
    assert metric(registry, "citystream_gateway_published_bytes_total", stream="frame") == sum(
        len(m.payload) for m in msgs if m.stream == "frame")
    assert metric(registry, "citystream_gateway_encode_seconds_count") >= frames
    assert metric(registry, "citystream_gateway_connected") == 0

    for m in msgs:
        assert m.topic.startswith(f"{unique}/nakhon-rangsit/gw-pub/")
        if m.stream == "frame":
            meta = FrameMeta.model_validate(m.doc())
            assert (meta.device_id, meta.width, meta.height, meta.district) == ("cam-1", 320, 180, "รังสิต")
            assert meta.jpeg_bytes == len(m.payload) and m.payload[:2] == b"\xff\xd8"
            assert meta.motion_score > 0
    statuses = [m.doc() for m in msgs if m.stream == "status"]
    states = [s["state"] for s in statuses]
    assert states[0] == "online" and states[-1] == "offline"
    beats = [s for s in statuses if s["state"] == "heartbeat"]
    assert beats, "no heartbeat"
    assert any(b["fps"] > 0 for b in beats)
    assert all({"queue_depth", "dropped", "spool_bytes"} <= b.keys() for b in beats)


@pytest.mark.integration
def test_acl_denial_is_counted_and_logged_and_the_gateway_keeps_running(
        stack_home: Path, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = load_settings(stack_home)
    # the bridge's login may read everything and publish nothing
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-acl", username=base.mqtt.username,
                              password=base.mqtt.password.get_secret_value(),
                              sensors=[{"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.05}])
    sub = Subscriber(settings, f"{unique}/#")
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, settings.gateway, GatewayMetrics(registry))
    caplog.set_level(logging.ERROR, logger="citystream.ingest.gateway.publisher")
    try:
        gw.start(connect_timeout_s=10)
        deadline = time.monotonic() + 30
        while metric(registry, "citystream_gateway_dropped_total", reason="not_authorized") < 10:
            assert time.monotonic() < deadline, "no publish was refused"
            time.sleep(0.1)
        assert gw.publisher.connected
    finally:
        gw.stop(drain_s=1)
        sub.close()
    assert sub.received() == []
    assert metric(registry, "citystream_gateway_published_total", stream="reading") == 0
    assert gw.spool.count == 0  # refused is final: nothing left to retry forever
    denied = [r for r in caplog.records if "ACL" in r.getMessage()]
    assert denied and getattr(denied[0], "code", None) == 135 and getattr(denied[0], "username", None) == "bridge"


@pytest.mark.integration
def test_wrong_password_is_refused_at_start(stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-auth", password="not-the-password")
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, settings.gateway, GatewayMetrics(registry))
    with pytest.raises(AuthRefused, match=f"user {settings.gateway.username!r}"):
        gw.start(connect_timeout_s=10)
    assert not gw._publisher_thread.is_alive()
    assert metric(registry, "citystream_gateway_connect_failures_total", reason="auth") == 1


@pytest.mark.integration
def test_frame_over_the_brokers_packet_limit_is_dropped_and_counted_not_stuck(
        stack_home: Path, unique: str, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (1900, 2600, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "0-huge.png"), noise)  # ~9 MiB as a JPEG of quality 100; Mosquitto allows 8 MiB
    cv2.imwrite(str(images / "1-small.png"), noise[:180, :320])
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-big", cameras=[
        {"type": "images", "device_id": "cam-1", "path": str(images), "pattern": "*.png", "loop": False,
         "realtime": False, "width": 4000, "height": 4000, "jpeg_quality": 100, "motion": {"enabled": False}}])
    settings = provisioned(settings)
    sub = Subscriber(settings, f"{unique}/#")  # every stream, so every row is confirmed
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, settings.gateway, GatewayMetrics(registry))
    try:
        gw.start(connect_timeout_s=10)
        sub.wait_for("the small frame", lambda: sub.count("frame") >= 1, timeout_s=30)
    finally:
        gw.stop(drain_s=2)
        sub.close()
    (frame,) = [m for m in sub.received() if m.stream == "frame"]
    assert frame.doc()["seq"] == 1 and frame.doc()["width"] == 320
    assert metric(registry, "citystream_gateway_dropped_total", reason="too_large") == 1
    assert gw.spool.count == 0


@pytest.mark.integration
def test_rows_whose_confirmation_was_lost_are_sent_again_and_then_deleted(
        stack_home: Path, unique: str, tmp_path: Path) -> None:
    settings = stack_settings(stack_home, unique, tmp_path, gateway_id="gw-conf", confirm_timeout_s=1.0, sensors=[
        {"device_id": "pm-1", "metric": "pm25_ug_m3", "interval_s": 0.02}])
    settings = provisioned(settings)
    lost = {("reading", seq) for seq in (3, 10, 11, 40)}
    sub = Subscriber(settings, f"{unique}/#", withhold=lost)
    registry = CollectorRegistry()
    gw = Gateway(settings.mqtt, settings.gateway, GatewayMetrics(registry))
    try:
        gw.start(connect_timeout_s=10)
        sub.wait_for("readings past the lost confirmations", lambda: sub.count("reading") >= 150)
        assert not sub.withhold, "every withheld seq arrived once"
        sub.wait_for("the stale rows sent again", lambda: metric(
            registry, "citystream_gateway_resent_total", stream="reading") >= len(lost), timeout_s=30)
    finally:
        gw.stop(drain_s=10)
        sub.close()
    copies = seqs_by_device(sub.received(), "reading")["pm-1"]
    assert all(copies.count(seq) >= 2 for _stream, seq in lost), "each row whose confirmation was lost came again"
    assert metric(registry, "citystream_gateway_connected") == 0
    assert gw.spool.count == 0, "confirmed on the second copy, then deleted"
